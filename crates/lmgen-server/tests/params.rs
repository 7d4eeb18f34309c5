//! Every field the server takes, wrongly typed and out of range, is answered with a 400 whose
//! `param` names it, on both endpoints: one table, one row per field. A last check reads the
//! field lists of the request structs themselves, so a field added without a row fails here.
//!
//! One in-process server for every row: the router over the golden tiny Llama (context 512,
//! vocabulary 800) with a KV pool of 256 tokens, driven with `tower::ServiceExt::oneshot` (no
//! socket, no sleep).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use clap::Parser;
use lmgen_server::api::{ChatCompletionRequest, CompletionRequest, SamplingParams};
use lmgen_server::ServeArgs;
use serde_json::{json, Value};
use tower::ServiceExt;

const CONTEXT: usize = 512;
const VOCAB: usize = 800;
const POOL_TOKENS: usize = 256;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The server's router and a runtime to drive it (one for every test of this file).
fn server() -> &'static (tokio::runtime::Runtime, Router) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lmgen/tests/fixtures/golden/models/llama");
        let pool = POOL_TOKENS.to_string();
        let argv = [
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--served-model-name",
            "tiny-llama",
            "--kv-cache-tokens",
            &pool,
        ];
        let args = Cli::try_parse_from(argv).unwrap().serve;
        let state = lmgen_server::start(&args).unwrap();
        assert_eq!((state.context_length, state.vocab_size), (CONTEXT, VOCAB));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        (runtime, lmgen_server::router(state, 1 << 20))
    })
}

/// POSTs `body` to `path`: the status and the JSON answer.
fn post(path: &str, body: &Value) -> (StatusCode, Value) {
    let (runtime, router) = server();
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    runtime.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    })
}

/// `base` with the fields of `patch` set.
fn with(base: &Value, patch: &Value) -> Value {
    let mut body = base.clone();
    for (k, v) in patch.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// One field: bodies that set it to a wrongly typed value, bodies that set it out of its range
/// (or to a value the server refuses), and the `param` the answer must name.
struct Row {
    param: &'static str,
    wrong_type: Vec<Value>,
    out_of_range: Vec<Value>,
}

fn row(param: &'static str, wrong_type: Vec<Value>, out_of_range: Vec<Value>) -> Row {
    Row {
        param,
        wrong_type,
        out_of_range,
    }
}

/// The fields both endpoints take (`SamplingParams`: OpenAI's, then the Hugging Face extras).
fn sampling_rows() -> Vec<Row> {
    let five_stops = json!(["a", "b", "c", "d", "e"]);
    vec![
        row(
            "max_tokens",
            vec![json!({"max_tokens": "x"}), json!({"max_tokens": 1.5})],
            vec![json!({"max_tokens": 0}), json!({"max_tokens": -3})],
        ),
        row(
            "temperature",
            vec![json!({"temperature": "hot"}), json!({"temperature": [1]})],
            vec![json!({"temperature": -0.5}), json!({"temperature": 2.5})],
        ),
        row(
            "top_p",
            vec![json!({"top_p": "x"})],
            vec![json!({"top_p": 0}), json!({"top_p": 1.5})],
        ),
        row(
            "n",
            vec![json!({"n": "x"}), json!({"n": 1.5})],
            vec![json!({"n": 0}), json!({"n": 129})],
        ),
        row("stream", vec![json!({"stream": "yes"})], vec![]),
        row(
            "stream_options",
            vec![json!({"stream": true, "stream_options": 5})],
            // Only with `stream: true`.
            vec![json!({"stream_options": {"include_usage": true}})],
        ),
        row(
            "stream_options.include_usage",
            vec![json!({"stream": true, "stream_options": {"include_usage": 3}})],
            vec![],
        ),
        row(
            "stop",
            vec![json!({"stop": 5}), json!({"stop": ["a", 5]})],
            vec![json!({"stop": five_stops}), json!({"stop": ""})],
        ),
        row(
            "seed",
            vec![json!({"seed": "x"}), json!({"seed": 1.5})],
            vec![json!({"seed": -1})],
        ),
        row(
            "presence_penalty",
            vec![json!({"presence_penalty": "x"})],
            vec![json!({"presence_penalty": 2.5})],
        ),
        row(
            "frequency_penalty",
            vec![json!({"frequency_penalty": "x"})],
            vec![json!({"frequency_penalty": -2.5})],
        ),
        row(
            "logit_bias",
            vec![
                json!({"logit_bias": []}),
                json!({"logit_bias": {"5": "x"}}),
                json!({"logit_bias": {"x": 1}}),
            ],
            vec![json!({"logit_bias": {VOCAB.to_string(): 1}})],
        ),
        row(
            "top_k",
            vec![json!({"top_k": "x"})],
            vec![json!({"top_k": -2})],
        ),
        row(
            "min_p",
            vec![json!({"min_p": "x"})],
            vec![json!({"min_p": -0.1}), json!({"min_p": 1.5})],
        ),
        row(
            "repetition_penalty",
            vec![json!({"repetition_penalty": "x"})],
            vec![json!({"repetition_penalty": 0})],
        ),
        row(
            "min_tokens",
            vec![json!({"min_tokens": "x"})],
            vec![json!({"min_tokens": -1})],
        ),
    ]
}

/// The fields of `/v1/completions` besides the shared ones.
fn completion_rows() -> Vec<Row> {
    let too_long: Vec<usize> = (3..3 + CONTEXT).collect();
    vec![
        row("model", vec![json!({"model": 5})], vec![]),
        row(
            "prompt",
            vec![
                json!({"prompt": 5}),
                json!({"prompt": {"text": "x"}}),
                json!({"prompt": [1, "x"]}),
                json!({"prompt": [-1]}),
            ],
            vec![
                json!({"prompt": []}),
                json!({"prompt": [[]]}),
                json!({"prompt": [VOCAB]}),
                json!({"prompt": too_long}),
            ],
        ),
        row(
            "logprobs",
            vec![json!({"logprobs": "x"}), json!({"logprobs": true})],
            vec![json!({"logprobs": 6}), json!({"logprobs": -1})],
        ),
        row(
            "echo",
            vec![json!({"echo": "x"})],
            vec![json!({"echo": true})],
        ),
        row(
            "best_of",
            vec![json!({"best_of": "x"})],
            vec![json!({"best_of": 2})],
        ),
        row(
            "suffix",
            vec![json!({"suffix": 5})],
            vec![json!({"suffix": "x"})],
        ),
        // Within the context but beyond the KV pool: the library refuses `max_new_tokens`.
        row(
            "max_tokens",
            vec![],
            vec![
                json!({"max_tokens": POOL_TOKENS + 40}),
                json!({"max_tokens": CONTEXT}),
            ],
        ),
    ]
}

/// The fields of `/v1/chat/completions` besides the shared ones.
fn chat_rows() -> Vec<Row> {
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    vec![
        row("model", vec![json!({"model": 5})], vec![]),
        row(
            "messages",
            vec![json!({"messages": "hi"})],
            vec![json!({"messages": []})],
        ),
        row("messages[0]", vec![json!({"messages": [5]})], vec![]),
        row(
            "messages[0].content",
            vec![
                user(json!(5)),
                user(json!(["text"])),
                user(json!({"text": "x"})),
            ],
            vec![],
        ),
        row(
            "messages[0].role",
            vec![
                json!({"messages": [{"role": 5, "content": "x"}]}),
                json!({"messages": [{"content": "x"}]}),
            ],
            vec![],
        ),
        row(
            "max_completion_tokens",
            vec![json!({"max_completion_tokens": "x"})],
            vec![
                json!({"max_completion_tokens": 0}),
                json!({"max_completion_tokens": POOL_TOKENS + 40}),
                json!({"max_completion_tokens": CONTEXT}),
            ],
        ),
        row(
            "max_tokens",
            vec![],
            vec![
                json!({"max_tokens": POOL_TOKENS + 40}),
                json!({"max_tokens": CONTEXT}),
            ],
        ),
        row("logprobs", vec![json!({"logprobs": 2})], vec![]),
        row(
            "top_logprobs",
            vec![json!({"logprobs": true, "top_logprobs": "x"})],
            vec![
                json!({"logprobs": true, "top_logprobs": 21}),
                json!({"logprobs": true, "top_logprobs": -1}),
                json!({"top_logprobs": 2}),
            ],
        ),
        row(
            "tools",
            vec![json!({"tools": "x"})],
            vec![json!({"tools": [{"type": "function", "function": {"name": "f"}}]})],
        ),
        row(
            "response_format",
            vec![json!({"response_format": 5})],
            vec![json!({"response_format": {"type": "json_object"}})],
        ),
    ]
}

fn completion_base() -> Value {
    json!({"model": "tiny-llama", "prompt": "Hello world", "max_tokens": 2, "temperature": 0})
}

fn chat_base() -> Value {
    json!({
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 2,
        "temperature": 0,
    })
}

/// Sends every body of `rows` over `base`; returns what went wrong.
fn check(path: &str, base: &Value, rows: &[Row]) -> Vec<String> {
    let (status, answer) = post(path, base);
    assert_eq!(status, StatusCode::OK, "the base request fails: {answer}");
    let mut wrong = Vec::new();
    for row in rows {
        let bodies = row.wrong_type.iter().chain(&row.out_of_range);
        for patch in bodies {
            let (status, answer) = post(path, &with(base, patch));
            let error = &answer["error"];
            let ok = status == StatusCode::BAD_REQUEST
                && error["param"] == row.param
                && error["type"] == "invalid_request_error"
                && error["message"].as_str().is_some_and(|m| !m.is_empty());
            if !ok {
                wrong.push(format!("{path} {patch}: {status} {answer}"));
            }
            if std::env::var_os("LMGEN_PRINT_ANSWERS").is_some() {
                println!("{patch} -> {status} {}", error["message"]);
            }
        }
    }
    wrong
}

#[test]
fn every_completions_field_is_named_when_wrong() {
    let mut rows = sampling_rows();
    rows.extend(completion_rows());
    let wrong = check("/v1/completions", &completion_base(), &rows);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_chat_field_is_named_when_wrong() {
    let mut rows = sampling_rows();
    rows.extend(chat_rows());
    let wrong = check("/v1/chat/completions", &chat_base(), &rows);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn length_errors_carry_their_code_and_the_limit() {
    let too_long: Vec<usize> = (3..3 + CONTEXT).collect();
    let cases = [
        (
            "/v1/completions",
            with(&completion_base(), &json!({"prompt": too_long})),
            "prompt",
        ),
        (
            "/v1/completions",
            with(&completion_base(), &json!({"max_tokens": CONTEXT})),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            with(&chat_base(), &json!({"max_completion_tokens": CONTEXT})),
            "max_completion_tokens",
        ),
    ];
    for (path, body, param) in cases {
        let (status, answer) = post(path, &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
        assert_eq!(
            answer["error"]["code"], "context_length_exceeded",
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("maximum context length is {CONTEXT} tokens")),
            "{message}"
        );
    }
    // Beyond the KV pool: the library's `Error::Input` blaming `max_new_tokens`, no code.
    let body = with(&completion_base(), &json!({"max_tokens": POOL_TOKENS + 40}));
    let (_, answer) = post("/v1/completions", &body);
    assert!(answer["error"]["code"].is_null(), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("lower `max_new_tokens`")
            && message.ends_with("(`max_new_tokens` is `max_tokens` in this request)"),
        "{message}"
    );
}

#[test]
fn an_unknown_model_is_404_naming_model() {
    for (path, base) in [
        ("/v1/completions", completion_base()),
        ("/v1/chat/completions", chat_base()),
    ] {
        let (status, answer) = post(path, &with(&base, &json!({"model": "no-such-model"})));
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(answer["error"]["param"], "model");
        assert_eq!(answer["error"]["code"], "model_not_found");
    }
}

/// The field names serde reads for `T` (a deserializer that only records them).
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Fields(&'static [&'static str]);
    #[derive(Debug)]
    struct Done;
    impl std::fmt::Display for Done {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("done")
        }
    }
    impl std::error::Error for Done {}
    impl de::Error for Done {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Done
        }
    }
    struct Recorder<'a>(&'a mut Fields);
    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = Done;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Done> {
            Err(Done)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Done> {
            self.0 .0 = fields;
            Err(Done)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields = Fields(&[]);
    let _ = T::deserialize(Recorder(&mut fields));
    fields.0
}

#[test]
fn every_field_of_the_request_structs_has_a_row() {
    let shared: Vec<&str> = sampling_rows().iter().map(|r| r.param).collect();
    let sampling = fields_of::<SamplingParams>();
    assert!(sampling.len() >= 15, "{sampling:?}");
    for (name, fields, rows) in [
        ("SamplingParams", sampling, sampling_rows()),
        (
            "CompletionRequest",
            fields_of::<CompletionRequest>(),
            completion_rows(),
        ),
        (
            "ChatCompletionRequest",
            fields_of::<ChatCompletionRequest>(),
            chat_rows(),
        ),
    ] {
        let params: Vec<&str> = rows.iter().map(|r| r.param).collect();
        for field in fields {
            assert!(
                params.contains(field) || shared.contains(field),
                "{name}.{field} has no row"
            );
        }
    }
    // And every row is a field the server takes (or a part of one).
    let all: Vec<&str> = [
        sampling,
        fields_of::<CompletionRequest>(),
        fields_of::<ChatCompletionRequest>(),
    ]
    .concat();
    for row in sampling_rows()
        .iter()
        .chain(&completion_rows())
        .chain(&chat_rows())
    {
        let root = row.param.split(['.', '[']).next().unwrap();
        assert!(all.contains(&root), "row {} is no field", row.param);
    }
}
