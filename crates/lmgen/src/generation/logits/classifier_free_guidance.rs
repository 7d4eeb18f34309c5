//! HF `UnbatchedClassifierFreeGuidanceLogitsProcessor` (`src/transformers/generation/logits_process.py`):
//! classifier-free guidance for a decoder-only model. The scores become log-probabilities, and each step
//! the model is run a second time on the negative ("unconditional") prompt with its own KV cache:
//! `out = g * (logp_cond - logp_uncond) + logp_uncond`. The negative prompt defaults to the last prompt
//! token of each row, as transformers.
//!
//! As transformers, the unconditional forward passes no position ids, so positions run `0..len` over
//! the negative prompt whatever its mask.

use std::sync::Mutex;

use candle_core::Tensor;

use super::{invalid_arg, log_softmax, LogitsProcessor, Scores};
use crate::cache::DynamicCache;
use crate::error::{Error, Result};
use crate::models::{CausalLM, ForwardInput, LogitsToKeep};
use crate::TokenId;

/// The unconditional branch's running state.
struct Unconditional {
    /// Tokens fed so far (all of them when not caching), `[b][t]`.
    input_ids: Option<Vec<Vec<TokenId>>>,
    attention_mask: Option<Vec<Vec<u8>>>,
    cache: DynamicCache,
    first_pass: bool,
}

/// Classifier-free guidance (`guidance_scale`).
pub struct UnbatchedClassifierFreeGuidanceLogitsProcessor<'a> {
    guidance_scale: f32,
    model: &'a dyn CausalLM,
    use_cache: bool,
    state: Mutex<Unconditional>,
}

impl std::fmt::Debug for UnbatchedClassifierFreeGuidanceLogitsProcessor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UnbatchedClassifierFreeGuidanceLogitsProcessor(guidance_scale={})",
            self.guidance_scale
        )
    }
}

impl<'a> UnbatchedClassifierFreeGuidanceLogitsProcessor<'a> {
    /// `unconditional_ids`: the negative prompt (default: each row's last token);
    /// `unconditional_attention_mask`: its mask (default all ones).
    pub fn new(
        guidance_scale: f64,
        model: &'a dyn CausalLM,
        unconditional_ids: Option<Vec<Vec<TokenId>>>,
        unconditional_attention_mask: Option<Vec<Vec<u8>>>,
        use_cache: bool,
    ) -> Result<Self> {
        if guidance_scale.is_nan() {
            return Err(invalid_arg(
                "`guidance_scale` must be a number, got NaN".into(),
            ));
        }
        Ok(Self {
            guidance_scale: guidance_scale as f32,
            model,
            use_cache,
            state: Mutex::new(Unconditional {
                input_ids: unconditional_ids,
                attention_mask: unconditional_attention_mask,
                cache: DynamicCache::new(),
                first_pass: true,
            }),
        })
    }

    /// transformers' `get_unconditional_logits`: last-position logits of the negative branch, `[b, vocab]`.
    fn unconditional_logits(&self, input_ids: &[Vec<TokenId>]) -> Result<Scores> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::input("classifier-free guidance state poisoned"))?;
        let (ids, mask) = if st.first_pass {
            let ids = st.input_ids.clone().unwrap_or_else(|| {
                input_ids
                    .iter()
                    .map(|r| r.last().copied().into_iter().collect())
                    .collect()
            });
            let mask = st
                .attention_mask
                .clone()
                .unwrap_or_else(|| ids.iter().map(|r| vec![1u8; r.len()]).collect());
            st.first_pass = false;
            (ids, mask)
        } else {
            let last: Vec<Vec<TokenId>> = input_ids
                .iter()
                .map(|r| r.last().copied().into_iter().collect())
                .collect();
            let mut mask = st.attention_mask.clone().unwrap_or_default();
            mask.iter_mut().for_each(|r| r.push(1));
            let ids = if self.use_cache {
                last
            } else {
                let mut all = st.input_ids.clone().unwrap_or_default();
                for (row, l) in all.iter_mut().zip(last) {
                    row.extend(l);
                }
                all
            };
            (ids, mask)
        };
        if ids.len() != input_ids.len() || ids.iter().any(|r| r.is_empty()) {
            return Err(Error::input(format!(
                "the negative prompt must have one non-empty row per sequence ({} rows)",
                input_ids.len()
            )));
        }
        if mask.len() != ids.len() {
            return Err(Error::input(
                "`negative_prompt_attention_mask` must have one row per negative prompt row",
            ));
        }
        if !self.use_cache {
            st.cache = DynamicCache::new();
        }
        let past = mask[0].len() - ids[0].len();
        let t = ids[0].len();
        let device = self.model.device().clone();
        let step_ids = Tensor::new(ids.clone(), &device)?; // [b, t]
        let pos: Vec<Vec<u32>> = vec![(past as u32..(past + t) as u32).collect(); ids.len()];
        let pos = Tensor::new(pos, &device)?; // [b, t]
        let padded = mask.iter().flatten().any(|&m| m == 0);
        let out = self.model.forward(
            &ForwardInput {
                input_ids: &step_ids,
                position_ids: &pos,
                attention_mask: padded.then_some(mask.as_slice()),
                logits_to_keep: LogitsToKeep::Last,
                output_hidden_states: false,
                output_attentions: false,
                num_hidden_layers: None,
                device_positions: None,
            },
            &mut st.cache,
        )?;
        st.input_ids = Some(ids);
        st.attention_mask = Some(mask);
        let (b, _, vocab) = out.logits.dims3()?; // [b, 1, vocab]
        let data: Vec<f32> = out.logits.flatten_all()?.to_vec1()?;
        Ok(Scores::new(data, b, vocab))
    }
}

impl LogitsProcessor for UnbatchedClassifierFreeGuidanceLogitsProcessor<'_> {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for row in scores.rows_mut() {
            let l = log_softmax(row);
            row.copy_from_slice(&l);
        }
        if self.guidance_scale == 1.0 {
            return Ok(());
        }
        let uncond = self.unconditional_logits(input_ids)?;
        if uncond.vocab != scores.vocab {
            return Err(Error::input(format!(
                "the unconditional logits have vocab {} but the scores {}",
                uncond.vocab, scores.vocab
            )));
        }
        for i in 0..scores.batch {
            let u = log_softmax(uncond.row(i));
            for (s, u) in scores.row_mut(i).iter_mut().zip(u) {
                *s = self.guidance_scale * (*s - u) + u;
            }
        }
        Ok(())
    }

    fn type_name(&self) -> &'static str {
        "lmgen::generation::logits::classifier_free_guidance::UnbatchedClassifierFreeGuidanceLogitsProcessor"
    }
}
