//! HF `GenerationMixin._sample` (utils.py): the token-by-token loop shared by greedy search and
//! multinomial sampling.
//!
//! Per step: last-position logits -> logits processors (and warpers when sampling) -> next token
//! (`argmax`, or a draw from `softmax`) -> rows already finished get the pad id (only when an EOS
//! criterion exists) -> streamer -> stopping criteria per row. The prompt is run once (prefill),
//! then one token per step through the KV cache. `num_return_sequences` copies each prompt
//! (`repeat_interleave`: all copies of prompt 0 first), each copy sampled independently.

use candle_core::Tensor;

use super::{next_token_logits, prepare};
use crate::cache::{DynamicCache, KvCache};
use crate::error::{Error, Result};
use crate::generation::sampler::Sampler;
use crate::generation::stopping::FinishReason;
use crate::generation::{GenerateInput, GenerateOptions, GenerateOutput, GenerationConfig};
use crate::models::CausalLM;
use crate::TokenId;

/// Position ids from the mask, as transformers: `cumsum(mask) - 1`, padding positions set to 1.
pub fn position_ids(mask: Option<&[Vec<u8>]>, b: usize, t: usize) -> Vec<Vec<u32>> {
    match mask {
        None => vec![(0..t as u32).collect(); b],
        Some(mask) => mask
            .iter()
            .map(|row| {
                let mut n = 0u32;
                row.iter()
                    .map(|&m| {
                        n += m as u32;
                        if m == 0 {
                            1
                        } else {
                            n - 1
                        }
                    })
                    .collect()
            })
            .collect(),
    }
}

/// `repeat_interleave(n)` of the rows (HF `_expand_inputs_for_generation`).
pub(crate) fn expand(input: &GenerateInput, n: usize) -> GenerateInput {
    let rep = |rows: &Vec<Vec<TokenId>>| {
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(r.clone(), n))
            .collect()
    };
    GenerateInput {
        input_ids: rep(&input.input_ids),
        attention_mask: input.attention_mask.as_ref().map(|m| {
            m.iter()
                .flat_map(|r| std::iter::repeat_n(r.clone(), n))
                .collect()
        }),
    }
}

/// Greedy search or multinomial sampling over `input`.
pub fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    config: &GenerationConfig,
    options: GenerateOptions<'_>,
) -> Result<GenerateOutput> {
    let mut options = options;
    let seed = options.seed;
    let mut streamer = options.streamer.take();
    let mcfg = model.config();
    input.validate(mcfg.vocab_size)?;
    let do_sample = config.do_sample.unwrap_or(false);
    let input = match config.num_return_sequences.unwrap_or(1) {
        n if n > 1 => expand(input, n),
        _ => input.clone(),
    };
    let (b, t) = (input.input_ids.len(), input.input_ids[0].len());
    let lengths = prepare::lengths(model, config, t)?;
    if streamer.is_some() && b > 1 {
        return Err(Error::Input(format!(
            "a streamer needs batch size 1 (one prompt, `num_return_sequences` 1), as in transformers; got {b} rows"
        )));
    }
    let eos = config.eos_token_ids();
    let pad = config.pad_token_id_or_eos();
    let (processors, mut stopping) =
        prepare::processors_and_criteria(model, config, &input.input_ids, &lengths, &eos, options)?;
    let mut sampler = if do_sample {
        Sampler::multinomial(seed)
    } else {
        Sampler::Greedy
    };
    let output_scores = config.output_scores.unwrap_or(false);
    let output_logits = config.output_logits.unwrap_or(false);

    let device = model.device().clone();
    let mut cache = DynamicCache::new();
    let mut sequences = input.input_ids.clone();
    let mut mask: Option<Vec<Vec<u8>>> = input.attention_mask.clone();
    let mut positions = position_ids(mask.as_deref(), b, t);
    let mut next_pos: Vec<u32> = match &mask {
        None => vec![t as u32; b],
        Some(m) => m
            .iter()
            .map(|r| r.iter().map(|&x| x as u32).sum())
            .collect(),
    };
    if let Some(s) = streamer.as_mut() {
        s.put(&sequences[0])?;
    }
    let mut step_ids: Tensor = Tensor::new(sequences.clone(), &device)?; // [b, t]
    let mut finish: Vec<Option<FinishReason>> = vec![None; b];
    let mut all_scores = output_scores.then(Vec::new);
    let mut all_logits = output_logits.then(Vec::new);
    loop {
        let mut scores =
            next_token_logits(model, &step_ids, &positions, mask.as_deref(), &mut cache)?;
        if let Some(l) = all_logits.as_mut() {
            l.push(scores.clone());
        }
        processors.process(&sequences, &mut scores)?;
        let mut next = sampler.select(&scores)?;
        if let Some(s) = all_scores.as_mut() {
            s.push(scores);
        }
        if !eos.is_empty() {
            if let Some(pad) = pad {
                for (i, tok) in next.iter_mut().enumerate() {
                    if finish[i].is_some() {
                        *tok = pad;
                    }
                }
            }
        }
        if let Some(s) = streamer.as_mut() {
            s.put(&next)?;
        }
        for (i, &tok) in next.iter().enumerate() {
            sequences[i].push(tok);
            if finish[i].is_none() {
                finish[i] = stopping.check(&sequences[i]);
            }
        }
        if finish.iter().all(Option::is_some) {
            break;
        }
        // Finished rows are fed the pad id next; transformers fails there with an IndexError.
        if let Some(pad) = pad.filter(|&p| p as usize >= mcfg.vocab_size) {
            if finish.iter().any(Option::is_some) {
                return Err(pad_outside_vocabulary(pad, config, mcfg.vocab_size));
            }
        }
        if let Some(m) = mask.as_mut() {
            m.iter_mut().for_each(|r| r.push(1));
        }
        positions = next_pos.iter().map(|&p| vec![p]).collect();
        next_pos.iter_mut().for_each(|p| *p += 1);
        step_ids = Tensor::new(next.iter().map(|&x| vec![x]).collect::<Vec<_>>(), &device)?;
        // [b, 1]
    }
    if let Some(s) = streamer.as_mut() {
        s.end()?;
    }
    tracing::debug!(
        steps = sequences[0].len() - t,
        cached = cache.seq_len(),
        "decoding done"
    );
    Ok(GenerateOutput {
        sequences,
        scores: all_scores,
        logits: all_logits,
        finish_reasons: finish,
        prompt_len: t,
        sequences_scores: None,
        beam_indices: None,
        assisted: None,
    })
}

/// The error for a pad id the model cannot embed, naming the field it came from.
fn pad_outside_vocabulary(pad: TokenId, config: &GenerationConfig, vocab_size: usize) -> Error {
    let field = if config.pad_token_id.is_some() {
        "`pad_token_id`"
    } else {
        "`eos_token_id` (the pad id while `pad_token_id` is unset)"
    };
    Error::GenerationConfig(format!(
        "{field} {pad} is outside the vocabulary (vocab_size {vocab_size}); rows that finish early \
         are padded with it and fed to the model, so set `pad_token_id` to an id below {vocab_size}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_mask() {
        let m = vec![vec![0, 0, 1, 1], vec![1, 1, 1, 1]];
        assert_eq!(
            position_ids(Some(&m), 2, 4),
            vec![vec![1, 1, 0, 1], vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn expand_repeats_each_row_in_place() {
        let input = GenerateInput {
            input_ids: vec![vec![1, 2], vec![3, 4]],
            attention_mask: Some(vec![vec![1, 1], vec![0, 1]]),
        };
        let e = expand(&input, 2);
        assert_eq!(
            e.input_ids,
            vec![vec![1, 2], vec![1, 2], vec![3, 4], vec![3, 4]]
        );
        assert_eq!(e.attention_mask.unwrap()[2], vec![0, 1]);
    }
}
