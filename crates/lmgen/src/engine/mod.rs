//! Continuous batching (transformers' `generate_batch` / `ContinuousBatchingManager`, vLLM's
//! engine): requests with their own generation settings join and leave a running batch at every
//! step, over a paged KV cache bounded by a memory budget.
//!
//! - `request`: what goes in ([`Request`]) and comes out ([`RequestUpdate`], [`GenerationOutput`]).
//! - `sequence`: a request's state on the engine thread (tokens, blocks, processors, sampler).
//! - `scheduler`: the per-step plan under a token budget (FIFO or prefill-first, chunked
//!   prefill, preemption by recompute).
//! - `worker`: the engine thread (one packed forward per step).
//! - `step_graph`: decode-only steps as CUDA graphs, one per batch bucket.
//! - `manager`: the thread-safe handle ([`ContinuousBatchingManager`]).
//! - `generate_batch`: many prompts in one call ([`generate_batch()`]).
//! - `tensor_parallel`: the engine over a model split across ranks: rank 0's engine broadcasts
//!   each step, the other ranks run it ([`follow`]).
//!
//! Greedy outputs equal [`crate::generation::generate`]'s token for token whatever runs alongside:
//! each sequence attends only to its own keys and values, at its own positions.
//!
//! ```
//! # fn main() -> lmgen::Result<()> {
//! # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/models/llama");
//! use std::sync::Arc;
//! use lmgen::engine::{generate_batch, BatchOptions};
//! use lmgen::{GenerationConfig, Pipeline};
//!
//! let pipe = Pipeline::from_pretrained(dir)?;
//! let config = pipe.config_with(&GenerationConfig { max_new_tokens: Some(4), ..Default::default() });
//! let prompts = vec![pipe.tokenizer.encode("Hello")?, pipe.tokenizer.encode("The sky")?];
//! let outs = generate_batch(Arc::from(pipe.model), &prompts, &config, BatchOptions::default())?;
//! assert_eq!(outs[0].generated_tokens.len(), 4);
//! # Ok(()) }
//! ```

mod generate_batch;
mod manager;
mod request;
mod scheduler;
mod sequence;
mod step_graph;
mod tensor_parallel;
mod worker;

use crate::cache::paged::{PagedCacheConfig, DEFAULT_BLOCK_SIZE};
use crate::error::{Error, Result};

pub use generate_batch::{generate_batch, BatchOptions};
pub use manager::ContinuousBatchingManager;
pub use request::{
    GenerationOutput, OutputSink, Request, RequestStatus, RequestUpdate, TokenLogprob,
};
pub use tensor_parallel::follow;

/// Which sequences a step serves first (transformers' `scheduler="fifo"` / `"prefill_first"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedulerPolicy {
    /// Running sequences in arrival order (decodes and prefill chunks alike), then new arrivals.
    #[default]
    Fifo,
    /// Sequences still computing their prompt first, then decodes: lower time to first token,
    /// higher inter-token latency.
    PrefillFirst,
}

impl SchedulerPolicy {
    /// Parses `"fifo"` or `"prefill_first"`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "fifo" => Ok(Self::Fifo),
            "prefill_first" => Ok(Self::PrefillFirst),
            other => Err(Error::input(format!(
                "unknown scheduler `{other}`: expected \"fifo\" or \"prefill_first\""
            ))),
        }
    }
}

/// The engine's pool and budgets.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// KV pool size (from `--kv-cache-gb` or a token count).
    pub cache: PagedCacheConfig,
    /// Which sequences a step serves first.
    pub scheduler: SchedulerPolicy,
    /// New tokens per step over all sequences (prefill chunks are cut to fit).
    pub max_batch_tokens: usize,
    /// Sequences per step.
    pub max_running: usize,
    /// Share identical full prompt blocks between sequences.
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache: PagedCacheConfig {
                block_size: DEFAULT_BLOCK_SIZE,
                num_blocks: 1024,
            },
            scheduler: SchedulerPolicy::Fifo,
            max_batch_tokens: 512,
            max_running: 64,
            prefix_caching: true,
        }
    }
}

impl EngineConfig {
    /// Checks the budgets.
    pub fn validate(&self) -> Result<()> {
        if self.max_batch_tokens == 0 {
            return Err(Error::input("`max_batch_tokens` must be at least 1"));
        }
        if self.max_running == 0 {
            return Err(Error::input("`max_running` must be at least 1"));
        }
        if self.cache.block_size == 0 || self.cache.num_blocks == 0 {
            return Err(Error::input(
                "the KV pool needs at least one block of at least one token",
            ));
        }
        Ok(())
    }
}

/// What the engine reports (for `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Requests waiting for a place (queue depth).
    pub waiting: usize,
    /// Sequences in the running batch.
    pub running: usize,
    /// KV blocks referenced by a sequence.
    pub blocks_used: usize,
    /// KV blocks in the pool.
    pub blocks_total: usize,
    /// Blocks holding a shareable prefix (referenced or not).
    pub(crate) blocks_cached: usize,
    /// Prompt tokens computed (prefix-cache hits excluded).
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Sequences preempted (their blocks freed, their tokens recomputed when they resume).
    pub preemptions: u64,
    /// Requests ended as cancelled: by [`ContinuousBatchingManager::cancel_request`], by a sink
    /// whose receiver is gone (a disconnected client), or by a stop.
    pub cancelled: u64,
    pub(crate) prefix_queries: u64,
    /// Full prompt blocks found in the prefix cache.
    pub prefix_hits: u64,
    /// Forward steps run.
    pub steps: u64,
    /// Of those, decode steps run through a step graph ([`step_graph`]).
    pub(crate) graph_steps: u64,
    /// Sequences holding a recurrent state (models with linear-attention or convolution layers):
    /// one per running sequence that has started, none once it ends, is cancelled or preempted.
    pub state_slots_used: usize,
    /// Bytes those states hold.
    pub state_bytes: usize,
    /// Bytes of encoder outputs kept beside the pool (encoder-decoder models: one per request
    /// in the engine, for recomputing its cross-attention keys and values after a preemption;
    /// the keys and values themselves are in the pool's blocks).
    pub encoder_bytes: usize,
}
