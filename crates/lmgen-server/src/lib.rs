//! lmgen-server: an OpenAI-compatible HTTP server on lmgen's continuous batching engine.
//!
//! Routes: `POST /v1/completions`, `POST /v1/chat/completions`, `POST /v1/messages` (Anthropic's
//! Messages API), `POST /v1/responses` (OpenAI's Responses API), `POST /v1/audio/transcriptions`
//! and `/v1/audio/translations` (a Whisper checkpoint: `routes/audio.rs`), `GET /v1/models`,
//! `GET /v1/models/{id}`, `GET /health`, `GET /metrics`. Async only here; the engine runs on its
//! own thread and streams each request's tokens back through a channel.
//!
//! - `api`: request bodies; `validate`: fields -> generation settings (400 naming the field).
//! - `generation`: one request through the engine, as JSON or (`generation/sse.rs`) server-sent
//!   events.
//! - `text`: a choice's streamed text: the library's incremental decoding, cut at stop sequences.
//! - `tool_calls`: tools and `tool_choice` of a chat request, and the tool calls and reasoning
//!   parsed out of its output in the model family's format.
//! - `api/response.rs`: the response bodies, one struct per OpenAI object.
//! - `error`: OpenAI's error envelope and the one status table for library errors; `metrics`:
//!   Prometheus; `routes`: handlers.
//! - `args`: the server's flags, around `model_args` (the model flags `lmgen`'s subcommands share).
//! - The other APIs: `api/anthropic.rs` and `api/responses.rs` (bodies), `routes/messages.rs` and
//!   `routes/responses.rs` (requests -> a conversation: `conversation`), `generation/messages.rs`
//!   and `generation/responses.rs` (answers; their streams framed by `generation/framing.rs`).

pub mod api;
pub mod args;
pub mod conversation;
pub mod error;
pub mod generation;
pub mod metrics;
pub mod model_args;
pub mod ranks;
pub mod routes;
pub mod state;
pub mod text;
pub mod tool_calls;
pub mod validate;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use lmgen::engine::ContinuousBatchingManager;
use lmgen::models::CausalLM;
use lmgen::speech::SpeechPipeline;
use lmgen::Pipeline;

pub use args::ServeArgs;
pub use model_args::ModelArgs;
pub use state::AppState;

/// The router over `state`, with bodies capped at `max_body_bytes`.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/completions", post(routes::completions::completions))
        .route("/v1/chat/completions", post(routes::chat::chat_completions))
        .route("/v1/messages", post(routes::messages::messages))
        .route("/v1/responses", post(routes::responses::responses))
        .route(
            "/v1/audio/transcriptions",
            post(routes::audio::transcriptions),
        )
        .route("/v1/audio/translations", post(routes::audio::translations))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{id}", get(routes::models::get))
        .route("/health", get(routes::health::health))
        .route("/metrics", get(routes::health::metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Loads the model (as [`Pipeline::load`] does for every `lmgen` subcommand) and starts the
/// engine: the state [`router`] serves.
pub fn start(args: &ServeArgs) -> anyhow::Result<Arc<AppState>> {
    let id_or_dir = args.model.model_or_default();
    let options = args.model.load_options()?;
    let groups = ranks::start_ranks(args)?;
    let Pipeline {
        model,
        tokenizer,
        generation_config,
        dir,
    } = match &groups {
        Some(groups) => ranks::load_rank0(args, groups)?,
        None => crate::model_args::load_pipeline(&id_or_dir, &options)
            .with_context(|| format!("loading `{id_or_dir}`"))?,
    };
    let model: Arc<dyn CausalLM> = Arc::from(model);
    let tokenizer = Arc::new(tokenizer);
    // A Whisper checkpoint answers the audio routes; the engine then holds a single KV block.
    let speech = match model.config().whisper {
        Some(_) => Some(Arc::new(SpeechPipeline::new(
            model.clone(),
            tokenizer.clone(),
            generation_config.clone(),
            dir.clone(),
        )?)),
        None => None,
    };
    tracing::info!(
        dir = %dir.display(),
        dtype = ?model.dtype(),
        quantize = ?options.quantize,
        gguf_file = ?options.gguf_file,
        attn_implementation = ?options.attn_implementation,
        "model loaded"
    );
    let engine = match speech {
        Some(_) => ServeArgs {
            kv_cache_tokens: Some(args.block_size),
            ..args.clone()
        }
        .engine_config(model.config(), model.dtype())?,
        None => args.engine_config(model.config(), model.dtype())?,
    };
    tracing::info!(
        blocks = engine.cache.num_blocks,
        block_size = engine.cache.block_size,
        "KV pool"
    );
    let mut manager = ContinuousBatchingManager::new(
        model.clone(),
        engine.clone(),
        model.dtype(),
        Some(&tokenizer),
    )?;
    if let Some(groups) = groups {
        manager = manager.with_ranks(groups.control)?;
    }
    let manager = Arc::new(manager);
    manager.start()?;
    Ok(Arc::new(AppState {
        manager,
        detokenizer: text::Detokenizer::new(tokenizer.clone(), true),
        raw_detokenizer: text::Detokenizer::new(tokenizer.clone(), false),
        model_format: tool_calls::ModelFormat::new(&tokenizer).with_family(args.tool_call_parser),
        tokenizer,
        generation_config,
        model_aliases: vec![
            args.model.model_name().to_string(),
            dir.display().to_string(),
        ],
        model_id: args.model_id(),
        context_length: model.config().max_position_embeddings,
        vocab_size: model.config().vocab_size,
        max_in_flight: engine.max_running + args.max_queue,
        in_flight: Default::default(),
        shutting_down: Default::default(),
        metrics: metrics::Metrics::new(),
        structured: Default::default(),
        speech,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }))
}

/// [`start`]s, then serves until SIGTERM / Ctrl-C, then drains.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(rank) = args.tensor_parallel_rank {
        return ranks::follow(&args, rank);
    }
    let state = start(&args)?;
    let manager = state.manager.clone();
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find the port (with `--port 0`).
    println!("lmgen-server listening on http://{addr}");
    tracing::info!(%addr, model = %state.model_id, "serving");
    let drain = drain_on_signal(
        state.clone(),
        Duration::from_secs_f64(args.shutdown_timeout),
    );
    axum::serve(listener, router(state, args.max_body_bytes))
        .with_graceful_shutdown(drain)
        .await?;
    manager.stop(true, Some(Duration::from_secs(10)));
    ranks::wait_for_ranks(Duration::from_secs(10));
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C; then refuses new requests (503), lets running ones finish for
/// up to `timeout`, and cancels what is left.
async fn drain_on_signal(state: Arc<AppState>, timeout: Duration) {
    wait_for_signal().await;
    state.shutting_down.store(true, Ordering::SeqCst);
    tracing::info!(
        in_flight = state.in_flight.load(Ordering::SeqCst),
        "shutting down: draining"
    );
    let deadline = Instant::now() + timeout;
    while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = state.in_flight.load(Ordering::SeqCst);
    if left > 0 {
        tracing::warn!(left, "drain timeout: cancelling the remaining requests");
        state.manager.stop(false, None);
        let deadline = Instant::now() + Duration::from_secs(2);
        while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
