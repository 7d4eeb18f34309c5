//! HF `SynthIDTextWatermarkLogitsProcessor` and `SynthIDTextWatermarkingConfig`
//! (`src/transformers/generation/logits_process.py`, `configuration_utils.py`; Dathathri et al.,
//! <https://www.nature.com/articles/s41586-024-08025-4>): tournament sampling. Each step every
//! candidate token gets one pseudo-random bit (a "g-value") per key, from a hash of the last
//! `ngram_len - 1` generated tokens, the candidate and the key; the distribution is reweighted layer
//! after layer towards tokens whose bit is 1, `p <- p * (1 + g - E_p[g])`, and the scores become
//! `log p`. A context seen in the last `context_history_size` steps is left unwatermarked.
//!
//! As transformers, the processor is stateful: it keeps the context of each row (starting from
//! zeros, not from the prompt: only generated tokens enter it) and the context history, and adds
//! each row's last input id once per call. One processor serves one `generate()` call; the rows
//! must keep their order and number (beam search keeps them by index, as transformers).
//!
//! The g-values are transformers' own (its int64 wrapping hash, and the sampling table drawn with
//! `torch.randint` on an MT19937 generator, reproduced here), so text watermarked by either side
//! is detected by the other ([`super::synthid_detector`]).
//!
//! Deliberate differences. The tournament runs in float64 (from the float32 scores, back to
//! float32): with several layers `1 + g - E[g]` cancels for tokens of tiny probability, where
//! transformers' float32 is off the exact log-probability by up to tenths (measured on the golden
//! cases, below ~1e-15 probability) or rounds it to zero; elsewhere the two agree within float32
//! rounding. And transformers turns a `watermarking_config` *dict* into a
//! `WatermarkingConfig` always (a dict with `keys` raises a `TypeError`); SynthID is only reachable
//! there through the Python class. JSON has no classes, so lmgen reads a dict with `keys` or
//! `ngram_len` as a `SynthIDTextWatermarkingConfig` (its `to_dict()`).

use std::sync::Mutex;

use serde_json::{Map, Value};

use super::watermark::TorchMt19937;
use super::{invalid_arg, LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// The multiplier of transformers' `accumulate_hash` (an LCG's, newlib/musl).
const HASH_MULTIPLIER: i64 = 6_364_136_223_846_793_005;

/// transformers' `accumulate_hash`: `h = (h + x) * 6364136223846793005 + 1` for each `x`, in int64
/// arithmetic that wraps.
pub(super) fn accumulate_hash(hash: i64, data: &[i64]) -> i64 {
    data.iter().fold(hash, |h, &x| {
        h.wrapping_add(x)
            .wrapping_mul(HASH_MULTIPLIER)
            .wrapping_add(1)
    })
}

/// transformers' `SynthIDTextWatermarkingConfig` (a `watermarking_config` with `keys`/`ngram_len`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthIDTextWatermarkingConfig {
    /// Tokens hashed per g-value: the candidate and the `ngram_len - 1` before it. Required.
    pub ngram_len: usize,
    /// One watermarking key per tournament layer (the depth). Required, non-empty.
    pub keys: Vec<i64>,
    /// How many past contexts are remembered to skip repeated ones. Default 1024.
    pub context_history_size: usize,
    /// Seed of the generator that draws the sampling table. Default 0.
    pub sampling_table_seed: u64,
    /// Size of the table of random bits the hashes index. Default 65536, at most 2**24.
    pub sampling_table_size: usize,
    /// Leave the first `ngram_len - 1` steps unwatermarked. Default false.
    pub skip_first_ngram_calls: bool,
    /// Replace the scores by ones before watermarking (to test the implementation). Default false.
    pub debug_mode: bool,
}

impl SynthIDTextWatermarkingConfig {
    /// Whether a `watermarking_config` object is a SynthID one: it has `keys` or `ngram_len`.
    pub fn is_synthid(value: &Value) -> bool {
        value
            .as_object()
            .is_some_and(|o| o.contains_key("keys") || o.contains_key("ngram_len"))
    }

    /// Reads the `watermarking_config` object (`SynthIDTextWatermarkingConfig(**dict)`): `ngram_len`
    /// and `keys` are required, the others take transformers' defaults, unknown keys are an error
    /// (as the constructor's `TypeError`).
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj: &Map<String, Value> = value.as_object().ok_or_else(|| {
            invalid_arg(format!(
                "`watermarking_config` must be a JSON object, got {value}"
            ))
        })?;
        let missing = |key: &str| {
            invalid_arg(format!(
                "`watermarking_config` for SynthID needs `{key}` (SynthIDTextWatermarkingConfig's required argument)"
            ))
        };
        let mut c = Self {
            ngram_len: 0,
            keys: Vec::new(),
            context_history_size: 1024,
            sampling_table_seed: 0,
            sampling_table_size: 1 << 16,
            skip_first_ngram_calls: false,
            debug_mode: false,
        };
        if !obj.contains_key("ngram_len") {
            return Err(missing("ngram_len"));
        }
        if !obj.contains_key("keys") {
            return Err(missing("keys"));
        }
        for (key, v) in obj {
            let bad = |what: &str| {
                invalid_arg(format!(
                    "`watermarking_config.{key}` must be {what}, got {v}"
                ))
            };
            let count = |v: &Value| v.as_u64().and_then(|x| usize::try_from(x).ok());
            match key.as_str() {
                "ngram_len" => c.ngram_len = count(v).ok_or_else(|| bad("a positive integer"))?,
                "keys" => {
                    c.keys = v
                        .as_array()
                        .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                        .ok_or_else(|| bad("a list of int64 integers"))?
                }
                "context_history_size" => {
                    c.context_history_size = count(v).ok_or_else(|| bad("a non-negative integer"))?
                }
                "sampling_table_seed" => {
                    // torch's `manual_seed` takes a negative seed modulo 2**64.
                    c.sampling_table_seed = v
                        .as_u64()
                        .or_else(|| v.as_i64().map(|x| x as u64))
                        .ok_or_else(|| bad("an integer"))?
                }
                "sampling_table_size" => {
                    c.sampling_table_size = count(v).ok_or_else(|| bad("a positive integer"))?
                }
                "skip_first_ngram_calls" => {
                    c.skip_first_ngram_calls = v.as_bool().ok_or_else(|| bad("a boolean"))?
                }
                "debug_mode" => c.debug_mode = v.as_bool().ok_or_else(|| bad("a boolean"))?,
                _ => {
                    return Err(invalid_arg(format!(
                        "`watermarking_config` has `{key}`, which SynthIDTextWatermarkingConfig does not take (it takes ngram_len, keys, context_history_size, sampling_table_seed, sampling_table_size, skip_first_ngram_calls, debug_mode)"
                    )))
                }
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// transformers' `SynthIDTextWatermarkingConfig.validate` (`sampling_table_size <= 2**24`), plus
    /// what its processor would fail on later: `ngram_len >= 1`, some keys, a non-empty table.
    pub fn validate(&self) -> Result<()> {
        if self.sampling_table_size > 1 << 24 {
            return Err(invalid_arg(format!(
                "Some of the keys in `watermarking_config` are defined incorrectly. `sampling_table_size` should be < 2**24` but found {}",
                self.sampling_table_size
            )));
        }
        if self.sampling_table_size == 0 {
            return Err(invalid_arg(
                "`watermarking_config.sampling_table_size` must be positive, got 0".into(),
            ));
        }
        if self.ngram_len == 0 {
            return Err(invalid_arg(
                "`watermarking_config.ngram_len` must be at least 1, got 0".into(),
            ));
        }
        if self.keys.is_empty() {
            return Err(invalid_arg(
                "`watermarking_config.keys` must hold at least one key (one per tournament layer), got []".into(),
            ));
        }
        Ok(())
    }
}

/// transformers' `SynthIDTextWatermarkState`: what the processor carries across steps.
#[derive(Debug, Clone)]
struct SynthIDTextWatermarkState {
    /// `[b, ngram_len - 1]`: the last generated tokens of each row (zeros at first).
    context: Vec<Vec<i64>>,
    /// `[b, context_history_size]`: hashes of the contexts watermarked, newest first (zeros at first).
    context_history: Vec<Vec<i64>>,
    /// Calls so far.
    num_calls: usize,
}

/// Watermarks with SynthID's tournament (`watermarking_config` with `keys` and `ngram_len`).
#[derive(Debug)]
pub struct SynthIDTextWatermarkLogitsProcessor {
    pub(super) config: SynthIDTextWatermarkingConfig,
    /// `[sampling_table_size]` random bits: `torch.randint(0, 2, generator=seeded)`.
    sampling_table: Vec<u8>,
    state: Mutex<Option<SynthIDTextWatermarkState>>,
}

impl SynthIDTextWatermarkLogitsProcessor {
    /// Checks `config` and draws the sampling table.
    pub fn new(config: SynthIDTextWatermarkingConfig) -> Result<Self> {
        config.validate()?;
        let sampling_table = TorchMt19937::new(config.sampling_table_seed)
            .randint(0, 2, config.sampling_table_size)
            .into_iter()
            .map(|b| b as u8)
            .collect();
        Ok(Self {
            config,
            sampling_table,
            state: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SynthIDTextWatermarkingConfig {
        &self.config
    }

    /// The sampling table (`[sampling_table_size]`, zeros and ones).
    pub fn sampling_table(&self) -> &[u8] {
        &self.sampling_table
    }

    /// The g-value of each key for the hash of an n-gram (`accumulate_hash(hash, key)` per depth,
    /// then `sample_g_values`), written into `out` (`[depth]`).
    pub(super) fn g_values_of(&self, ngram_hash: i64, out: &mut [u8]) {
        let size = self.sampling_table.len() as i64;
        for (g, &key) in out.iter_mut().zip(&self.config.keys) {
            let h = accumulate_hash(ngram_hash, &[key]);
            // torch's `%` on int64 is floored: the index is in [0, size).
            *g = self.sampling_table[h.rem_euclid(size) as usize];
        }
    }

    /// transformers' `update_scores`: the tournament on `softmax(scores)`, layer by layer, then
    /// `log`, non-finite values (zero probability) becoming float32's lowest. Computed in float64
    /// (see the module doc). `g`: `[vocab, depth]`; `row`: `[vocab]`, rewritten.
    fn update_scores(&self, row: &mut [f32], g: &[u8]) {
        let depth = self.config.keys.len();
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
        let mut probs: Vec<f64> = row.iter().map(|&x| (f64::from(x) - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        for d in 0..depth {
            let mass: f64 = probs
                .iter()
                .enumerate()
                .map(|(v, p)| f64::from(g[v * depth + d]) * p)
                .sum();
            for (v, p) in probs.iter_mut().enumerate() {
                *p *= (1.0 + f64::from(g[v * depth + d])) - mass;
            }
        }
        for (s, p) in row.iter_mut().zip(probs) {
            let l = p.ln() as f32;
            *s = if l.is_finite() { l } else { f32::MIN };
        }
    }
}

impl LogitsProcessor for SynthIDTextWatermarkLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let (batch, vocab) = (scores.batch, scores.vocab);
        if input_ids.len() != batch {
            return Err(invalid_arg(format!(
                "SynthID `watermarking_config`: {} rows of input ids for {batch} rows of scores",
                input_ids.len()
            )));
        }
        if self.config.debug_mode {
            scores.data.fill(1.0);
        }
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let first_call = guard.is_none();
        let state = guard.get_or_insert_with(|| SynthIDTextWatermarkState {
            context: vec![vec![0; self.config.ngram_len - 1]; batch],
            context_history: vec![vec![0; self.config.context_history_size]; batch],
            num_calls: 0,
        });
        if !first_call {
            if state.context.len() != batch {
                return Err(invalid_arg(format!(
                    "SynthID `watermarking_config` keeps a state per row: the batch went from {} to {batch} rows between steps",
                    state.context.len()
                )));
            }
            // Append each row's last input id (the token added since the last call).
            for (ctx, ids) in state.context.iter_mut().zip(input_ids) {
                let last = ids.last().copied().ok_or_else(|| {
                    invalid_arg("SynthID `watermarking_config`: a row of input ids is empty".into())
                })?;
                if !ctx.is_empty() {
                    ctx.remove(0);
                    ctx.push(i64::from(last));
                }
            }
        }
        state.num_calls += 1;
        if self.config.skip_first_ngram_calls && state.num_calls < self.config.ngram_len {
            return Ok(());
        }
        let depth = self.config.keys.len();
        let mut g = vec![0u8; vocab * depth]; // [vocab, depth]
        for (i, (ctx, history)) in state
            .context
            .iter()
            .zip(state.context_history.iter_mut())
            .enumerate()
        {
            let context_hash = accumulate_hash(1, ctx);
            for (v, out) in g.chunks_mut(depth).enumerate() {
                self.g_values_of(accumulate_hash(context_hash, &[v as i64]), out);
            }
            let repeated = history.contains(&context_hash);
            if !history.is_empty() {
                history.pop();
                history.insert(0, context_hash);
            }
            if !repeated {
                self.update_scores(scores.row_mut(i), &g);
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
    fn hash_wraps_as_int64() {
        // (1 + 5) * M + 1 and again with 7, by i128 arithmetic reduced to int64.
        let m = HASH_MULTIPLIER as i128;
        let step = |h: i128, x: i128| (((h + x) * m + 1) as u64 as i64) as i128;
        let want = step(step(1, 5), 7) as i64;
        assert_eq!(accumulate_hash(1, &[5, 7]), want);
        assert_eq!(accumulate_hash(accumulate_hash(1, &[5]), &[7]), want);
    }

    #[test]
    fn config_reads_defaults_and_names_bad_fields() {
        let c = SynthIDTextWatermarkingConfig::from_json(&json!({"keys": [1, 2], "ngram_len": 5}))
            .unwrap();
        assert_eq!(
            (c.context_history_size, c.sampling_table_size),
            (1024, 65536)
        );
        assert!(!c.skip_first_ngram_calls && !c.debug_mode && c.sampling_table_seed == 0);
        let err = |v: Value| {
            SynthIDTextWatermarkingConfig::from_json(&v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"keys": [1]})).contains("`ngram_len`"));
        assert!(err(json!({"ngram_len": 2})).contains("`keys`"));
        let e = err(json!({"keys": [1], "ngram_len": 2, "sampling_table_size": 16_777_217}));
        assert!(e.contains("`sampling_table_size` should be < 2**24"), "{e}");
        assert!(err(json!({"keys": [1], "ngram_len": 2, "bias": 2.0})).contains("`bias`"));
        assert!(err(json!({"keys": [], "ngram_len": 2})).contains("`watermarking_config.keys`"));
        assert!(err(json!({"keys": ["a"], "ngram_len": 2})).contains("int64"));
        assert!(
            err(json!({"keys": [1], "ngram_len": 0})).contains("`watermarking_config.ngram_len`")
        );
    }

    /// With uniform scores (debug mode) and one layer, each token's probability becomes
    /// `(1 + g - E[g]) / vocab`: tokens whose g-value is 1 are favoured.
    #[test]
    fn one_layer_favours_g_one_tokens() {
        let config = SynthIDTextWatermarkingConfig::from_json(
            &json!({"keys": [42], "ngram_len": 2, "debug_mode": true}),
        )
        .unwrap();
        let p = SynthIDTextWatermarkLogitsProcessor::new(config).unwrap();
        let mut s = Scores::new(vec![0.0; 64], 1, 64);
        p.process(&[vec![3]], &mut s).unwrap();
        let h = accumulate_hash(1, &[0]);
        let mut g = [0u8];
        let ones: Vec<bool> = (0..64)
            .map(|v| {
                p.g_values_of(accumulate_hash(h, &[v]), &mut g);
                g[0] == 1
            })
            .collect();
        let mass = ones.iter().filter(|&&o| o).count() as f32 / 64.0;
        for (v, &one) in ones.iter().enumerate() {
            let want = ((1.0 + f32::from(u8::from(one)) - mass) / 64.0).ln();
            assert!(
                (s.data[v] - want).abs() < 1e-6,
                "{v}: {} vs {want}",
                s.data[v]
            );
        }
    }
}
