//! Logits processors and warpers (HF `src/transformers/generation/logits_process.py`), one per file,
//! built by [`LogitsProcessorList::from_config`] in the order `generate()` builds them.
//!
//! Deliberate difference from transformers: processors work on host-side rows of f32 scores and
//! host-side token ids rather than on tensors. Most processors are per-token, branchy logic; one
//! copy of `[b, vocab]` floats per step is cheap next to a forward pass.
//!
//! lmgen extensions beyond transformers (library API only, no `GenerationConfig` field):
//! [`PresencePenaltyLogitsProcessor`], [`FrequencyPenaltyLogitsProcessor`] and
//! [`LogitBiasLogitsProcessor`], as OpenAI's `presence_penalty`, `frequency_penalty` and `logit_bias`.

pub mod by_name;
pub mod classifier_free_guidance;
pub mod encoder_no_repeat_ngram;
pub mod encoder_repetition_penalty;
pub mod epsilon;
pub mod eta;
pub mod exponential_decay;
pub mod forced_bos;
pub mod forced_eos;
pub mod frequency_penalty;
pub mod hamming_diversity;
pub mod inf_nan_remove;
pub mod list;
pub mod logit_bias;
pub mod logit_normalization;
pub mod min_length;
pub mod min_new_tokens;
pub mod min_p;
pub mod no_bad_words;
pub mod no_repeat_ngram;
pub mod prefix_constrained;
pub mod presence_penalty;
pub mod repetition_penalty;
pub mod sequence_bias;
pub mod suppress_tokens;
pub mod suppress_tokens_at_begin;
pub mod temperature;
pub mod top_h;
pub mod top_k;
pub mod top_p;
pub mod typical;
pub mod watermark;
pub mod watermark_detector;

use crate::error::{Error, Result};
use crate::TokenId;

pub use by_name::processor_from_hf;
pub use classifier_free_guidance::UnbatchedClassifierFreeGuidanceLogitsProcessor;
pub use encoder_no_repeat_ngram::EncoderNoRepeatNGramLogitsProcessor;
pub use encoder_repetition_penalty::EncoderRepetitionPenaltyLogitsProcessor;
pub use epsilon::EpsilonLogitsWarper;
pub use eta::EtaLogitsWarper;
pub use exponential_decay::ExponentialDecayLengthPenalty;
pub use forced_bos::ForcedBOSTokenLogitsProcessor;
pub use forced_eos::ForcedEOSTokenLogitsProcessor;
pub use frequency_penalty::FrequencyPenaltyLogitsProcessor;
pub use hamming_diversity::HammingDiversityLogitsProcessor;
pub use inf_nan_remove::InfNanRemoveLogitsProcessor;
pub use list::{LogitsProcessorList, ProcessorContext};
pub use logit_bias::LogitBiasLogitsProcessor;
pub use logit_normalization::LogitNormalization;
pub use min_length::MinLengthLogitsProcessor;
pub use min_new_tokens::MinNewTokensLengthLogitsProcessor;
pub use min_p::MinPLogitsWarper;
pub use no_bad_words::NoBadWordsLogitsProcessor;
pub use no_repeat_ngram::NoRepeatNGramLogitsProcessor;
pub use prefix_constrained::{PrefixAllowedTokensFn, PrefixConstrainedLogitsProcessor};
pub use presence_penalty::PresencePenaltyLogitsProcessor;
pub use repetition_penalty::RepetitionPenaltyLogitsProcessor;
pub use sequence_bias::SequenceBiasLogitsProcessor;
pub use suppress_tokens::SuppressTokensLogitsProcessor;
pub use suppress_tokens_at_begin::SuppressTokensAtBeginLogitsProcessor;
pub use temperature::TemperatureLogitsWarper;
pub use top_h::TopHLogitsWarper;
pub use top_k::TopKLogitsWarper;
pub use top_p::TopPLogitsWarper;
pub use typical::TypicalLogitsWarper;
pub use watermark::{SeedingScheme, WatermarkLogitsProcessor, WatermarkingConfig};
pub use watermark_detector::{WatermarkDetector, WatermarkDetectorOutput};

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

    /// Every row, mutable.
    pub fn rows_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        let vocab = self.vocab.max(1);
        self.data.chunks_mut(vocab)
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

    /// The processor's type, for transformers' rule that a user processor replaces a built-in one of
    /// the same type (`_merge_criteria_processor_list`).
    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A constructor argument error naming the argument, as transformers' `ValueError`s.
pub(crate) fn invalid_arg(message: String) -> Error {
    Error::config(message)
}

/// Checks transformers' `min_tokens_to_keep` rule ("a positive integer").
pub(crate) fn check_min_tokens_to_keep(min_tokens_to_keep: usize) -> Result<()> {
    if min_tokens_to_keep < 1 {
        return Err(invalid_arg(format!(
            "`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}"
        )));
    }
    Ok(())
}

/// `softmax(row)` in f32, as torch (max subtracted first); an all `-inf` row gives NaNs as torch.
pub(crate) fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// `log_softmax(row)` in f32, as torch.
pub(crate) fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    row.iter().map(|&x| x - lse).collect()
}

/// Indices of `row` sorted by score, descending (ties in index order; NaN sorts first as in torch).
pub(crate) fn sorted_desc(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (row[a], row[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
        }
    });
    idx
}

/// The `k`-th largest value of `row` (`torch.topk(row, k)[0][-1]`), `k >= 1`.
pub(crate) fn kth_largest(row: &[f32], k: usize) -> f32 {
    let order = sorted_desc(row);
    let k = k.clamp(1, row.len().max(1));
    order.get(k - 1).map_or(f32::NEG_INFINITY, |&i| row[i])
}
