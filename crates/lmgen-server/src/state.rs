//! What every handler shares: the engine, the tokenizer, the served model's names and limits,
//! the shutdown flag and the metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use lmgen::engine::ContinuousBatchingManager;
use lmgen::generation::structured::StructuredOutput;
use lmgen::speech::SpeechPipeline;
use lmgen::{GenerationConfig, Tokenizer};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::text::Detokenizer;
use crate::tool_calls::ModelFormat;

/// The server's shared state.
#[derive(Debug)]
pub struct AppState {
    pub manager: Arc<ContinuousBatchingManager>,
    pub tokenizer: Arc<Tokenizer>,
    /// Generated tokens to streamed text.
    pub detokenizer: Detokenizer,
    /// The same with special tokens kept: chat outputs whose tool-call or reasoning markers
    /// are special tokens decode with it, leaving out the other special tokens themselves.
    pub raw_detokenizer: Detokenizer,
    /// The chat template's tool-call and reasoning formats.
    pub model_format: ModelFormat,
    /// The checkpoint's generation config (request fields override it).
    pub generation_config: GenerationConfig,
    /// The id `/v1/models` lists; requests may also name the model as given on the command line.
    pub model_id: String,
    pub model_aliases: Vec<String>,
    /// `max_position_embeddings`.
    pub context_length: usize,
    pub vocab_size: usize,
    /// Sequences (choices) in flight, running or queued, at most.
    pub max_in_flight: usize,
    pub in_flight: AtomicUsize,
    pub shutting_down: AtomicBool,
    pub metrics: Metrics,
    /// Unix time the server started (`created` of the model object).
    pub created: u64,
    /// The grammar compiler of `response_format`, built on its first use (it indexes the
    /// vocabulary once); the error when this tokenizer cannot have one.
    pub structured: OnceLock<Result<StructuredOutput, String>>,
    /// A speech-to-text checkpoint (Whisper), served by `/v1/audio/transcriptions` and
    /// `/v1/audio/translations` instead of the text routes.
    pub speech: Option<Arc<SpeechPipeline>>,
}

impl AppState {
    /// The grammar compiler, built on first use; its errors blame `param` (the field that
    /// asked for a grammar).
    pub fn structured(&self, param: &str) -> Result<&StructuredOutput, ApiError> {
        self.structured
            .get_or_init(|| {
                let mut eos = self.generation_config.eos_token_ids();
                if eos.is_empty() {
                    eos.extend(self.tokenizer.eos_token_id());
                }
                StructuredOutput::new(&self.tokenizer, &eos).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| ApiError::invalid(param, e.clone()))
    }

    /// 404 unless `model` is the served one.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.model_id || self.model_aliases.iter().any(|a| a == model) {
            Ok(())
        } else {
            Err(ApiError::model_not_found(model))
        }
    }

    /// [`Self::check_model`], and 400 when the served model is a speech-to-text one (the text
    /// routes cannot run it).
    pub fn check_text_model(&self, model: &str) -> Result<(), ApiError> {
        self.check_model(model)?;
        if self.speech.is_some() {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "`{}` is a speech-to-text model: use /v1/audio/transcriptions or \
                     /v1/audio/translations",
                    self.model_id
                ),
            ));
        }
        Ok(())
    }

    /// Takes `n` places in flight, or answers 503 (shutting down) / 429 (full).
    pub fn admit(self: &Arc<Self>, n: usize) -> Result<InFlight, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::shutting_down());
        }
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            if current + n > self.max_in_flight {
                return Err(ApiError::queue_full(self.max_in_flight));
            }
            match self.in_flight.compare_exchange(
                current,
                current + n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        Ok(InFlight {
            state: self.clone(),
            n,
        })
    }
}

/// Places in flight, given back on drop.
#[derive(Debug)]
pub struct InFlight {
    state: Arc<AppState>,
    n: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(self.n, Ordering::SeqCst);
    }
}
