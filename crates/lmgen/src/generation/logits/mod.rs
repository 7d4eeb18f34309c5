//! Logits processors (HF `logits_process.py`), one per file, built in the order `generate()` builds them.
//!
//! Deliberate difference from transformers: processors work on host-side rows of f32 scores and
//! host-side token ids rather than on tensors. Most processors are per-token, branchy logic; one
//! copy of `[b, vocab]` floats per step is cheap next to a forward pass.

pub mod min_length;
pub mod min_new_tokens;
pub mod repetition_penalty;

use crate::error::Result;
use crate::generation::config::GenerationConfig;
use crate::TokenId;

pub use min_length::MinLengthLogitsProcessor;
pub use min_new_tokens::MinNewTokensLengthLogitsProcessor;
pub use repetition_penalty::RepetitionPenaltyLogitsProcessor;

/// `[b, vocab]` scores, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub data: Vec<f32>,
    pub batch: usize,
    pub vocab: usize,
}

impl Scores {
    pub fn new(data: Vec<f32>, batch: usize, vocab: usize) -> Self {
        debug_assert_eq!(data.len(), batch * vocab);
        Self { data, batch, vocab }
    }

    /// Row `i`, `[vocab]`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Row `i`, mutable.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Rows as nested vectors.
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.data.chunks(self.vocab).map(<[f32]>::to_vec).collect()
    }
}

/// HF `LogitsProcessor.__call__`: rewrites next-token scores given the tokens so far.
pub trait LogitsProcessor: Send + Sync {
    /// `input_ids`: `[b][cur_len]` tokens so far (prompt, padding included, and generated);
    /// `scores`: `[b, vocab]`, modified in place.
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()>;
}

/// What the processors need to know about the prompt besides the config.
#[derive(Debug, Clone)]
pub struct ProcessorContext {
    /// Padded prompt length (transformers' `input_ids_length`).
    pub input_len: usize,
    /// Resolved absolute `min_length` (prompt included).
    pub min_length: usize,
}

/// HF `LogitsProcessorList`: applies processors in order.
#[derive(Default)]
pub struct LogitsProcessorList {
    processors: Vec<Box<dyn LogitsProcessor>>,
}

impl std::fmt::Debug for LogitsProcessorList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LogitsProcessorList({} processors)",
            self.processors.len()
        )
    }
}

impl LogitsProcessorList {
    /// The processors `generate()` builds for `config` (`_get_logits_processor`, utils.py), in its order.
    /// Processors lmgen has not built yet are rejected earlier by `check_implemented`.
    pub fn from_config(config: &GenerationConfig, ctx: &ProcessorContext) -> Result<Self> {
        let mut list = Self::default();
        let eos = config.eos_token_ids();
        if let Some(p) = config.repetition_penalty.filter(|&p| p != 1.0) {
            list.push(RepetitionPenaltyLogitsProcessor::new(p, None)?);
        }
        if ctx.min_length > 0 && !eos.is_empty() {
            list.push(MinLengthLogitsProcessor::new(ctx.min_length, eos.clone()));
        }
        if let Some(n) = config.min_new_tokens.filter(|&n| n > 0) {
            if !eos.is_empty() {
                list.push(MinNewTokensLengthLogitsProcessor::new(
                    ctx.input_len,
                    n,
                    eos,
                ));
            }
        }
        Ok(list)
    }

    /// Appends a processor (user processors go after the built-in ones, as transformers merges them).
    pub fn push(&mut self, p: impl LogitsProcessor + 'static) {
        self.processors.push(Box::new(p));
    }

    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// Runs every processor in order.
    pub fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for p in &self.processors {
            p.process(input_ids, scores)?;
        }
        Ok(())
    }
}
