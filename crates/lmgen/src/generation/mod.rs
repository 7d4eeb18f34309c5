//! `generate()`: generation config, logits processors, stopping criteria and decoding strategies.

pub mod candidates;
pub mod config;
pub mod constraints;
pub(crate) mod context;
pub(crate) mod device_argmax;
pub mod encoder_decoder;
pub mod logits;
pub(crate) mod memory;
mod options;
pub(crate) mod resolve;
pub mod sampler;
pub mod stop_strings;
pub mod stopping;
pub mod strategies;
pub mod streamer;
pub mod structured;
mod token_healing;
pub mod whisper;

use crate::error::{Error, Result};
use crate::models::CausalLM;
use crate::TokenId;

pub use config::GenerationConfig;
pub(crate) use config::GenerationMode;
pub use encoder_decoder::{generate_seq2seq, EncoderInputs, Seq2SeqInput};
pub use logits::{LogitsProcessor, LogitsProcessorList, Scores};
pub use options::GenerateOptions;
pub(crate) use resolve::{Mode, ResolvedGeneration};

use context::{GenerationContext, Rows, StopVocabulary};
pub use stopping::{FinishReason, StoppingCriterion};

/// A batch of prompts padded to one length: on the left for a decoder-only model, on either side
/// for an encoder-decoder model's encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateInput {
    /// `[b, t]` token ids.
    pub input_ids: Vec<Vec<TokenId>>,
    /// `[b, t]` 1 for real tokens, 0 for padding; `None` means no padding.
    pub attention_mask: Option<Vec<Vec<u8>>>,
}

impl GenerateInput {
    /// One unpadded prompt.
    pub fn single(ids: Vec<TokenId>) -> Self {
        Self {
            input_ids: vec![ids],
            attention_mask: None,
        }
    }

    /// Left-pads prompts of different lengths with `pad_token_id`, as a tokenizer with
    /// `padding_side="left"` does for generation.
    pub fn left_padded(prompts: Vec<Vec<TokenId>>, pad_token_id: TokenId) -> Self {
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(prompts.len());
        let mut mask = Vec::with_capacity(prompts.len());
        for p in prompts {
            let pad = t - p.len();
            mask.push([vec![0u8; pad], vec![1u8; p.len()]].concat());
            input_ids.push([vec![pad_token_id; pad], p].concat());
        }
        let padded = mask.iter().any(|m| m.contains(&0));
        Self {
            input_ids,
            attention_mask: padded.then_some(mask),
        }
    }

    /// Right-pads prompts of different lengths with `pad_token_id`, as the tokenizers of
    /// encoder-decoder models (T5, BART, Marian: `padding_side="right"`) pad an encoder batch.
    pub fn right_padded(prompts: Vec<Vec<TokenId>>, pad_token_id: TokenId) -> Self {
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(prompts.len());
        let mut mask = Vec::with_capacity(prompts.len());
        for p in prompts {
            let pad = t - p.len();
            mask.push([vec![1u8; p.len()], vec![0u8; pad]].concat());
            input_ids.push([p, vec![pad_token_id; pad]].concat());
        }
        let padded = mask.iter().any(|m| m.contains(&0));
        Self {
            input_ids,
            attention_mask: padded.then_some(mask),
        }
    }

    /// Checks shapes and values; returns `(batch, prompt_len)`.
    pub(crate) fn validate(&self, vocab_size: usize) -> Result<(usize, usize)> {
        let b = self.input_ids.len();
        if b == 0 {
            return Err(Error::input(
                "`input_ids` is empty: pass at least one prompt",
            ));
        }
        let t = self.input_ids[0].len();
        if t == 0 {
            return Err(Error::input(
                "a prompt has no tokens; generation needs at least one",
            ));
        }
        if let Some(i) = self.input_ids.iter().position(|r| r.len() != t) {
            return Err(Error::input(format!(
                "`input_ids` rows must have one length (left-pad them): row 0 has {t}, row {i} has {}",
                self.input_ids[i].len()
            )));
        }
        for (i, row) in self.input_ids.iter().enumerate() {
            if let Some(&id) = row.iter().find(|&&id| id as usize >= vocab_size) {
                return Err(Error::input(format!(
                    "token id {id} in row {i} is outside the vocabulary (vocab_size {vocab_size})"
                )));
            }
        }
        if let Some(mask) = &self.attention_mask {
            if mask.len() != b || mask.iter().any(|r| r.len() != t) {
                return Err(Error::input(format!(
                    "`attention_mask` must have the shape of `input_ids` [{b}, {t}]"
                )));
            }
            if mask.iter().flatten().any(|&m| m > 1) {
                return Err(Error::input("`attention_mask` values must be 0 or 1"));
            }
            if let Some(i) = mask.iter().position(|r| r.iter().all(|&m| m == 0)) {
                return Err(Error::input(format!(
                    "`attention_mask` row {i} has no real token"
                )));
            }
        }
        Ok((b, t))
    }
}

/// What `generate()` returns (HF `GenerateDecoderOnlyOutput`).
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// `[b, prompt + generated]`, finished rows padded with the pad id.
    pub sequences: Vec<Vec<TokenId>>,
    /// Processed scores of each step (`output_scores`), `[steps][b, vocab]`.
    pub scores: Option<Vec<Scores>>,
    /// Raw logits of each step (`output_logits`), `[steps][b, vocab]`.
    pub logits: Option<Vec<Scores>>,
    /// Every layer's hidden states of each step (`output_hidden_states` with
    /// `return_dict_in_generate`), as transformers' `hidden_states`: `[steps][layers + 1]` of
    /// `[b, t_step, hidden]` in the compute dtype, where `t_step` is the prompt length at the
    /// first step (the last chunk's with `prefill_chunk_size`) and 1 after it; per step the
    /// embedding output, then each layer's output, the last one after the final norm.
    pub hidden_states: Option<Vec<Vec<candle_core::Tensor>>>,
    /// Every attention layer's weights of each step (`output_attentions` with
    /// `return_dict_in_generate`), as transformers' `attentions`: `[steps][attention layers]` of
    /// `[b, heads, t_step, past + t_step]` f32. Empty per step unless the model was loaded with
    /// eager attention ([`crate::models::AttnImplementation::Eager`]), as transformers' `sdpa`
    /// returns none.
    pub attentions: Option<Vec<Vec<candle_core::Tensor>>>,
    /// Why each row stopped.
    pub finish_reasons: Vec<Option<FinishReason>>,
    /// Padded prompt length: `sequences[i][prompt_len..]` are the generated tokens.
    pub prompt_len: usize,
    /// Beam search: the final length-penalised score of each returned sequence, `[b * num_return_sequences]`.
    pub sequences_scores: Option<Vec<f32>>,
    /// Beam search: the flat beam row each generated token came from, `[b * num_return_sequences][generated]`,
    /// `-1` padded (HF `beam_indices`).
    pub beam_indices: Option<Vec<Vec<i64>>>,
    /// Assisted decoding: how many candidate tokens were drafted and accepted.
    pub assisted: Option<candidates::AssistedStats>,
}

impl GenerateOutput {
    /// The generated tokens of row `i` (padding after EOS included, as in `sequences`).
    pub fn generated(&self, i: usize) -> &[TokenId] {
        &self.sequences[i][self.prompt_len..]
    }

    /// HF `compute_transition_scores`: the score of each chosen token (from its beam's row when
    /// `beam_indices` is set, 0 after a beam finished), `[b][steps]`; with `normalize_logits`,
    /// scores are log-softmaxed first. Needs `scores`.
    pub fn compute_transition_scores(&self, normalize_logits: bool) -> Result<Vec<Vec<f32>>> {
        let steps = self
            .scores
            .as_ref()
            .ok_or_else(|| Error::input("transition scores need `output_scores: true`"))?;
        if let Some(beams) = &self.beam_indices {
            return Ok(self.beam_transition_scores(steps, beams, normalize_logits));
        }
        let b = self.sequences.len();
        let mut out = vec![Vec::with_capacity(steps.len()); b];
        for (s, step) in steps.iter().enumerate() {
            for (i, row_out) in out.iter_mut().enumerate() {
                let row = step.row(i);
                let tok = self.sequences[i][self.prompt_len + s] as usize;
                let mut v = row[tok];
                if normalize_logits {
                    v -= log_sum_exp(row);
                }
                row_out.push(v);
            }
        }
        Ok(out)
    }
}

impl GenerateOutput {
    /// `compute_transition_scores` with `beam_indices`: step `s` of row `i` reads the scores of the
    /// beam row `beam_indices[i][s]`; steps after a beam finished (`-1`) are 0.
    fn beam_transition_scores(
        &self,
        steps: &[Scores],
        beams: &[Vec<i64>],
        normalize_logits: bool,
    ) -> Vec<Vec<f32>> {
        beams
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.iter()
                    .enumerate()
                    .map(|(s, &beam)| {
                        let (Ok(beam), Some(step)) = (usize::try_from(beam), steps.get(s)) else {
                            return 0.0;
                        };
                        let scores = step.row(beam);
                        let tok = self.sequences[i][self.prompt_len + s] as usize;
                        let norm = if normalize_logits {
                            log_sum_exp(scores)
                        } else {
                            0.0
                        };
                        scores[tok] - norm
                    })
                    .collect()
            })
            .collect()
    }
}

/// `log(sum(exp(row)))`, stable; `-inf` for an all `-inf` row.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

/// HF `GenerationMixin.generate()` for decoder-only models.
///
/// `config` is the merged configuration (checkpoint's `generation_config.json` updated with the
/// caller's fields); unset fields take transformers' defaults. Settings lmgen has not built yet
/// are rejected, never ignored.
pub fn generate(
    model: &dyn CausalLM,
    input: &GenerateInput,
    config: &GenerationConfig,
) -> Result<GenerateOutput> {
    generate_with(model, input, config, GenerateOptions::default())
}

/// [`generate`] with the other arguments of transformers' `generate()`: seed, tokenizer (for
/// `stop_strings` and `token_healing`), user logits processors and stopping criteria, streamer, CFG negative prompt.
pub fn generate_with(
    model: &dyn CausalLM,
    input: &GenerateInput,
    config: &GenerationConfig,
    mut options: GenerateOptions<'_>,
) -> Result<GenerateOutput> {
    if model.encoder().is_some() {
        // The prompt is the encoder's input (HF `generate(input_ids)` on T5 or BART).
        return generate_seq2seq(model, &Seq2SeqInput::ids(input.clone()), config, options);
    }
    let (batch, prompt_len) = input.validate(model.config().vocab_size)?;
    let mut g = config.resolve(model.config(), batch, prompt_len, &options)?;
    // The encoder processors read the prompt rows as given: not expanded, not healed
    // (transformers' `inputs_tensor`).
    let prompt_ids = &input.input_ids;
    let mut input = match g.copies() {
        1 => input.clone(),
        n => strategies::sample::expand(input, n),
    };
    if config.token_healing == Some(true) {
        // After the expansion and before the lengths, as transformers' generate().
        input = token_healing::heal_tokens(model, &input, &options)?;
        let (_, healed_len) = input.validate(model.config().vocab_size)?;
        g = config.resolve(model.config(), batch, healed_len, &options)?;
    }
    let padded = input
        .attention_mask
        .as_ref()
        .is_some_and(|rows| rows.iter().flatten().any(|&m| m == 0));
    let prompt = match padded {
        true => memory::Prompt::Masked,
        false => memory::Prompt::Unpadded,
    };
    memory::plan_prefill(model, &mut g, prompt);
    memory::check_fits(model, &g, prompt)?;
    let assistant = strategies::assisted::Assistant {
        model: options.assistant_model.take(),
        tokenizer: options.tokenizer,
        assistant_tokenizer: options.assistant_tokenizer.take(),
        encoder_output: None,
    };
    let stop_vocabulary = options.tokenizer.map(StopVocabulary::Tokenizer);
    let rows = Rows::Generate {
        model,
        prompt_ids: Some(prompt_ids),
    };
    let ctx = GenerationContext::new(&g, config, options, rows, stop_vocabulary)?;
    dispatch(model, &input, &g, ctx, assistant)
}

/// Runs the decoding loop of `g`'s mode over the (expanded) rows of `input`.
fn dispatch(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    assistant: strategies::assisted::Assistant<'_>,
) -> Result<GenerateOutput> {
    let input = input.clone();
    match &g.mode {
        Mode::Greedy | Mode::Sample => strategies::sample::run(model, &input, g, ctx),
        Mode::Beam(beams) => strategies::beam::run(model, &input, g, ctx, beams),
        Mode::GroupBeam(s) => strategies::group_beam::run(model, &input, g, ctx, s),
        Mode::ConstrainedBeam(s) => strategies::constrained_beam::run(model, &input, g, ctx, s),
        Mode::Contrastive(s) => strategies::contrastive::run(model, &input, g, ctx, s),
        Mode::Dola(s) => strategies::dola::run(model, &input, g, ctx, s),
        Mode::Assisted(s) => strategies::assisted::run(model, &input, g, ctx, s, assistant),
    }
}
