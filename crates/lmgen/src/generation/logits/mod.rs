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

mod bayesian_detector;
mod by_name;
mod classifier_free_guidance;
mod encoder_no_repeat_ngram;
mod encoder_repetition_penalty;
mod epsilon;
mod eta;
mod exponential_decay;
mod forced_bos;
mod forced_eos;
pub mod frequency_penalty;
mod hamming_diversity;
mod inf_nan_remove;
mod list;
pub mod logit_bias;
mod logit_normalization;
mod min_length;
mod min_new_tokens;
mod min_p;
mod no_bad_words;
mod no_repeat_ngram;
mod prefix_constrained;
pub mod presence_penalty;
mod repetition_penalty;
mod sequence_bias;
mod suppress_tokens;
mod suppress_tokens_at_begin;
mod synthid;
mod synthid_detector;
mod temperature;
mod top_h;
mod top_k;
mod top_p;
mod typical;
mod watermark;
mod watermark_detector;

use crate::error::{Error, Result};
use crate::TokenId;

pub use bayesian_detector::BayesianDetectorModel;
pub use by_name::processor_from_hf;
pub(crate) use classifier_free_guidance::UnbatchedClassifierFreeGuidanceLogitsProcessor;
pub(crate) use encoder_no_repeat_ngram::EncoderNoRepeatNGramLogitsProcessor;
pub(crate) use encoder_repetition_penalty::EncoderRepetitionPenaltyLogitsProcessor;
pub(crate) use epsilon::EpsilonLogitsWarper;
pub(crate) use eta::EtaLogitsWarper;
pub(crate) use exponential_decay::ExponentialDecayLengthPenalty;
pub(crate) use forced_bos::ForcedBOSTokenLogitsProcessor;
pub(crate) use forced_eos::ForcedEOSTokenLogitsProcessor;
pub use frequency_penalty::FrequencyPenaltyLogitsProcessor;
pub(crate) use hamming_diversity::HammingDiversityLogitsProcessor;
pub(crate) use inf_nan_remove::InfNanRemoveLogitsProcessor;
pub use list::{LogitsProcessorList, ProcessorContext};
pub use logit_bias::LogitBiasLogitsProcessor;
pub(crate) use logit_normalization::LogitNormalization;
pub(crate) use min_length::MinLengthLogitsProcessor;
pub(crate) use min_new_tokens::MinNewTokensLengthLogitsProcessor;
pub(crate) use min_p::MinPLogitsWarper;
pub(crate) use no_bad_words::NoBadWordsLogitsProcessor;
pub(crate) use no_repeat_ngram::NoRepeatNGramLogitsProcessor;
pub use prefix_constrained::PrefixAllowedTokensFn;
pub(crate) use prefix_constrained::PrefixConstrainedLogitsProcessor;
pub use presence_penalty::PresencePenaltyLogitsProcessor;
pub(crate) use repetition_penalty::RepetitionPenaltyLogitsProcessor;
pub(crate) use sequence_bias::SequenceBiasLogitsProcessor;
pub(crate) use suppress_tokens::SuppressTokensLogitsProcessor;
pub(crate) use suppress_tokens_at_begin::SuppressTokensAtBeginLogitsProcessor;
pub use synthid::{SynthIDTextWatermarkLogitsProcessor, SynthIDTextWatermarkingConfig};
pub use synthid_detector::{SynthIDDetectionOutput, SynthIDTextWatermarkDetector};
pub(crate) use temperature::TemperatureLogitsWarper;
pub(crate) use top_h::TopHLogitsWarper;
pub(crate) use top_k::TopKLogitsWarper;
pub(crate) use top_p::TopPLogitsWarper;
pub(crate) use typical::TypicalLogitsWarper;
pub use watermark::{SeedingScheme, WatermarkLogitsProcessor, WatermarkingConfig};
pub use watermark_detector::{WatermarkDetector, WatermarkDetectorOutput};

/// `[b, vocab]` scores, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// `batch * vocab` scores, row after row.
    pub data: Vec<f32>,
    /// `b`: rows, one per sequence.
    pub batch: usize,
    /// Scores per row, one per token id.
    pub vocab: usize,
}

impl Scores {
    /// Wraps `data` of `batch` rows of `vocab` scores.
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
    pub(crate) fn rows_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        let vocab = self.vocab.max(1);
        self.data.chunks_mut(vocab)
    }

    /// Rows as nested vectors (`batch` empty rows when the vocabulary is empty).
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        if self.vocab == 0 {
            return vec![Vec::new(); self.batch];
        }
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

#[cfg(test)]
mod tests {
    use super::Scores;

    #[test]
    fn rows_of_an_empty_vocabulary_are_empty() {
        assert_eq!(
            Scores::new(Vec::new(), 2, 0).to_rows(),
            vec![Vec::<f32>::new(); 2]
        );
        assert!(Scores::new(Vec::new(), 0, 0).to_rows().is_empty());
    }
}
