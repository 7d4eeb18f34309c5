//! HF `WatermarkLogitsProcessor` and `WatermarkingConfig` (`src/transformers/generation/logits_process.py`,
//! `configuration_utils.py`; Kirchenbauer et al., <https://arxiv.org/abs/2306.04634>): each step a
//! "greenlist" of `greenlist_ratio * vocab` tokens, seeded by the previous token(s), gets `bias` added.
//!
//! The greenlists are transformers' own: its seeding (`hashing_key * last token` for "lefthash", the
//! minimum of `hashing_key * table[t] * table[last]` over the context for "selfhash") and torch's CPU
//! `randperm` on an MT19937 generator, reproduced here, so text watermarked by either side is detected
//! by the other ([`super::watermark_detector`]). "selfhash" only looks at the 40 best candidates, as
//! transformers (which therefore needs a vocabulary of at least 40).

use serde_json::Value;

use super::{invalid_arg, sorted_desc, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// transformers' `TABLE_SIZE` for the "selfhash" lookup table.
const TABLE_SIZE: usize = 1_000_003;
/// Candidates "selfhash" tries (transformers' `range(40)`).
const SELFHASH_CANDIDATES: usize = 40;

/// How the greenlist is seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedingScheme {
    /// From the last token of the context.
    LeftHash,
    /// From the context and the candidate token itself.
    SelfHash,
}

impl SeedingScheme {
    /// `"lefthash"` or `"selfhash"`; anything else is transformers' `validate` error.
    pub(crate) fn from_json(value: &Value) -> Result<Self> {
        match value.as_str() {
            Some("lefthash") => Ok(SeedingScheme::LeftHash),
            Some("selfhash") => Ok(SeedingScheme::SelfHash),
            _ => Err(invalid_arg(format!(
                "Some of the keys in `watermarking_config` are defined incorrectly. `seeding_scheme` should be one of ['selfhash', 'lefthash'], but found {value}"
            ))),
        }
    }
}

/// transformers' `WatermarkingConfig` (the `watermarking_config` generation field).
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkingConfig {
    /// Fraction of the vocabulary in each greenlist. Default 0.25.
    pub greenlist_ratio: f64,
    /// Added to the scores of green tokens. Default 2.0.
    pub bias: f64,
    /// Key of the seeding hash. Default 15485863.
    pub hashing_key: u64,
    /// `"lefthash"` or `"selfhash"`. Default lefthash.
    pub seeding_scheme: SeedingScheme,
    /// Tokens of context that seed the greenlist. Default 1.
    pub context_width: usize,
}

impl Default for WatermarkingConfig {
    fn default() -> Self {
        Self {
            greenlist_ratio: 0.25,
            bias: 2.0,
            hashing_key: 15_485_863,
            seeding_scheme: SeedingScheme::LeftHash,
            context_width: 1,
        }
    }
}

impl WatermarkingConfig {
    /// Reads the `watermarking_config` JSON object; unset keys take transformers' defaults.
    /// A SynthID config (`keys`, `ngram_len`) is an error here: read it with
    /// [`super::SynthIDTextWatermarkingConfig::from_json`].
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            invalid_arg(format!(
                "`watermarking_config` must be a JSON object, got {value}"
            ))
        })?;
        if super::SynthIDTextWatermarkingConfig::is_synthid(value) {
            return Err(invalid_arg(
                "`watermarking_config` with `keys`/`ngram_len` is a SynthIDTextWatermarkingConfig, not a WatermarkingConfig".into(),
            ));
        }
        let mut c = Self::default();
        for (key, v) in obj {
            let bad = |what: &str| {
                invalid_arg(format!(
                    "`watermarking_config.{key}` must be {what}, got {v}"
                ))
            };
            match key.as_str() {
                "greenlist_ratio" => {
                    c.greenlist_ratio = v.as_f64().ok_or_else(|| bad("a number"))?
                }
                "bias" => c.bias = v.as_f64().ok_or_else(|| bad("a number"))?,
                "hashing_key" => {
                    c.hashing_key = v.as_u64().ok_or_else(|| bad("a non-negative integer"))?
                }
                "context_width" => {
                    c.context_width = v
                        .as_u64()
                        .and_then(|x| usize::try_from(x).ok())
                        .ok_or_else(|| bad("a positive integer"))?
                }
                "seeding_scheme" => c.seeding_scheme = SeedingScheme::from_json(v)?,
                _ => {}
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// transformers' `WatermarkingConfig.validate`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.greenlist_ratio) {
            return Err(invalid_arg(format!(
                "Some of the keys in `watermarking_config` are defined incorrectly. `greenlist_ratio` should be in range between 0.0 and 1.0, but found {}",
                self.greenlist_ratio
            )));
        }
        if self.context_width < 1 {
            return Err(invalid_arg(format!(
                "Some of the keys in `watermarking_config` are defined incorrectly. `context_width` should be greater than 0, but found {}",
                self.context_width
            )));
        }
        Ok(())
    }
}

/// torch's CPU generator: MT19937 seeded with the low 32 bits of the seed (`at::mt19937`).
pub(super) struct TorchMt19937 {
    state: [u32; 624],
    index: usize,
}

impl TorchMt19937 {
    pub(super) fn new(seed: u64) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed as u32;
        for j in 1..624 {
            state[j] = 1_812_433_253u32
                .wrapping_mul(state[j - 1] ^ (state[j - 1] >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    pub(super) fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `torch.randint(low, high, (n,), generator=...)` on CPU for `high - low < 2**32`: each value is
    /// `random() % (high - low) + low` (`uniform_int_from_to_distribution`), drawn in order.
    pub(super) fn randint(&mut self, low: i64, high: i64, n: usize) -> Vec<i64> {
        let range = (high - low) as u64;
        debug_assert!(range > 0 && range < 1 << 32);
        (0..n)
            .map(|_| (self.next_u32() as u64 % range) as i64 + low)
            .collect()
    }

    /// `torch.randperm(n, generator=...)` on CPU: Fisher-Yates with `random() % (n - i)`.
    pub(super) fn randperm(&mut self, n: usize) -> Vec<u32> {
        let mut r: Vec<u32> = (0..n as u32).collect();
        for i in 0..n.saturating_sub(1) {
            let z = (self.next_u32() as u64 % (n - i) as u64) as usize;
            r.swap(i, z + i);
        }
        r
    }
}

/// The greenlist machinery shared by the processor and the detector.
#[derive(Debug, Clone)]
pub struct Greenlist {
    pub(super) config: WatermarkingConfig,
    vocab_size: usize,
    greenlist_size: usize,
    /// `randperm(TABLE_SIZE)` seeded with `hashing_key` ("selfhash" only).
    fixed_table: Vec<u32>,
}

impl Greenlist {
    /// Checks `config` and builds the "selfhash" table for a vocabulary of `vocab_size`.
    pub fn new(config: WatermarkingConfig, vocab_size: usize) -> Result<Self> {
        config.validate()?;
        if config.greenlist_ratio <= 0.0 || config.greenlist_ratio >= 1.0 {
            return Err(invalid_arg(format!(
                "greenlist_ratio has be in range between 0.0 and 1.0, exclusively. but found {}",
                config.greenlist_ratio
            )));
        }
        let fixed_table = match config.seeding_scheme {
            SeedingScheme::SelfHash => TorchMt19937::new(config.hashing_key).randperm(TABLE_SIZE),
            SeedingScheme::LeftHash => Vec::new(),
        };
        Ok(Self {
            greenlist_size: (vocab_size as f64 * config.greenlist_ratio) as usize,
            config,
            vocab_size,
            fixed_table,
        })
    }

    /// transformers' `set_seed` + `_get_greenlist_ids` for a context (its last `context_width` tokens).
    pub fn greenlist_ids(&self, input_seq: &[TokenId]) -> Vec<TokenId> {
        let start = input_seq.len().saturating_sub(self.config.context_width);
        let ctx = &input_seq[start..];
        let seed: u64 = match self.config.seeding_scheme {
            SeedingScheme::LeftHash => {
                let last = ctx.last().copied().unwrap_or(0) as u128;
                ((self.config.hashing_key as u128 * last) % (u64::MAX as u128)) as u64
            }
            SeedingScheme::SelfHash => {
                let key = self.config.hashing_key as i64;
                let table = |t: TokenId| self.fixed_table[t as usize % TABLE_SIZE] as i64 + 1;
                let b = table(ctx.last().copied().unwrap_or(0));
                // int64 tensor arithmetic wraps; Python's `%` then makes it non-negative.
                let min = ctx
                    .iter()
                    .map(|&t| key.wrapping_mul(table(t)).wrapping_mul(b))
                    .min()
                    .unwrap_or(0) as i128;
                let m = u64::MAX as i128;
                (((min % m) + m) % m) as u64
            }
        };
        let perm = TorchMt19937::new(seed).randperm(self.vocab_size);
        perm[..self.greenlist_size].to_vec()
    }

    /// Whether `target` is green after `prefix`.
    pub fn is_green(&self, prefix: &[TokenId], target: TokenId) -> bool {
        self.greenlist_ids(prefix).contains(&target)
    }
}

/// Adds `bias` to the greenlist of each row (`watermarking_config`).
#[derive(Debug, Clone)]
pub struct WatermarkLogitsProcessor {
    greenlist: Greenlist,
}

impl WatermarkLogitsProcessor {
    /// `vocab_size`: the model's (transformers passes `config.get_text_config().vocab_size`).
    pub fn new(config: WatermarkingConfig, vocab_size: usize) -> Result<Self> {
        Ok(Self {
            greenlist: Greenlist::new(config, vocab_size)?,
        })
    }

    /// The greenlist machinery, for a [`super::watermark_detector::WatermarkDetector`].
    pub(crate) fn greenlist(&self) -> &Greenlist {
        &self.greenlist
    }
}

impl LogitsProcessor for WatermarkLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let g = &self.greenlist;
        let bias = g.config.bias as f32;
        for (i, seq) in input_ids.iter().enumerate() {
            if seq.len() < g.config.context_width {
                tracing::warn!(
                    "`input_ids` should have at least `{}` tokens; skipping the watermark this step",
                    g.config.context_width
                );
                return Ok(());
            }
            let row = scores.row_mut(i);
            let green: Vec<TokenId> = match g.config.seeding_scheme {
                SeedingScheme::LeftHash => g.greenlist_ids(seq),
                SeedingScheme::SelfHash => {
                    let order = sorted_desc(row);
                    if order.len() < SELFHASH_CANDIDATES {
                        return Err(invalid_arg(format!(
                            "\"selfhash\" watermarking tries {SELFHASH_CANDIDATES} candidates but the vocabulary has {}",
                            order.len()
                        )));
                    }
                    let mut ctx = seq.clone();
                    ctx.push(0);
                    order[..SELFHASH_CANDIDATES]
                        .iter()
                        .map(|&c| c as TokenId)
                        .filter(|&c| {
                            if let Some(last) = ctx.last_mut() {
                                *last = c;
                            }
                            g.greenlist_ids(&ctx).contains(&c)
                        })
                        .collect()
                }
            };
            for t in green {
                if let Some(s) = row.get_mut(t as usize) {
                    *s += bias;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // std::mt19937 with seed 5489: the 10000th output is 4123659995 (C++ standard).
        let mut g = TorchMt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    /// Values printed by torch 2.11 / transformers 5.17 on CPU.
    #[test]
    fn randperm_and_greenlists_match_torch() {
        let perm = TorchMt19937::new(15_485_863 * 7).randperm(40);
        assert_eq!(
            perm,
            [
                9, 36, 10, 4, 6, 28, 1, 39, 29, 0, 38, 27, 19, 12, 35, 30, 32, 13, 24, 15, 3, 26,
                5, 25, 17, 18, 37, 2, 23, 21, 14, 11, 7, 31, 33, 16, 20, 8, 34, 22
            ]
        );
        let table = TorchMt19937::new(15_485_863).randperm(TABLE_SIZE);
        assert_eq!(table[..5], [138_280, 994_103, 467_886, 915_329, 149_437]);
        let p = WatermarkLogitsProcessor::new(WatermarkingConfig::default(), 40).unwrap();
        let mut s = Scores::new(vec![0.0; 40], 1, 40);
        p.process(&[vec![3, 7]], &mut s).unwrap();
        let green: Vec<usize> = (0..40).filter(|&i| s.data[i] > 0.0).collect();
        assert_eq!(green, [0, 1, 4, 6, 9, 10, 28, 29, 36, 39]);
        // selfhash, context_width 2, on torch.manual_seed(0); torch.randn(1, 50).
        let scores = vec![
            -1.12584, -1.15236, -0.250579, -0.433879, 0.84871, 0.692009, -0.316013, -2.115219,
            0.322275, -1.263335, 0.349983, 0.308134, 0.119842, 1.237658, 1.116777, -0.247278,
            -1.352654, -1.695931, 0.566651, 0.793508, 0.598839, -1.555095, -0.34136, 1.853006,
            0.750189, -0.585498, -0.173397, 0.183478, 1.389366, 1.586334, 0.946298, -0.843677,
            -0.613583, 0.031593, 1.055357, 0.177844, -0.230335, -0.391754, 0.543295, -0.395158,
            0.205526, -0.45033, 1.52098, 3.410503, -1.531184, -1.234135, 1.819725, -0.551529,
            -1.325326, 0.188554,
        ];
        let config = WatermarkingConfig {
            seeding_scheme: SeedingScheme::SelfHash,
            context_width: 2,
            ..WatermarkingConfig::default()
        };
        let p = WatermarkLogitsProcessor::new(config, 50).unwrap();
        let mut s = Scores::new(scores.clone(), 1, 50);
        p.process(&[vec![3, 9, 7]], &mut s).unwrap();
        let green: Vec<usize> = (0..50).filter(|&i| s.data[i] > scores[i]).collect();
        assert_eq!(green, [13, 14, 18, 19, 22, 47]);
    }

    #[test]
    fn greenlist_has_the_ratio_and_biases_it() {
        let p = WatermarkLogitsProcessor::new(WatermarkingConfig::default(), 40).unwrap();
        let green = p.greenlist().greenlist_ids(&[3, 7]);
        assert_eq!(green.len(), 10);
        let mut s = Scores::new(vec![0.0; 40], 1, 40);
        p.process(&[vec![3, 7]], &mut s).unwrap();
        assert_eq!(s.data.iter().filter(|&&x| x == 2.0).count(), 10);
        assert!(green.iter().all(|&t| s.data[t as usize] == 2.0));
    }

    #[test]
    fn config_is_validated_naming_the_field() {
        let e = WatermarkingConfig::from_json(&json!({"seeding_scheme": "x"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`seeding_scheme`"), "{e}");
        assert!(WatermarkingConfig::from_json(&json!({"greenlist_ratio": 1.5})).is_err());
        assert!(WatermarkingConfig::from_json(&json!({"context_width": 0})).is_err());
        let c = WatermarkingConfig::from_json(&json!({"bias": 3, "seeding_scheme": "selfhash"}))
            .unwrap();
        assert_eq!(c.bias, 3.0);
        assert_eq!(c.seeding_scheme, SeedingScheme::SelfHash);
    }
}
