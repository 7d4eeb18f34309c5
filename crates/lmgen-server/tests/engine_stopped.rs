//! A server whose engine has stopped answers every generation request 503 with `Retry-After` and
//! `code: "engine_stopped"`, streaming or not: the server's condition, not the request's fault (the
//! same request is answered on a running engine). Driven in process with
//! `tower::ServiceExt::oneshot`, as `params.rs`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use clap::Parser;
use lmgen_server::ServeArgs;
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[test]
fn a_stopped_engine_is_503_with_retry_after() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lmgen/tests/fixtures/golden/models/llama");
    let argv = [
        "serve",
        "--model",
        model.to_str().unwrap(),
        "--served-model-name",
        "tiny-llama",
        "--kv-cache-tokens",
        "256",
    ];
    let args = Cli::try_parse_from(argv).unwrap().serve;
    let state = lmgen_server::start(&args).unwrap();
    state.manager.stop(true, Some(Duration::from_secs(30)));
    assert!(!state.manager.is_running());
    let router = lmgen_server::router(state, 1 << 20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (path, body) in [
        (
            "/v1/completions",
            json!({"model": "tiny-llama", "prompt": "Hello", "max_tokens": 2}),
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-llama", "prompt": "Hello", "max_tokens": 2, "stream": true}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        ),
    ] {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, retry_after, answer) = runtime.block_on(async {
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let answer: Value = serde_json::from_slice(&bytes).unwrap();
            (status, retry_after, answer)
        });
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {answer}");
        assert!(retry_after.is_some(), "{path}: no Retry-After");
        assert_eq!(answer["error"]["code"], "engine_stopped", "{answer}");
        assert_eq!(answer["error"]["type"], "server_error", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("engine has stopped"), "{message}");
    }
}
