//! One window of Whisper's generate: `GenerationMixin.generate` on the window with Whisper's
//! processors, retried at the next temperature for the rows whose text looks wrong (HF
//! `generate_with_fallback`, `_need_fallback`, `_retrieve_compression_ratio`,
//! `_retrieve_avg_logprobs`, and `WhisperNoSpeechDetection`'s probability of `<|nospeech|>`).

use std::io::Write;

use candle_core::Tensor;

use super::prompt::DecoderPrompt;
use super::segments::strip_padding;
use super::timestamps::WhisperTimeStampLogitsProcessor;
use crate::cache::{DynamicCache, EncoderDecoderCache};
use crate::error::{Error, Result};
use crate::generation::logits::{
    LogitsProcessor, Scores, SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor,
};
use crate::generation::stopping::{FinishReason, StoppingCriterion};
use crate::generation::strategies::sample::position_ids;
use crate::generation::streamer::TokenStreamer;
use crate::generation::{
    generate_seq2seq, EncoderInputs, GenerateOptions, GenerateOutput, GenerationConfig,
    Seq2SeqInput,
};
use crate::models::seq2seq::EncoderInput;
use crate::models::{CausalLM, ForwardInput, LogitsToKeep};
use crate::TokenId;

/// The settings every window's call shares.
#[derive(Debug, Clone)]
pub struct WindowSettings {
    /// `suppress_tokens` of the config, run as Whisper's processor.
    pub suppress_tokens: Option<Vec<TokenId>>,
    /// `begin_suppress_tokens` of the config, at each window's first step.
    pub begin_suppress_tokens: Option<Vec<TokenId>>,
    /// `WhisperTimeStampLogitsProcessor` (its `begin_index` set per window) when timestamps are on.
    pub timestamps: Option<WhisperTimeStampLogitsProcessor>,
    /// Temperatures tried in turn; `None` is greedy (or beam) search.
    pub temperatures: Vec<Option<f64>>,
    /// Retry rows whose tokens compress better than this.
    pub compression_ratio_threshold: Option<f64>,
    /// Retry rows whose average log-probability is lower.
    pub logprob_threshold: Option<f64>,
    /// With `no_speech_token`: a row whose `<|nospeech|>` probability passes this, and whose
    /// average log-probability is under `logprob_threshold`, is skipped.
    pub no_speech_threshold: Option<f64>,
    /// `<|nospeech|>`: `no_timestamps_token_id - 1`.
    pub no_speech_token: Option<TokenId>,
    /// `condition_on_prev_tokens`.
    pub condition_on_prev_tokens: bool,
    /// Length of the rows' own prompt (`<|startoftranscript|>` on), after any earlier text.
    pub init_len: usize,
    /// Padding of finished rows.
    pub pad_token_id: TokenId,
    /// EOS, removed from each window's tokens.
    pub eos_token_id: TokenId,
    /// The model's vocabulary (the compression ratio's integer width).
    pub vocab_size: usize,
}

/// What a window produced per row.
#[derive(Debug, Clone)]
pub struct WindowResult {
    /// The generated tokens, prompt, padding and final EOS removed.
    pub sequences: Vec<Vec<TokenId>>,
    /// Rows judged silent: no segment, the next window starts after this one.
    pub should_skip: Vec<bool>,
    /// Whether the next window of each row is conditioned on this text (a low temperature won).
    pub condition: Vec<bool>,
}

/// The caller's options, lent to each window's call.
pub struct Caller<'o, 'a> {
    /// The options of Whisper's `generate()`.
    pub options: &'o mut GenerateOptions<'a>,
    /// Calls made so far (each gets `seed + calls`).
    pub calls: u64,
}

/// HF `generate_with_fallback` over a window: `features` `[b, n_mels, frames]`, one decoder
/// prompt per row, all of one length.
pub fn generate_with_fallback(
    model: &dyn CausalLM,
    features: &Tensor,
    prompt: &DecoderPrompt,
    config: &mut GenerationConfig,
    settings: &WindowSettings,
    caller: &mut Caller<'_, '_>,
) -> Result<WindowResult> {
    let b = prompt.ids.len();
    let begin_index = prompt.ids.first().map_or(0, Vec::len);
    let no_speech = match (settings.no_speech_threshold, settings.no_speech_token) {
        (Some(_), Some(token)) => Some(no_speech_probs(
            model,
            features,
            prompt,
            token,
            settings.init_len,
        )?),
        _ => None,
    };
    let mut out = WindowResult {
        sequences: vec![Vec::new(); b],
        should_skip: vec![false; b],
        condition: vec![false; b],
    };
    // The rows still being decoded, as indices into the window's rows.
    let mut running: Vec<usize> = (0..b).collect();
    for (attempt, &temperature) in settings.temperatures.iter().enumerate() {
        // As transformers, these stay set on Whisper's config for the next windows (a fallback to
        // sampling leaves `num_beams` at 1).
        let sample = temperature.is_some_and(|t| t > 0.0);
        config.do_sample = Some(sample);
        config.temperature = Some(if sample {
            temperature.unwrap_or(1.0)
        } else {
            1.0
        });
        if sample {
            config.num_beams = Some(1);
        }
        let mut c = config.clone();
        c.suppress_tokens = None;
        c.begin_suppress_tokens = None;
        if settings.logprob_threshold.is_some() {
            c.output_scores = Some(true);
            c.return_dict_in_generate = Some(true);
        }
        let rows = index_rows(features, &running)?;
        let subset = DecoderPrompt {
            ids: running.iter().map(|&i| prompt.ids[i].clone()).collect(),
            mask: prompt
                .mask
                .as_ref()
                .map(|m| running.iter().map(|&i| m[i].clone()).collect()),
        };
        let result = call(model, &rows, subset, &c, settings, begin_index, caller)?;
        let mut retry = Vec::new();
        for (k, &i) in running.iter().enumerate() {
            let generated = result.generated(k);
            let (with_eos, tokens) =
                strip_padding(generated, settings.pad_token_id, settings.eos_token_id);
            let mut needs_fallback = false;
            if let Some(threshold) = settings.compression_ratio_threshold {
                needs_fallback |= compression_ratio(&with_eos, settings.vocab_size)? > threshold;
            }
            let mut logprob = None;
            if let Some(threshold) = settings.logprob_threshold {
                let scores = result.scores.as_deref().unwrap_or_default();
                let lp = avg_logprob(scores, k, &with_eos, temperature.unwrap_or(0.0));
                needs_fallback |= lp < threshold;
                logprob = Some(lp);
            }
            // transformers writes `should_skip` (and reads the no-speech probabilities, computed
            // once for the whole window) at the row's position `k` in this attempt, not at its
            // place in the window.
            out.should_skip[k] = false;
            if let (Some(threshold), Some(probs)) = (settings.no_speech_threshold, &no_speech) {
                let lp = logprob.ok_or_else(|| {
                    Error::config(
                        "`no_speech_threshold` needs `logprob_threshold` (transformers reads it)",
                    )
                })?;
                let threshold_lp = settings.logprob_threshold.unwrap_or(f64::NEG_INFINITY);
                if lp < threshold_lp && probs.get(k).is_some_and(|&p| f64::from(p) > threshold) {
                    needs_fallback = false;
                    out.should_skip[k] = true;
                }
            }
            out.sequences[i] = tokens;
            let low_temperature = temperature.is_none_or(|t| t < 0.5);
            out.condition[i] = settings.condition_on_prev_tokens && low_temperature;
            if needs_fallback {
                retry.push(i);
            }
        }
        if retry.is_empty() || attempt + 1 == settings.temperatures.len() {
            break;
        }
        running = retry;
    }
    Ok(out)
}

/// Rows `idx` of `t` along dimension 0.
fn index_rows(t: &Tensor, idx: &[usize]) -> Result<Tensor> {
    if idx.len() == t.dim(0)? && idx.iter().enumerate().all(|(k, &i)| k == i) {
        return Ok(t.clone());
    }
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Ok(t.index_select(&Tensor::new(ids, t.device())?, 0)?)
}

/// One `GenerationMixin.generate` call: Whisper's processors (`begin_suppress_tokens`,
/// `suppress_tokens`, timestamps, in that order), then the caller's.
fn call(
    model: &dyn CausalLM,
    features: &Tensor,
    prompt: DecoderPrompt,
    config: &GenerationConfig,
    settings: &WindowSettings,
    begin_index: usize,
    caller: &mut Caller<'_, '_>,
) -> Result<GenerateOutput> {
    let mut processors: Vec<Box<dyn LogitsProcessor + '_>> = Vec::new();
    if let Some(tokens) = &settings.begin_suppress_tokens {
        processors.push(Box::new(SuppressTokensAtBeginLogitsProcessor::new(
            tokens.clone(),
            begin_index,
        )));
    }
    if let Some(tokens) = &settings.suppress_tokens {
        processors.push(Box::new(SuppressTokensLogitsProcessor::new(tokens.clone())));
    }
    if let Some(t) = &settings.timestamps {
        processors.push(Box::new(WhisperTimeStampLogitsProcessor {
            begin_index,
            ..t.clone()
        }));
    }
    let o = &mut *caller.options;
    processors.extend(
        o.logits_processors
            .iter()
            .map(|p| Box::new(LentProcessor(p.as_ref())) as Box<dyn LogitsProcessor + '_>),
    );
    let options = GenerateOptions {
        seed: o.seed.map(|s| s.wrapping_add(caller.calls)),
        tokenizer: o.tokenizer,
        model_generation_config: o.model_generation_config,
        logits_processors: processors,
        stopping_criteria: o
            .stopping_criteria
            .iter_mut()
            .map(|c| Box::new(LentCriterion(c.as_mut())) as Box<dyn StoppingCriterion + '_>)
            .collect(),
        prefix_allowed_tokens_fn: o.prefix_allowed_tokens_fn.clone(),
        negative_prompt_ids: o.negative_prompt_ids.clone(),
        negative_prompt_attention_mask: o.negative_prompt_attention_mask.clone(),
        streamer: match o.streamer.as_deref_mut() {
            Some(s) => Some(s as &mut dyn TokenStreamer),
            None => None,
        },
        constraints: o.constraints.clone(),
        assistant_model: o.assistant_model,
        assistant_tokenizer: o.assistant_tokenizer,
    };
    caller.calls += 1;
    let input = Seq2SeqInput {
        encoder: EncoderInputs::Features(features.clone()),
        decoder_input_ids: Some(prompt.ids),
        decoder_attention_mask: prompt.mask,
    };
    generate_seq2seq(model, &input, config, options)
}

/// A caller's processor, lent to one call.
struct LentProcessor<'p>(&'p dyn LogitsProcessor);

impl LogitsProcessor for LentProcessor<'_> {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        self.0.process(input_ids, scores)
    }

    fn type_name(&self) -> &'static str {
        self.0.type_name()
    }
}

/// A caller's stopping criterion, lent to one call.
struct LentCriterion<'c>(&'c mut dyn StoppingCriterion);

impl StoppingCriterion for LentCriterion<'_> {
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        self.0.check(tokens)
    }
}

/// HF `_retrieve_compression_ratio`: the tokens as little-endian integers of
/// `log2(vocab) / 8 + 1` bytes, over their zlib-compressed size (level 6, Python's default; a
/// different deflate implementation may differ by a few bytes).
pub fn compression_ratio(tokens: &[TokenId], vocab_size: usize) -> Result<f64> {
    let width = ((vocab_size as f64).log2() / 8.0) as usize + 1;
    let bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|&t| u64::from(t).to_le_bytes().into_iter().take(width))
        .collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let compressed = z
        .write_all(&bytes)
        .and_then(|()| z.finish())
        .map_err(|e| Error::input(format!("zlib compression of the tokens failed: {e}")))?;
    Ok(bytes.len() as f64 / compressed.len().max(1) as f64)
}

/// HF `_retrieve_avg_logprobs`: the mean log-probability of `tokens` (EOS included) under row
/// `row` of each step's processed scores, scaled back by the temperature (greedy search counts as
/// 0, where transformers fails comparing `None > 0.0`).
pub fn avg_logprob(steps: &[Scores], row: usize, tokens: &[TokenId], temperature: f64) -> f64 {
    let rescale = if temperature > 0.0 { temperature } else { 1.0 } as f32;
    let n = steps.len().min(tokens.len());
    let tokens = &tokens[tokens.len() - n..];
    let mut sum = 0f64;
    for (step, &t) in steps[..n].iter().zip(tokens) {
        let scaled: Vec<f32> = step.row(row).iter().map(|&x| x * rescale).collect();
        let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + scaled.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
        sum += f64::from(scaled[t as usize] - lse);
    }
    sum / tokens.len().max(1) as f64
}

/// `WhisperNoSpeechDetection`: the probability of `<|nospeech|>` after `<|startoftranscript|>`
/// (the first prompt token after any earlier text) for each row of the window, from one forward
/// over the whole decoder prompt.
fn no_speech_probs(
    model: &dyn CausalLM,
    features: &Tensor,
    prompt: &DecoderPrompt,
    no_speech_token: TokenId,
    init_len: usize,
) -> Result<Vec<f32>> {
    let encoder = model
        .encoder()
        .ok_or_else(|| Error::input("no-speech detection needs an encoder-decoder model"))?;
    let encoded = encoder.encode(&EncoderInput::Features(
        &features.to_device(model.device())?,
    ))?;
    let mut cache = EncoderDecoderCache::new(Box::new(DynamicCache::new()), encoded);
    let t = prompt.ids.first().map_or(0, Vec::len);
    let ids = Tensor::new(prompt.ids.clone(), model.device())?; // [b, t]
                                                                // WhisperForConditionalGeneration.prepare_inputs_for_generation: cumsum(mask) - 1.
    let positions = Tensor::new(
        position_ids(prompt.mask.as_deref(), prompt.ids.len(), t),
        model.device(),
    )?;
    let out = model.forward(
        &ForwardInput {
            input_ids: &ids,
            position_ids: &positions,
            attention_mask: prompt.mask.as_deref(),
            logits_to_keep: LogitsToKeep::All,
            output_hidden_states: false,
            output_attentions: false,
            num_hidden_layers: None,
            device_positions: None,
        },
        &mut cache,
    )?;
    let at = t.saturating_sub(init_len);
    let logits: Vec<Vec<f32>> = out.logits.narrow(1, at, 1)?.squeeze(1)?.to_vec2()?; // [b, vocab]
    Ok(logits
        .iter()
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
            (row[no_speech_token as usize] - max).exp() / sum
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitive_text_compresses_well() {
        let varied: Vec<TokenId> = (0..40).map(|i| (i * 7919) % 50000).collect();
        let repeated: Vec<TokenId> = (0..40).map(|i| [11, 12][i % 2]).collect();
        let a = compression_ratio(&varied, 51865).unwrap();
        let b = compression_ratio(&repeated, 51865).unwrap();
        assert!(a < 1.5 && b > 2.4, "{a} {b}");
    }

    #[test]
    fn average_log_probability_counts_eos() {
        // Two steps over a vocabulary of 2, uniform: log(1/2) each.
        let steps = vec![Scores::new(vec![0.0, 0.0], 1, 2); 2];
        let lp = avg_logprob(&steps, 0, &[1, 0], 0.0);
        assert!((lp - 0.5f64.ln()).abs() < 1e-6);
    }
}
