//! HF `WatermarkDetector` (`src/transformers/generation/watermarking.py`): counts how many tokens of a
//! text fall in the greenlist of their context and turns that into a z-score against the
//! `greenlist_ratio` expected of unwatermarked text.
//!
//! Deliberate difference: with `ignore_repeated_ngrams`, repeated n-grams are counted once by value;
//! transformers keys its counter on tensors (hashed by identity), so it never merges them.

use std::collections::HashMap;

use super::watermark::{Greenlist, SeedingScheme};
use super::{invalid_arg, WatermarkLogitsProcessor};
use crate::error::Result;
use crate::TokenId;

/// What the detector says about one row.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkDetectorOutput {
    /// Tokens scored: each one after its seeding context (a repeated n-gram once with
    /// `ignore_repeated_ngrams`).
    pub num_tokens_scored: usize,
    /// Scored tokens that are in their context's greenlist.
    pub num_green_tokens: usize,
    /// `num_green_tokens / num_tokens_scored`.
    pub green_fraction: f64,
    /// The z-score of `num_green_tokens` against `greenlist_ratio` of unwatermarked text.
    pub z_score: f64,
    /// The one-sided p-value of `z_score` (transformers' approximation of the normal tail).
    pub p_value: f64,
    /// `z_score > z_threshold`.
    pub prediction: bool,
}

/// Detects the watermark of a [`WatermarkLogitsProcessor`].
#[derive(Debug, Clone)]
pub struct WatermarkDetector {
    greenlist: Greenlist,
    bos_token_id: Option<TokenId>,
    ignore_repeated_ngrams: bool,
}

impl WatermarkDetector {
    /// A detector for `processor`'s greenlists (HF `WatermarkDetector(model_config, device,
    /// watermarking_config, ignore_repeated_ngrams)`); `bos_token_id` is skipped at the start.
    pub fn new(
        processor: &WatermarkLogitsProcessor,
        bos_token_id: Option<TokenId>,
        ignore_repeated_ngrams: bool,
    ) -> Self {
        Self {
            greenlist: processor.greenlist().clone(),
            bos_token_id,
            ignore_repeated_ngrams,
        }
    }

    /// Scores every row of `input_ids` (a leading BOS, judged on row 0, is dropped from all rows).
    pub fn detect(
        &self,
        input_ids: &[Vec<TokenId>],
        z_threshold: f64,
    ) -> Result<Vec<WatermarkDetectorOutput>> {
        let skip = usize::from(
            self.bos_token_id.is_some()
                && input_ids.first().and_then(|r| r.first()).copied() == self.bos_token_id,
        );
        let cfg = &self.greenlist.config;
        let selfhash = cfg.seeding_scheme == SeedingScheme::SelfHash;
        let n = cfg.context_width + 1 - usize::from(selfhash);
        let mut out = Vec::with_capacity(input_ids.len());
        for row in input_ids {
            let row = &row[skip.min(row.len())..];
            if row.len() < cfg.context_width + 1 {
                return Err(invalid_arg(format!(
                    "Must have at least `1` token to score after the first min_prefix_len={} tokens required by the seeding scheme.",
                    cfg.context_width
                )));
            }
            let mut counts: HashMap<&[TokenId], usize> = HashMap::new();
            let mut order: Vec<&[TokenId]> = Vec::new();
            for w in row.windows(n) {
                let c = counts.entry(w).or_insert(0);
                if *c == 0 {
                    order.push(w);
                }
                *c += 1;
            }
            let (mut scored, mut green) = (0usize, 0usize);
            for w in order {
                let prefix = if selfhash { w } else { &w[..n - 1] };
                let is_green = usize::from(self.greenlist.is_green(prefix, w[n - 1]));
                let times = if self.ignore_repeated_ngrams {
                    1
                } else {
                    counts[w]
                };
                scored += times;
                green += times * is_green;
            }
            let gamma = cfg.greenlist_ratio;
            let z = (green as f64 - gamma * scored as f64)
                / (scored as f64 * gamma * (1.0 - gamma)).sqrt();
            // transformers' approximation of the normal tail.
            let p = 1.0
                - 0.5 * (1.0 + z.signum() * (1.0 - (-2.0 * z * z / std::f64::consts::PI).exp()));
            out.push(WatermarkDetectorOutput {
                num_tokens_scored: scored,
                num_green_tokens: green,
                green_fraction: green as f64 / scored as f64,
                z_score: z,
                p_value: p,
                prediction: z > z_threshold,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::logits::watermark::WatermarkingConfig;
    use crate::generation::logits::{LogitsProcessor, Scores};

    /// Greedy over flat scores with the watermark: every token is green, so the z-score is high.
    #[test]
    fn detects_watermarked_tokens() {
        let p = WatermarkLogitsProcessor::new(WatermarkingConfig::default(), 50).unwrap();
        let mut seq = vec![1u32];
        for _ in 0..40 {
            let mut s = Scores::new(vec![0.0; 50], 1, 50);
            p.process(&[seq.clone()], &mut s).unwrap();
            let best = (0..50).find(|&i| s.data[i] > 0.0).unwrap_or(0);
            seq.push(best as u32);
        }
        let d = WatermarkDetector::new(&p, None, false);
        let r = &d.detect(&[seq.clone()], 3.0).unwrap()[0];
        assert_eq!(r.num_tokens_scored, 40);
        assert_eq!(r.num_green_tokens, 40);
        assert!(r.prediction && r.z_score > 6.0, "{r:?}");
        let plain: Vec<u32> = (0..41).map(|i| (i * 7 % 50) as u32).collect();
        assert!(d.detect(&[plain], 3.0).unwrap()[0].z_score < r.z_score);
    }
}
