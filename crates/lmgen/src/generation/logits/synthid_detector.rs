//! HF `SynthIDTextWatermarkDetector` (`src/transformers/generation/watermarking.py`) and the
//! detection-side methods of `SynthIDTextWatermarkLogitsProcessor` (`logits_process.py`):
//! `compute_g_values`, `compute_context_repetition_mask`, `compute_eos_token_mask`,
//! `expected_mean_g_value`. The detector scores a text's g-values with a
//! [`BayesianDetectorModel`], leaving out n-grams whose context repeats and those from the first
//! EOS on.
//!
//! As transformers, `input_ids` is a tensor: every row has the same length (pad them), and a row
//! needs at least `ngram_len` tokens (`unfold` raises otherwise).

use super::bayesian_detector::BayesianDetectorModel;
use super::invalid_arg;
use super::synthid::{accumulate_hash, SynthIDTextWatermarkLogitsProcessor};
use crate::error::Result;
use crate::TokenId;

impl SynthIDTextWatermarkLogitsProcessor {
    /// Checks that `input_ids` is `[b, len]` (a tensor); returns `len`.
    fn check_shape(input_ids: &[Vec<TokenId>]) -> Result<usize> {
        let len = input_ids.first().map_or(0, Vec::len);
        if let Some(row) = input_ids.iter().find(|r| r.len() != len) {
            return Err(invalid_arg(format!(
                "`input_ids` should be of shape (batch_size, input_len): a row has {} tokens, another {len}",
                row.len()
            )));
        }
        Ok(len)
    }

    /// Checks that `input_ids` is `[b, len]` with `len >= ngram_len` (one n-gram); returns `len`.
    fn check_input_ids(&self, input_ids: &[Vec<TokenId>]) -> Result<usize> {
        let len = Self::check_shape(input_ids)?;
        let n = self.config.ngram_len;
        if !input_ids.is_empty() && len < n {
            return Err(invalid_arg(format!(
                "`input_ids` rows need at least `ngram_len` = {n} tokens to score, got {len}"
            )));
        }
        Ok(len)
    }

    /// transformers' `compute_g_values`: the g-value of each n-gram of each row, for each key.
    /// `input_ids`: `[b, len]` -> `[b, len - (ngram_len - 1), depth]`.
    pub fn compute_g_values(&self, input_ids: &[Vec<TokenId>]) -> Result<Vec<Vec<Vec<u8>>>> {
        self.check_input_ids(input_ids)?;
        let n = self.config.ngram_len;
        let depth = self.config.keys.len();
        Ok(input_ids
            .iter()
            .map(|row| {
                let row: Vec<i64> = row.iter().map(|&t| i64::from(t)).collect();
                row.windows(n)
                    .map(|ngram| {
                        let mut g = vec![0u8; depth];
                        self.g_values_of(accumulate_hash(1, ngram), &mut g);
                        g
                    })
                    .collect()
            })
            .collect())
    }

    /// transformers' `compute_context_repetition_mask`: `true` where the n-gram's context (its first
    /// `ngram_len - 1` tokens) was not among the last `context_history_size` contexts of the row,
    /// as the processor skips. `[b, len]` -> `[b, len - (ngram_len - 1)]`.
    pub fn compute_context_repetition_mask(
        &self,
        input_ids: &[Vec<TokenId>],
    ) -> Result<Vec<Vec<bool>>> {
        let len = self.check_input_ids(input_ids)?;
        let n = self.config.ngram_len;
        let size = self.config.context_history_size;
        Ok(input_ids
            .iter()
            .map(|row| {
                let row: Vec<i64> = row.iter().map(|&t| i64::from(t)).collect();
                let mut history = vec![0i64; size]; // newest first
                (0..=len - n)
                    .map(|i| {
                        let hash = accumulate_hash(1, &row[i..i + n - 1]);
                        let repeated = history.contains(&hash);
                        if size > 0 {
                            history.pop();
                            history.insert(0, hash);
                        }
                        !repeated
                    })
                    .collect()
            })
            .collect())
    }

    /// transformers' `compute_eos_token_mask`: `true` before the first `eos_token_id` of each row,
    /// `false` from it on. `[b, len]` -> `[b, len]`.
    pub fn compute_eos_token_mask(
        &self,
        input_ids: &[Vec<TokenId>],
        eos_token_id: TokenId,
    ) -> Result<Vec<Vec<bool>>> {
        Self::check_shape(input_ids)?;
        Ok(input_ids
            .iter()
            .map(|row| {
                let first = row.iter().position(|&t| t == eos_token_id);
                (0..row.len())
                    .map(|i| first.is_none_or(|f| i < f))
                    .collect()
            })
            .collect())
    }

    /// transformers' `expected_mean_g_value`: the mean g-value of watermarked text under a uniform
    /// distribution over `vocab_size` tokens, for one layer with P(g = 1) = `coinflip_prob`.
    pub fn expected_mean_g_value(&self, vocab_size: usize, coinflip_prob: f64) -> f64 {
        coinflip_prob + coinflip_prob * (1.0 - coinflip_prob) * (1.0 - 1.0 / vocab_size as f64)
    }
}

/// What [`SynthIDTextWatermarkDetector::detect_with_details`] computed for a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthIDDetectionOutput {
    /// `[b, len - (ngram_len - 1), depth]` g-values.
    pub g_values: Vec<Vec<Vec<u8>>>,
    /// `[b, len - (ngram_len - 1)]`: the n-grams scored (context not repeated, before the first EOS).
    pub mask: Vec<Vec<bool>>,
    /// `[b]`: P(watermarked | g-values).
    pub posterior: Vec<f32>,
}

/// HF `SynthIDTextWatermarkDetector`: a Bayesian detector for a processor's watermark.
#[derive(Debug)]
pub struct SynthIDTextWatermarkDetector {
    /// The trained Bayesian detector.
    pub detector_module: BayesianDetectorModel,
    /// The processor that watermarked (its keys, `ngram_len`, table and history size).
    pub logits_processor: SynthIDTextWatermarkLogitsProcessor,
    /// The tokenizer's EOS id (transformers reads `tokenizer.eos_token_id`).
    pub eos_token_id: TokenId,
}

impl SynthIDTextWatermarkDetector {
    /// A detector (HF `SynthIDTextWatermarkDetector(detector_module, logits_processor, tokenizer)`);
    /// the detector's depth must be the processor's number of keys.
    pub fn new(
        detector_module: BayesianDetectorModel,
        logits_processor: SynthIDTextWatermarkLogitsProcessor,
        eos_token_id: TokenId,
    ) -> Result<Self> {
        let depth = logits_processor.config().keys.len();
        if detector_module.watermarking_depth() != depth {
            return Err(invalid_arg(format!(
                "the Bayesian detector's `watermarking_depth` is {}, but the `watermarking_config` has {depth} keys",
                detector_module.watermarking_depth()
            )));
        }
        Ok(Self {
            detector_module,
            logits_processor,
            eos_token_id,
        })
    }

    /// HF `__call__`: P(watermarked) of each row of `input_ids` (`[b, len]` -> `[b]`).
    pub fn detect(&self, input_ids: &[Vec<TokenId>]) -> Result<Vec<f32>> {
        Ok(self.detect_with_details(input_ids)?.posterior)
    }

    /// [`Self::detect`] with the g-values and the mask it scored.
    pub fn detect_with_details(
        &self,
        input_ids: &[Vec<TokenId>],
    ) -> Result<SynthIDDetectionOutput> {
        let p = &self.logits_processor;
        let skip = p.config().ngram_len - 1;
        let eos = p.compute_eos_token_mask(input_ids, self.eos_token_id)?;
        let repetition = p.compute_context_repetition_mask(input_ids)?;
        let mask: Vec<Vec<bool>> = repetition
            .iter()
            .zip(&eos)
            .map(|(r, e)| r.iter().zip(&e[skip..]).map(|(&a, &b)| a && b).collect())
            .collect();
        let g_values = p.compute_g_values(input_ids)?;
        let posterior = self.detector_module.forward(&g_values, &mask)?;
        Ok(SynthIDDetectionOutput {
            g_values,
            mask,
            posterior,
        })
    }
}
