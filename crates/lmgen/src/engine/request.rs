//! What a caller submits to the engine and what comes back (transformers' continuous batching
//! `RequestState` / `GenerationOutput`).

use std::sync::Arc;
use std::time::Instant;

use crate::error::Error;
use crate::generation::logits::LogitsProcessor;
use crate::generation::{FinishReason, GenerationConfig};
use crate::TokenId;

/// One generation request: a prompt and its own generation settings.
pub struct Request {
    /// The id to report; `None` lets the manager assign `req_<n>` (as transformers).
    pub request_id: Option<String>,
    /// The prompt's token ids (not padded): an encoder-decoder model's encoder input, unless
    /// `input_features` are given.
    pub input_ids: Vec<TokenId>,
    /// `[n_mels, frames]` audio features for an encoder that reads them (Whisper's
    /// `input_features`). `input_ids` are then the decoder's prompt (HF `decoder_input_ids`, e.g.
    /// `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`), or empty for
    /// `decoder_start_token_id` alone. `None` for text prompts.
    pub input_features: Option<candle_core::Tensor>,
    /// The merged generation config of this request (checkpoint defaults updated with the
    /// request's fields). Greedy search and multinomial sampling, with every logits processor and
    /// stopping criterion `generate()` builds; `num_return_sequences` must be 1 (submit one
    /// request per sequence).
    pub generation_config: GenerationConfig,
    /// Seed of this request's sampler (same seed, same tokens, whatever else runs alongside).
    pub seed: Option<u64>,
    /// Return each generated token's log-probability and this many top alternatives
    /// (`None`: no log-probabilities).
    pub logprobs: Option<usize>,
    /// Processors run after the ones built from the config and before the sampling warpers
    /// (OpenAI's `presence_penalty`, `frequency_penalty`, `logit_bias`, or the caller's own).
    pub logits_processors: Vec<Box<dyn LogitsProcessor>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("request_id", &self.request_id)
            .field("input_ids", &self.input_ids.len())
            .field(
                "input_features",
                &self.input_features.as_ref().map(|f| f.dims().to_vec()),
            )
            .field("seed", &self.seed)
            .field("logprobs", &self.logprobs)
            .field("logits_processors", &self.logits_processors.len())
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request for `input_ids` under `generation_config`, other fields unset.
    pub fn new(input_ids: Vec<TokenId>, generation_config: GenerationConfig) -> Self {
        Self {
            request_id: None,
            input_ids,
            input_features: None,
            generation_config,
            seed: None,
            logprobs: None,
            logits_processors: Vec::new(),
        }
    }
}

/// Where a request is (transformers' `RequestStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    /// Waiting for blocks or a place in the batch (also after a preemption).
    Pending,
    /// Its prompt is being computed, possibly over several steps (chunked prefill).
    Prefilling,
    /// Generating one token per step.
    Decoding,
    /// Done: a stopping criterion fired.
    Finished,
    /// Cancelled by the caller, or by the engine stopping first (then `error` is
    /// [`Error::EngineStopped`]).
    Cancelled,
    /// An error ended it (see `error`).
    Failed,
}

impl RequestStatus {
    /// Finished, cancelled or failed: no more updates follow.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestStatus::Finished | RequestStatus::Cancelled | RequestStatus::Failed
        )
    }
}

/// A generated token's log-probability (log-softmax of the model's raw logits at that step) and
/// the most likely alternatives, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The generated token.
    pub token: TokenId,
    /// Its log-probability.
    pub logprob: f32,
    /// The `logprobs` most likely tokens and their log-probabilities, best first.
    pub top: Vec<(TokenId, f32)>,
}

/// What the engine streams for a request: the tokens generated since the last update (one per
/// step), and with the last update the reason it ended.
#[derive(Debug, Clone)]
pub struct RequestUpdate {
    /// The request this update belongs to.
    pub request_id: String,
    /// Tokens generated since the last update.
    pub new_tokens: Vec<TokenId>,
    /// One per new token when the request asked for log-probabilities.
    pub logprobs: Vec<TokenLogprob>,
    /// Where the request is now.
    pub status: RequestStatus,
    /// Set with `status == Finished`.
    pub finish_reason: Option<FinishReason>,
    /// Why the request ended, with `status == Failed` (a step that failed: out of memory, a
    /// processor's error) and when the engine stopped before it finished
    /// ([`Error::EngineStopped`]). Shared: one failed step fails every request in it.
    pub error: Option<Arc<Error>>,
    /// Prompt tokens served from the prefix cache (known from the first update on).
    pub cached_prompt_tokens: usize,
    /// When the engine produced this update.
    pub at: Instant,
}

/// A finished request (transformers' `GenerationOutput`).
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// The request's id.
    pub request_id: String,
    /// The prompt's token ids.
    pub prompt_ids: Vec<TokenId>,
    /// The generated tokens (without the prompt).
    pub generated_tokens: Vec<TokenId>,
    /// One per generated token when the request asked for log-probabilities.
    pub logprobs: Vec<TokenLogprob>,
    /// Where the request ended (or is, while it runs).
    pub status: RequestStatus,
    /// Set with `status == Finished`.
    pub finish_reason: Option<FinishReason>,
    /// Why it ended, when an error ended it (see [`RequestUpdate::error`]).
    pub error: Option<Arc<Error>>,
}

impl GenerationOutput {
    /// An output with nothing generated yet.
    pub(crate) fn new(request_id: String, prompt_ids: Vec<TokenId>) -> Self {
        Self {
            request_id,
            prompt_ids,
            generated_tokens: Vec::new(),
            logprobs: Vec::new(),
            status: RequestStatus::Pending,
            finish_reason: None,
            error: None,
        }
    }

    /// Folds an update in.
    pub(crate) fn apply(&mut self, update: RequestUpdate) {
        self.generated_tokens.extend(update.new_tokens);
        self.logprobs.extend(update.logprobs);
        self.status = update.status;
        self.finish_reason = update.finish_reason.or(self.finish_reason);
        self.error = update.error.or(self.error.take());
    }
}

/// Receives a request's updates on the engine thread. Returning `false` says nobody listens any
/// more (a disconnected client): the engine cancels the request and frees its blocks.
pub trait OutputSink: Send {
    /// Delivers one update; `false` cancels the request.
    fn send(&mut self, update: RequestUpdate) -> bool;
}

impl OutputSink for std::sync::mpsc::Sender<RequestUpdate> {
    fn send(&mut self, update: RequestUpdate) -> bool {
        std::sync::mpsc::Sender::send(self, update).is_ok()
    }
}

impl<F: FnMut(RequestUpdate) -> bool + Send> OutputSink for F {
    fn send(&mut self, update: RequestUpdate) -> bool {
        self(update)
    }
}
