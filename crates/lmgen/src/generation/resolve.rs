//! Parse, don't validate: [`GenerationConfig::resolve`] turns the merged config into a
//! [`ResolvedGeneration`] for one call (concrete lengths, EOS and pad ids, outputs, and the mode
//! with its own settings), or the error that names the field at fault. Every check of the config
//! happens here, once; the decoding loops and the engine read concrete fields.
//!
//! Port of what transformers' `generate()` does before it dispatches
//! (`_prepare_generation_config`, `_prepare_special_tokens`, `_prepare_generated_length`,
//! `get_generation_mode`, `_validate_generation_mode`) and of the checks at the top of each
//! `_sample` / `_beam_search` / ... loop.

use super::candidates::{DraftLength, DraftSchedule};
use super::config::{EarlyStopping, Lengths};
use super::constraints::Constraint;
use super::{GenerateOptions, GenerationConfig, GenerationMode};
use crate::cache::{CacheImplementation, EncoderDecoderCache, KvCache};
use crate::error::{Error, Result};
use crate::models::config::LayerType;
use crate::models::seq2seq::EncoderOutput;
use crate::models::ModelConfig;
use crate::TokenId;

/// One `generate()` call, resolved: what every decoding loop reads instead of the config.
#[derive(Debug, Clone)]
pub struct ResolvedGeneration {
    /// The decoding strategy and its settings.
    pub mode: Mode,
    /// Prompts in the batch.
    pub batch: usize,
    /// Padded prompt length.
    pub prompt_len: usize,
    /// Absolute `max_length` / `min_length`, prompt included.
    pub lengths: Lengths,
    /// `eos_token_id` as a list (empty when unset).
    pub eos_token_id: Vec<TokenId>,
    /// `pad_token_id`, else the first EOS id (`_prepare_special_tokens`).
    pub pad_token_id: Option<TokenId>,
    /// `pad_token_id` is unset and the pad id is the first EOS id.
    pub pad_from_eos: bool,
    /// Sequences returned per prompt (`num_return_sequences`).
    pub num_return_sequences: usize,
    /// Return the processed scores of each step (`output_scores`).
    pub output_scores: bool,
    /// Return the raw logits of each step (`output_logits`).
    pub output_logits: bool,
    /// Return every layer's hidden states of each step (`output_hidden_states` with
    /// `return_dict_in_generate`).
    pub output_hidden_states: bool,
    /// Return every attention layer's weights of each step (`output_attentions` with
    /// `return_dict_in_generate`).
    pub output_attentions: bool,
    /// Prefill the prompt in chunks of this many tokens (`prefill_chunk_size`, at least 1).
    pub prefill_chunk_size: Option<usize>,
    /// The KV cache to build (`cache_implementation`, `max_cache_len`, `cache_config`).
    pub cache: CacheImplementation,
    /// `assistant_confidence_threshold` when this model drafts for another (`is_assistant`):
    /// HF `ConfidenceCriteria` stops every row once row 0's token had a lower probability.
    pub confidence_threshold: Option<f32>,
    /// An encoder-decoder model's encoder output for this call's prompts, which every cache the
    /// loop builds carries ([`ResolvedGeneration::new_cache`]); `None` for a decoder-only model.
    pub encoder: Option<EncoderOutput>,
}

/// A decoding strategy with the settings it runs on (transformers' [`GenerationMode`], resolved).
#[derive(Debug, Clone)]
pub enum Mode {
    /// Argmax of the processed scores.
    Greedy,
    /// Multinomial sampling.
    Sample,
    /// Beam search, or beam sampling when `do_sample`.
    Beam(Beams),
    /// Diverse beam search.
    GroupBeam(GroupBeams),
    /// Constrained beam search.
    ConstrainedBeam(ConstrainedBeams),
    /// Contrastive search.
    Contrastive(Contrastive),
    /// DoLa decoding.
    Dola(Dola),
    /// Assisted (speculative) decoding.
    Assisted(Assisted),
}

/// Diverse beam search's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupBeams {
    /// `num_beams` and the shared beam settings.
    pub beams: Beams,
    /// `num_beam_groups`: at least 2, dividing `num_beams`.
    pub num_beam_groups: usize,
    /// `diversity_penalty`.
    pub diversity_penalty: f64,
}

/// Constrained beam search's settings.
#[derive(Debug, Clone)]
pub struct ConstrainedBeams {
    /// `num_beams` (at least 2) and the shared beam settings.
    pub beams: Beams,
    /// The caller's constraints, then those of `force_words_ids`; never empty.
    pub constraints: Vec<Constraint>,
}

/// Contrastive search's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contrastive {
    /// `penalty_alpha`, the degeneration penalty's weight.
    pub penalty_alpha: f64,
    /// `top_k` candidates per step (at most the vocabulary size).
    pub top_k: usize,
}

/// DoLa decoding's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dola {
    /// The candidate premature layers (hidden-state indices) `dola_layers` selects.
    pub premature_layers: Vec<usize>,
    /// Sample rather than take the argmax.
    pub do_sample: bool,
}

/// Assisted decoding's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assisted {
    /// Sample rather than take the argmax.
    pub do_sample: bool,
    /// Where the candidates come from.
    pub draft: Draft,
}

/// The settings every beam mode shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beams {
    /// `num_beams`.
    pub num_beams: usize,
    /// `early_stopping`.
    pub early_stopping: EarlyStopping,
    /// `length_penalty`.
    pub length_penalty: f64,
    /// Draw candidates by sampling (beam sample).
    pub do_sample: bool,
}

/// The draft of assisted decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draft {
    /// `num_assistant_tokens` and its schedule.
    pub length: DraftLength,
    /// `assistant_confidence_threshold`.
    pub confidence_threshold: f32,
    /// Which draft.
    pub source: DraftSource,
}

/// Where assisted decoding's candidates come from (HF `_get_candidate_generator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftSource {
    /// The model's own first layers (`assistant_early_exit`).
    EarlyExit {
        /// Layers run for the draft.
        layers: usize,
    },
    /// n-grams of the sequence itself (`prompt_lookup_num_tokens`).
    PromptLookup {
        /// `prompt_lookup_num_tokens`.
        num_tokens: usize,
        /// `max_matching_ngram_size`.
        max_matching_ngram_size: usize,
    },
    /// The assistant model of `GenerateOptions::assistant_model`.
    Model {
        /// `target_lookbehind` (universal assisted decoding).
        target_lookbehind: usize,
        /// `assistant_lookbehind` (universal assisted decoding).
        assistant_lookbehind: usize,
    },
}

impl Mode {
    /// transformers' name for the mode.
    pub fn generation_mode(&self) -> GenerationMode {
        match self {
            Mode::Greedy => GenerationMode::GreedySearch,
            Mode::Sample => GenerationMode::Sample,
            Mode::Beam(b) if b.do_sample => GenerationMode::BeamSample,
            Mode::Beam(_) => GenerationMode::BeamSearch,
            Mode::GroupBeam(_) => GenerationMode::GroupBeamSearch,
            Mode::ConstrainedBeam(_) => GenerationMode::ConstrainedBeamSearch,
            Mode::Contrastive(_) => GenerationMode::ContrastiveSearch,
            Mode::Dola(_) => GenerationMode::DolaGeneration,
            Mode::Assisted(_) => GenerationMode::AssistedGeneration,
        }
    }

    /// Whether the next token is drawn rather than the argmax (beam sampling draws candidates).
    pub fn do_sample(&self) -> bool {
        match self {
            Mode::Sample => true,
            Mode::Beam(b) => b.do_sample,
            Mode::Dola(Dola { do_sample, .. }) | Mode::Assisted(Assisted { do_sample, .. }) => {
                *do_sample
            }
            _ => false,
        }
    }

    /// The beam settings of a beam mode.
    pub fn beams(&self) -> Option<&Beams> {
        match self {
            Mode::Beam(beams)
            | Mode::GroupBeam(GroupBeams { beams, .. })
            | Mode::ConstrainedBeam(ConstrainedBeams { beams, .. }) => Some(beams),
            _ => None,
        }
    }
}

impl ResolvedGeneration {
    /// Copies of each prompt the loop runs: `num_beams` in beam modes, `num_return_sequences`
    /// otherwise (`_expand_inputs_for_generation`).
    pub fn copies(&self) -> usize {
        match self.mode.beams() {
            Some(beams) => beams.num_beams,
            None => self.num_return_sequences,
        }
    }

    /// Rows the model runs on: `batch * copies`.
    pub fn rows(&self) -> usize {
        self.batch * self.copies()
    }

    /// A new, empty cache of the resolved kind, with the encoder's output beside it for an
    /// encoder-decoder model.
    pub fn new_cache(&self) -> Box<dyn KvCache> {
        let cache = self.cache.build();
        match &self.encoder {
            Some(encoder) => Box::new(EncoderDecoderCache::new(cache, encoder.clone())),
            None => cache,
        }
    }
}

impl GenerationConfig {
    /// Resolves this (merged) config for `batch` prompts padded to `prompt_len` tokens on `model`,
    /// with `options`' assistant and constraints: the one place every setting is checked.
    ///
    /// Unset fields take transformers' defaults; settings lmgen has not built are
    /// [`Error::Unsupported`]; wrong values and settings that do not go together are
    /// [`Error::GenerationConfig`], naming the field.
    pub(crate) fn resolve(
        &self,
        model: &ModelConfig,
        batch: usize,
        prompt_len: usize,
        options: &GenerateOptions<'_>,
    ) -> Result<ResolvedGeneration> {
        self.validate()?;
        let has_assistant = options.assistant_model.is_some();
        self.check_implemented(has_assistant)?;
        let c = self.with_defaults();
        let num_return_sequences = c.num_return_sequences.unwrap_or(1);
        let generation_mode = if options.constraints.is_empty() {
            self.mode(has_assistant)
        } else {
            self.validate_constraints("constraints")?;
            GenerationMode::ConstrainedBeamSearch
        };
        let beams = Beams {
            num_beams: c.num_beams.unwrap_or(1).max(1),
            early_stopping: c.early_stopping.unwrap_or(EarlyStopping::False),
            length_penalty: c.length_penalty.unwrap_or(1.0),
            do_sample: c.do_sample == Some(true),
        };
        // transformers expands each prompt max(num_beams, num_return_sequences) times: 0 runs as
        // 1 outside the beam modes, where it has no sequence to return (and transformers fails).
        if num_return_sequences == 0 && generation_mode_is_beam(generation_mode) {
            return Err(Error::config(
                "`num_return_sequences` must be at least 1 with beam search, got 0",
            ));
        }
        let num_return_sequences = num_return_sequences.max(1);
        if generation_mode_is_beam(generation_mode) && num_return_sequences > beams.num_beams {
            return Err(Error::config(format!(
                "`num_return_sequences` ({num_return_sequences}) must be <= `num_beams` ({})",
                beams.num_beams
            )));
        }
        let mode = match generation_mode {
            GenerationMode::GreedySearch => Mode::Greedy,
            GenerationMode::Sample => Mode::Sample,
            GenerationMode::BeamSearch | GenerationMode::BeamSample => Mode::Beam(beams),
            GenerationMode::GroupBeamSearch => group_beam(&c, beams)?,
            GenerationMode::ConstrainedBeamSearch => constrained_beam(&c, beams, options)?,
            GenerationMode::ContrastiveSearch => contrastive(&c, model)?,
            GenerationMode::DolaGeneration => dola(&c, model, num_return_sequences)?,
            GenerationMode::AssistedGeneration => {
                assisted(&c, has_assistant, batch, num_return_sequences)?
            }
        };
        let eos_token_id = self.eos_token_ids();
        let return_dict = c.return_dict_in_generate == Some(true);
        let output_hidden_states = return_dict && c.output_hidden_states == Some(true);
        let output_attentions = return_dict && c.output_attentions == Some(true);
        step_outputs_available(&mode, output_hidden_states, output_attentions)?;
        let lengths = self.lengths(model, prompt_len)?;
        let cache = CacheImplementation::resolve(
            c.cache_implementation.as_deref(),
            lengths.max_length,
            c.max_cache_len,
            c.cache_config.as_ref(),
        )?;
        quantized_cache_fits(&cache, &mode, model)?;
        static_cache_fits(&cache, &mode, c.cache_implementation.as_deref())?;
        let confidence_threshold = confidence_threshold(&c, &mode)?;
        Ok(ResolvedGeneration {
            mode,
            batch,
            prompt_len,
            lengths,
            pad_token_id: self.pad_token_id_or_eos(),
            pad_from_eos: self.pad_token_id.is_none(),
            eos_token_id,
            num_return_sequences,
            output_scores: c.output_scores == Some(true),
            output_logits: c.output_logits == Some(true),
            output_hidden_states,
            output_attentions,
            prefill_chunk_size: prefill_chunk_size(&c)?,
            cache,
            confidence_threshold,
            encoder: None,
        })
    }

    /// `max_length` / `min_length` for a padded prompt of `t` tokens, refusing prompts the model
    /// cannot position (longer than `max_position_embeddings`) and, for learned positions,
    /// outputs past it.
    fn lengths(&self, model: &ModelConfig, t: usize) -> Result<Lengths> {
        if t > model.max_position_embeddings {
            return Err(Error::input(format!(
                "the prompt has {t} tokens but the model's `max_position_embeddings` is {}",
                model.max_position_embeddings
            )));
        }
        let lengths = self.resolve_lengths(t, Some(model.max_position_embeddings))?;
        if model.rope.is_none() && lengths.max_length > model.max_position_embeddings {
            return Err(Error::input(format!(
                "`max_length` {} exceeds `max_position_embeddings` {} of this model (learned positions); lower `max_new_tokens`",
                lengths.max_length, model.max_position_embeddings
            )));
        }
        Ok(lengths)
    }
}

/// `prefill_chunk_size`: at least one token (transformers' `torch.split` fails on 0), and a
/// cache to prefill into (transformers' `_prefill`: "Cannot use prefill chunking without a
/// cache").
fn prefill_chunk_size(c: &GenerationConfig) -> Result<Option<usize>> {
    match c.prefill_chunk_size {
        Some(0) => Err(Error::config(
            "`prefill_chunk_size` must be at least 1 (tokens per prefill chunk), got 0",
        )),
        Some(_) if c.use_cache == Some(false) => Err(Error::config(
            "Cannot use prefill chunking without a cache: `prefill_chunk_size` needs `use_cache=true`",
        )),
        size => Ok(size),
    }
}

/// HF `_get_stopping_criteria` adds `ConfidenceCriteria` when `is_assistant` and
/// `assistant_confidence_threshold > 0`. It reads the step's processed scores, which
/// transformers' `_sample` passes it only with `output_scores` (without them it fails with a
/// TypeError); lmgen reads them either way. Beam modes, which transformers would feed it beams'
/// scores, refuse it.
fn confidence_threshold(c: &GenerationConfig, mode: &Mode) -> Result<Option<f32>> {
    let threshold = c.assistant_confidence_threshold.unwrap_or(0.4);
    if c.is_assistant != Some(true) || threshold <= 0.0 {
        return Ok(None);
    }
    match mode {
        Mode::Greedy | Mode::Sample => Ok(Some(threshold as f32)),
        other => Err(Error::unsupported(format!(
            "`is_assistant` (the assistant's confidence stopping criterion) with {}: lmgen applies \
             it in greedy search and sampling only; set `is_assistant` to false",
            other.generation_mode().description()
        ))),
    }
}

/// Hidden states and attention weights per step are returned by greedy search and sampling
/// (transformers' `_sample`); other modes refuse them by name rather than return nothing.
fn step_outputs_available(mode: &Mode, hidden_states: bool, attentions: bool) -> Result<()> {
    let field = match (hidden_states, attentions) {
        (true, _) => "output_hidden_states",
        (false, true) => "output_attentions",
        (false, false) => return Ok(()),
    };
    match mode {
        Mode::Greedy | Mode::Sample => Ok(()),
        other => Err(Error::unsupported(format!(
            "`{field}` with {}: lmgen returns per-step hidden states and attentions from greedy \
             search and sampling only; set `{field}` to false or `num_beams` to 1 without an \
             assistant",
            other.generation_mode().description()
        ))),
    }
}

/// The quantized cache as transformers allows it: only models whose layers are all full
/// attention (`QuantizedCache.__init__`); and, since it cannot reorder, repeat or crop rows, not
/// in beam search, contrastive search or assisted decoding (transformers' `QuantizedLayer`
/// reorders and crops only its residual, which would mix rows).
fn quantized_cache_fits(
    cache: &CacheImplementation,
    mode: &Mode,
    model: &ModelConfig,
) -> Result<()> {
    if !matches!(cache, CacheImplementation::Quantized(_)) {
        return Ok(());
    }
    if let Some(other) = model
        .layer_types
        .iter()
        .find(|t| **t != LayerType::FullAttention)
    {
        return Err(Error::config(format!(
            "`QuantizedCache` is only supported for models with only full attention layers; this \
             model has {other:?} layers (`cache_implementation=\"quantized\"`)"
        )));
    }
    match mode {
        Mode::Greedy | Mode::Sample | Mode::Dola(_) => Ok(()),
        other => Err(Error::unsupported(format!(
            "`cache_implementation=\"quantized\"` with {}: the quantized cache cannot reorder, \
             repeat or crop its rows; use greedy search or sampling, or another cache",
            other.generation_mode().description()
        ))),
    }
}

/// transformers refuses assisted decoding over a static cache (`StaticCache` and its offloaded
/// and sliding variants: "assisted generate is not supported with Static cache classes"), whose
/// rows cannot take the draft tokens past `max_cache_len`; so does lmgen, before running.
/// Contrastive search (a transformers 4.47 mode) over a static cache is refused too: 4.47 fails
/// on it with a `TypeError` ("'StaticCache' object is not subscriptable", Llama, checked on the
/// golden checkpoints), and its last step's candidates need one slot past `max_length - 1`.
fn static_cache_fits(cache: &CacheImplementation, mode: &Mode, name: Option<&str>) -> Result<()> {
    let is_static = matches!(
        cache,
        CacheImplementation::Static { .. } | CacheImplementation::OffloadedStatic { .. }
    );
    let what = match mode {
        Mode::Assisted(_) => "assisted generate",
        Mode::Contrastive(_) => "contrastive search",
        _ => return Ok(()),
    };
    if is_static {
        return Err(Error::config(format!(
            "{what} is not supported with Static cache classes \
             (`cache_implementation=\"{}\"`); use the dynamic or offloaded cache",
            name.unwrap_or("static")
        )));
    }
    Ok(())
}

fn generation_mode_is_beam(mode: GenerationMode) -> bool {
    matches!(
        mode,
        GenerationMode::BeamSearch
            | GenerationMode::BeamSample
            | GenerationMode::GroupBeamSearch
            | GenerationMode::ConstrainedBeamSearch
    )
}

/// Diverse beam search: CFG cannot follow its per-group processing; the groups must divide the
/// beams.
fn group_beam(c: &GenerationConfig, beams: Beams) -> Result<Mode> {
    if c.guidance_scale.is_some_and(|g| g != 1.0) {
        return Err(Error::unsupported(
            "`guidance_scale` with group beam search: classifier-free guidance keeps one cache row per beam and cannot follow the per-group processing; unset `guidance_scale` or `num_beam_groups`",
        ));
    }
    let (nb, groups) = (beams.num_beams, c.num_beam_groups.unwrap_or(1));
    if nb < 2 || groups < 2 || groups > nb || nb % groups != 0 {
        return Err(Error::config(format!(
            "`num_beam_groups` has to be an integer smaller or equal than `num_beams` and `num_beams` has to be divisible by `num_beam_groups`, but is {groups} with `num_beams` being {nb}"
        )));
    }
    Ok(Mode::GroupBeam(GroupBeams {
        beams,
        num_beam_groups: groups,
        diversity_penalty: c.diversity_penalty.unwrap_or(0.0),
    }))
}

/// Constrained beam search: the caller's constraints ([`GenerateOptions::constraints`]) then
/// `force_words_ids`, at least one, with at least two beams.
fn constrained_beam(
    c: &GenerationConfig,
    beams: Beams,
    options: &GenerateOptions<'_>,
) -> Result<Mode> {
    if c.constraints.is_some() {
        return Err(Error::config(
            "`constraints` holds constraint objects, which a JSON config cannot carry: pass them as `GenerateOptions::constraints`, or use `force_words_ids`",
        ));
    }
    let mut constraints = options.constraints.clone();
    if let Some(words) = &c.force_words_ids {
        constraints.extend(Constraint::from_force_words_ids(words)?);
    }
    if constraints.is_empty() {
        return Err(Error::config(
            "constrained beam search needs at least one constraint",
        ));
    }
    if beams.num_beams < 2 {
        return Err(Error::config(format!(
            "`num_beams` has to be an integer strictly greater than 1 for constrained beam search (`force_words_ids` / `constraints`), but is {}",
            beams.num_beams
        )));
    }
    Ok(Mode::ConstrainedBeam(ConstrainedBeams {
        beams,
        constraints,
    }))
}

/// Contrastive search runs the `top_k` most likely tokens as candidates.
fn contrastive(c: &GenerationConfig, model: &ModelConfig) -> Result<Mode> {
    let top_k = c.top_k.unwrap_or(50);
    if top_k > model.vocab_size {
        return Err(Error::config(format!(
            "`top_k` ({top_k}) must be at most the vocabulary size ({}) in contrastive search, \
             which runs the `top_k` most likely tokens as candidates",
            model.vocab_size
        )));
    }
    Ok(Mode::Contrastive(Contrastive {
        penalty_alpha: c.penalty_alpha.unwrap_or(0.0),
        top_k,
    }))
}

/// DoLa: the premature layers `dola_layers` selects on this model.
fn dola(c: &GenerationConfig, model: &ModelConfig, num_return_sequences: usize) -> Result<Mode> {
    let layers = c
        .dola_layers()?
        .ok_or_else(|| Error::config("DoLa decoding needs `dola_layers`"))?;
    let premature_layers =
        layers.candidate_premature_layers(model.num_hidden_layers, model.tie_word_embeddings)?;
    if num_return_sequences > 1 {
        return Err(Error::unsupported(format!(
            "`num_return_sequences={num_return_sequences}` with DoLa decoding: transformers 4.47 ignores it there and \
             returns one sequence per prompt; set `num_return_sequences` to 1"
        )));
    }
    Ok(Mode::Dola(Dola {
        premature_layers,
        do_sample: c.do_sample == Some(true),
    }))
}

/// The limits of assisted decoding in transformers (`_validate_generation_mode`,
/// `_assisted_decoding`), plus classifier-free guidance, whose unconditional branch keeps a cache
/// of its own that rejected candidates would put out of step; then which draft
/// (`_get_candidate_generator`: early exit, else prompt lookup, else the assistant model).
fn assisted(
    c: &GenerationConfig,
    has_assistant: bool,
    batch: usize,
    num_return_sequences: usize,
) -> Result<Mode> {
    if num_return_sequences > 1 {
        return Err(Error::config(format!(
            "`num_return_sequences` has to be 1 with assisted decoding, got {num_return_sequences}"
        )));
    }
    if batch > 1 {
        return Err(Error::input(format!(
            "assisted decoding supports batch size 1 only (as transformers), got {batch} prompts; \
             generate them one at a time"
        )));
    }
    if c.use_cache == Some(false) {
        return Err(Error::config("assisted decoding requires `use_cache=true`"));
    }
    if c.guidance_scale.is_some_and(|g| g != 1.0) {
        return Err(Error::unsupported(
            "`guidance_scale` (classifier-free guidance) with assisted decoding; unset one of them",
        ));
    }
    let length = DraftLength {
        num_assistant_tokens: c.num_assistant_tokens.unwrap_or(20),
        schedule: DraftSchedule::parse(
            c.num_assistant_tokens_schedule
                .as_deref()
                .unwrap_or("constant"),
        )?,
    };
    if has_assistant && (c.assistant_early_exit.is_some() || c.prompt_lookup_num_tokens.is_some()) {
        return Err(Error::config(
            "an assistant model and `assistant_early_exit` / `prompt_lookup_num_tokens` are two \
             different drafts; give one",
        ));
    }
    let source = if let Some(layers) = c.assistant_early_exit {
        DraftSource::EarlyExit { layers }
    } else if let Some(num_tokens) = c.prompt_lookup_num_tokens {
        DraftSource::PromptLookup {
            num_tokens,
            max_matching_ngram_size: c.max_matching_ngram_size.unwrap_or(2),
        }
    } else if c.use_mtp == Some(true) {
        return Err(Error::unsupported(
            "`use_mtp` (multi-token-prediction heads as the draft): none of the architectures \
             lmgen implements has them; set it to false",
        ));
    } else {
        DraftSource::Model {
            target_lookbehind: c.target_lookbehind.unwrap_or(10),
            assistant_lookbehind: c.assistant_lookbehind.unwrap_or(10),
        }
    };
    Ok(Mode::Assisted(Assisted {
        do_sample: c.do_sample == Some(true),
        draft: Draft {
            length,
            confidence_threshold: c.assistant_confidence_threshold.unwrap_or(0.4) as f32,
            source,
        },
    }))
}
