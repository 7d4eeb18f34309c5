//! Whisper's own `generate()` (HF `WhisperGenerationMixin.generate`,
//! `models/whisper/generation_whisper.py`, transformers 5.17): speech in, text tokens and timed
//! segments out.
//!
//! The audio is decoded window by window, each window `2 * max_source_positions` feature frames
//! (30 s): the decoder prompt is `<|startoftranscript|>`, the language (given, or detected once
//! from the first window), the task and `<|notimestamps|>` unless timestamps are asked for
//! ([`prompt`]); each window is one call of `GenerationMixin.generate`
//! ([`generate_seq2seq`](crate::generation::generate_seq2seq)) with Whisper's processors
//! (`begin_suppress_tokens`, `suppress_tokens`, and [`WhisperTimeStampLogitsProcessor`] with
//! timestamps), retried at higher temperatures when asked to ([`fallback`]); its tokens are cut
//! into segments at timestamp pairs and the next window starts at the last closed pair
//! ([`segments`]). Audio of one window (short-form) without timestamps runs once, unless the
//! model emits timestamp pairs anyway (transformers then decodes the rest of the window too).
//!
//! As in transformers 5.17, the returned `sequences` hold the segments' tokens only: no decoder
//! prompt, no EOS, timestamps included when the model emitted them, right-padded with
//! `pad_token_id`.
//!
//! Deliberate differences: `language` is a list whose single entry applies to every row (a
//! string in transformers); `return_dict_in_generate` outputs (scores, hidden states) and
//! `return_token_timestamps` are not returned.

pub mod config;
mod fallback;
pub mod languages;
pub mod prompt;
pub mod segments;
pub mod text;
pub mod timestamps;

use candle_core::Tensor;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::generation::{GenerateOptions, GenerationConfig};
use crate::models::CausalLM;
use crate::TokenId;

pub use config::WhisperGenerationConfig;
pub use prompt::detect_language;
pub use segments::Segment;
pub use timestamps::WhisperTimeStampLogitsProcessor;

use fallback::{Caller, WindowSettings};
use prompt::{PromptSpec, WindowPrompt};
use segments::Timing;

/// Where the caller's `prompt_ids` go (HF `prompt_condition_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptConditionType {
    /// Before the first window only (`"first-segment"`, the default).
    #[default]
    FirstSegment,
    /// Before every window, in place of `<|startofprev|>` (`"all-segments"`; needs
    /// `condition_on_prev_tokens`).
    AllSegments,
}

/// The arguments of Whisper's `generate()` that are not `GenerationConfig` fields; each unset
/// one falls back to the checkpoint's `generation_config.json` (its Whisper keys), then to
/// transformers' default.
#[derive(Debug, Clone, Default)]
pub struct WhisperOptions {
    /// One language for every row, or one per row: a code (`"de"`), a name (`"german"`) or a
    /// token (`"<|de|>"`). Unset on a multilingual checkpoint: detected per row.
    pub language: Option<Vec<String>>,
    /// `"transcribe"` or `"translate"` (to English).
    pub task: Option<String>,
    /// Predict timestamps and cut the text into timed segments (always on for audio longer
    /// than one window).
    pub return_timestamps: Option<bool>,
    /// Override the checkpoint's `is_multilingual`.
    pub is_multilingual: Option<bool>,
    /// Text to condition on, as the processor's `get_prompt_ids` gives it (`<|startofprev|>`
    /// first).
    pub prompt_ids: Option<Vec<TokenId>>,
    /// Where `prompt_ids` go (default: before the first window).
    pub prompt_condition_type: Option<PromptConditionType>,
    /// Condition each window on the text of the ones before it.
    pub condition_on_prev_tokens: Option<bool>,
    /// Temperatures tried in turn while a window's text fails the thresholds; unset: greedy (or
    /// beam) search once. A temperature above 0 samples.
    pub temperature: Option<Vec<f64>>,
    /// Retry a window whose tokens compress better than this with zlib (repetitive text).
    pub compression_ratio_threshold: Option<f64>,
    /// Retry a window whose average token log-probability is below this.
    pub logprob_threshold: Option<f64>,
    /// Skip a window whose `<|nospeech|>` probability is above this and whose average
    /// log-probability is below `logprob_threshold`.
    pub no_speech_threshold: Option<f64>,
    /// Feature frames of each row's real audio (HF `attention_mask.sum(-1)`); needed for a
    /// batch of long audio padded to the longest.
    pub num_frames: Option<Vec<usize>>,
    /// Seconds per timestamp step (default 0.02).
    pub time_precision: Option<f64>,
    /// Seconds per feature frame (default 0.01).
    pub time_precision_features: Option<f64>,
}

/// What Whisper's `generate()` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperOutput {
    /// Per row (`batch * num_return_sequences`), the segments' tokens joined, right-padded with
    /// `pad_token_id` (transformers' return value).
    pub sequences: Vec<Vec<TokenId>>,
    /// Per row, its timed segments (HF `segments`).
    pub segments: Vec<Vec<Segment>>,
    /// Per row, the decoder prompt each window started from (`<|startoftranscript|>`, language,
    /// task, `<|notimestamps|>`): the detected language is its second token.
    pub init_tokens: Vec<Vec<TokenId>>,
}

/// Receives each row's segments as each window yields them (before the end of the audio).
pub trait SegmentSink {
    /// `segments` of row `row`, in order, none of them seen before.
    fn push(&mut self, row: usize, segments: &[Segment]) -> Result<()>;
}

/// A sink that keeps nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSink;

impl SegmentSink for NoSink {
    fn push(&mut self, _: usize, _: &[Segment]) -> Result<()> {
        Ok(())
    }
}

impl<F: FnMut(usize, &[Segment]) -> Result<()>> SegmentSink for F {
    fn push(&mut self, row: usize, segments: &[Segment]) -> Result<()> {
        self(row, segments)
    }
}

/// HF `WhisperForConditionalGeneration.generate`: `input_features` `[b, n_mels, frames]` (log-mel
/// features, padded to one window, or longer for long-form), `config` the checkpoint's
/// generation config merged with the caller's fields, `options` the other arguments of
/// `generate()` (lent to every window's call; a seed `s` seeds call `k` with `s + k`).
pub fn generate(
    model: &dyn CausalLM,
    input_features: &Tensor,
    whisper: &WhisperOptions,
    config: &GenerationConfig,
    options: GenerateOptions<'_>,
) -> Result<WhisperOutput> {
    generate_streaming(model, input_features, whisper, config, options, &mut NoSink)
}

/// [`generate`], handing each window's new segments to `sink` as they are found.
pub fn generate_streaming(
    model: &dyn CausalLM,
    input_features: &Tensor,
    whisper: &WhisperOptions,
    config: &GenerationConfig,
    mut options: GenerateOptions<'_>,
    sink: &mut dyn SegmentSink,
) -> Result<WhisperOutput> {
    let spec = model.config().whisper.as_deref().ok_or_else(|| {
        Error::input(format!(
            "Whisper's generate needs a Whisper model, got `{}`",
            model.config().architecture.model_type()
        ))
    })?;
    let (batch, _, total_frames) = input_features.dims3().map_err(|_| {
        Error::input(format!(
            "`input_features` must be [batch, n_mels, frames], got {:?}",
            input_features.dims()
        ))
    })?;
    if batch == 0 {
        return Err(Error::input(
            "`input_features` is empty: pass at least one row",
        ));
    }
    let input_stride = 2;
    let num_segment_frames = spec.input_frames();
    let max_target = model.config().max_position_embeddings;
    let is_shortform = total_frames <= num_segment_frames;
    let w = WhisperGenerationConfig::from_config(config)?;

    // _set_return_timestamps
    let mut return_timestamps = whisper.return_timestamps.or(w.return_timestamps);
    if !is_shortform {
        if return_timestamps == Some(false) {
            return Err(Error::config(format!(
                "You have passed more than {num_segment_frames} mel input features (> 30 seconds) which \
                 automatically enables long-form generation which requires the model to predict \
                 timestamp tokens. Please either pass `return_timestamps=True` or make sure to pass no \
                 more than {num_segment_frames} mel input features."
            )));
        }
        return_timestamps = Some(true);
    }
    let return_timestamps = return_timestamps.unwrap_or(false);
    if return_timestamps && w.no_timestamps_token_id.is_none() {
        return Err(Error::config(
            "You are trying to return timestamps, but the generation config is not properly set. \
             Make sure to initialize the generation config with the correct attributes that are \
             needed such as `no_timestamps_token_id`.",
        ));
    }
    let timestamp_begin = w
        .no_timestamps_token_id
        .map_or(model.config().vocab_size as TokenId + 1, |t| t + 1);

    // _set_language_and_task
    let is_multilingual = whisper.is_multilingual.or(w.is_multilingual);
    if is_multilingual == Some(false) && (whisper.task.is_some() || whisper.language.is_some()) {
        return Err(Error::config(
            "Cannot specify `task` or `language` for an English-only model. If the model is intended \
             to be multilingual, pass `is_multilingual=True` to generate, or update the generation \
             config.",
        ));
    }
    let file_language = w.language.clone().map(|l| vec![l]);
    let languages = whisper.language.clone().or(file_language);
    let task = whisper.task.clone().or(w.task.clone());

    // _set_thresholds_and_condition, _set_prompt_condition_type
    let condition_on_prev_tokens = whisper
        .condition_on_prev_tokens
        .or(w.condition_on_prev_tokens)
        .unwrap_or(false);
    let prompt_condition = whisper.prompt_condition_type.unwrap_or_default();
    if prompt_condition == PromptConditionType::AllSegments && !condition_on_prev_tokens {
        return Err(Error::config(
            "Make sure to set `condition_on_prev_tokens=True` when setting \
             `prompt_condition_type='all-segments'`.",
        ));
    }
    let logprob_threshold = whisper.logprob_threshold.or(w.logprob_threshold);
    if logprob_threshold.is_some() && config.num_beams.unwrap_or(1) > 1 {
        return Err(Error::unsupported(
            "`logprob_threshold` with beam search (the scores of each beam's tokens) is not built \
             for Whisper yet",
        ));
    }

    let decoder_start_token_id = token_id(config.decoder_start_token_id.as_ref())?;
    let features = input_features.to_device(model.device())?;
    let init = prompt::init_tokens(
        model,
        &features,
        &PromptSpec {
            whisper: &w,
            decoder_start_token_id,
            task: task.as_deref(),
            languages: languages.as_deref(),
            return_timestamps,
        },
        num_segment_frames,
    )?;

    let eos_token_id = config
        .eos_token_ids()
        .first()
        .copied()
        .or(config.bos_token_id)
        .ok_or_else(|| Error::config("Whisper's generate needs `eos_token_id`"))?;
    let pad_token_id = config.pad_token_id_or_eos().unwrap_or(eos_token_id);
    let temperatures = match &whisper.temperature {
        Some(t) if t.is_empty() => {
            return Err(Error::config("`temperature` must hold at least one value"))
        }
        Some(t) => t.iter().map(|&t| Some(t)).collect(),
        None => vec![None],
    };
    let settings = WindowSettings {
        suppress_tokens: config.suppress_tokens.clone(),
        begin_suppress_tokens: config.begin_suppress_tokens.clone(),
        timestamps: return_timestamps
            .then(|| {
                w.no_timestamps_token_id
                    .map(|nt| WhisperTimeStampLogitsProcessor {
                        no_timestamps_token_id: nt,
                        timestamp_begin,
                        eos_token_id,
                        begin_index: 0,
                        max_initial_timestamp_index: w.max_initial_timestamp_index,
                        detect_timestamp_from_logprob: w
                            .detect_timestamp_from_logprob
                            .unwrap_or(true),
                    })
            })
            .flatten(),
        temperatures,
        compression_ratio_threshold: whisper
            .compression_ratio_threshold
            .or(w.compression_ratio_threshold),
        logprob_threshold,
        no_speech_threshold: whisper.no_speech_threshold.or(w.no_speech_threshold),
        no_speech_token: w.no_timestamps_token_id.map(|t| t - 1),
        condition_on_prev_tokens,
        init_len: init.first().map_or(0, Vec::len),
        pad_token_id,
        eos_token_id,
        vocab_size: model.config().vocab_size,
    };

    // _retrieve_max_frames_and_seek
    let max_frames: Vec<usize> = if batch > 1 && !is_shortform {
        let frames = whisper.num_frames.clone().ok_or_else(|| {
            Error::input(
                "When doing batched long-form audio transcription, make sure to pass an \
                 `attention_mask` (`num_frames`, each row's real feature frames).",
            )
        })?;
        if frames.len() != batch {
            return Err(Error::input(format!(
                "`num_frames` has {} entries but `input_features` has {batch} rows",
                frames.len()
            )));
        }
        frames
    } else {
        vec![total_frames; batch]
    };

    // _expand_variables_for_generation
    let copies = config.num_return_sequences.unwrap_or(1).max(1);
    let mut gc = config.clone();
    gc.max_length = Some(config.max_length.unwrap_or(20));
    let (features, max_frames, init) = if copies > 1 {
        gc.num_return_sequences = Some(1);
        let idx: Vec<u32> = (0..batch as u32)
            .flat_map(|i| std::iter::repeat_n(i, copies))
            .collect();
        let repeat = |v: &[usize]| {
            v.iter()
                .flat_map(|&x| std::iter::repeat_n(x, copies))
                .collect()
        };
        (
            features.index_select(&Tensor::new(idx, features.device())?, 0)?,
            repeat(&max_frames),
            init.iter()
                .flat_map(|p| std::iter::repeat_n(p.clone(), copies))
                .collect::<Vec<_>>(),
        )
    } else {
        (features, max_frames, init)
    };
    let rows = max_frames.len();

    // _prepare_segments: the caller's prompt is each row's first segment ("first-segment").
    let prompt_ids = whisper.prompt_ids.as_deref();
    let prev_sot = w.prev_sot_token_id.or_else(|| {
        config
            .suppress_tokens
            .as_deref()
            .filter(|s| s.len() >= 2)
            .map(|s| s[s.len() - 2])
    });
    let prompt_segment = match (prompt_ids, prompt_condition) {
        (Some(p), PromptConditionType::FirstSegment) => {
            let tokens = match p.split_first() {
                Some((&first, rest)) if Some(first) == w.prev_sot_token_id => rest.to_vec(),
                _ => p.to_vec(),
            };
            Some(Segment {
                start: 0.0,
                end: 0.0,
                tokens,
            })
        }
        _ => None,
    };
    let mut segments: Vec<Vec<Segment>> = vec![prompt_segment.iter().cloned().collect(); rows];
    let mut condition = vec![whisper.condition_on_prev_tokens.unwrap_or(false); rows];
    let mut seek = vec![0usize; rows];
    let timing = Timing {
        timestamp_begin,
        time_precision: whisper.time_precision.unwrap_or(0.02),
        time_precision_features: whisper.time_precision_features.unwrap_or(0.01),
        input_stride,
    };
    let window = WindowPrompt {
        init_tokens: &init,
        prompt_ids,
        prompt_all_segments: prompt_condition == PromptConditionType::AllSegments,
        prev_sot,
        cut_off_length: (max_target / 2).saturating_sub(1),
        timestamp_begin,
        pad_token_id,
    };
    let mut caller = Caller {
        options: &mut options,
        calls: 0,
    };
    loop {
        let running: Vec<usize> = (0..rows).filter(|&i| seek[i] < max_frames[i]).collect();
        if running.is_empty() {
            break;
        }
        let seek_num_frames: Vec<usize> = (0..rows)
            .map(|i| (max_frames[i].saturating_sub(seek[i])).min(num_segment_frames))
            .collect();
        let segment_input = cut_window(
            &features,
            &running,
            &seek,
            &seek_num_frames,
            num_segment_frames,
        )?;
        let decoder_prompt = prompt::window_prompt(&window, &running, &segments, &condition);
        let len = decoder_prompt.ids.first().map_or(0, Vec::len);
        set_max_new_tokens_and_length(&mut gc, len, max_target)?;
        let result = fallback::generate_with_fallback(
            model,
            &segment_input,
            &decoder_prompt,
            &mut gc,
            &settings,
            &mut caller,
        )?;
        // transformers writes the flags at the row's place in this window.
        for (k, &c) in result.condition.iter().enumerate() {
            condition[k] = c;
        }
        for (k, &i) in running.iter().enumerate() {
            if result.should_skip[k] {
                seek[i] += seek_num_frames[i];
                continue;
            }
            let time_offset = seek[i] as f64 * timing.time_precision / input_stride as f64;
            let (found, offset) = segments::retrieve_segment(
                &result.sequences[k],
                time_offset,
                seek_num_frames[i],
                &timing,
            );
            seek[i] += offset;
            sink.push(i, &found)?;
            segments[i].extend(found);
        }
    }
    if prompt_segment.is_some() {
        for row in &mut segments {
            row.remove(0);
        }
    }
    Ok(WhisperOutput {
        sequences: segments::join_segments(&segments, pad_token_id),
        segments,
        init_tokens: init,
    })
}

/// `decoder_start_token_id` as one id (Whisper's prompt starts with it).
fn token_id(value: Option<&Value>) -> Result<TokenId> {
    value
        .and_then(Value::as_u64)
        .and_then(|v| TokenId::try_from(v).ok())
        .ok_or_else(|| {
            Error::config(format!(
                "Whisper's generate needs `decoder_start_token_id` (<|startoftranscript|>) as one \
                 token id, got {}",
                value.map_or("nothing".to_string(), Value::to_string)
            ))
        })
}

/// HF `_get_input_segment`: rows `running` of `features`, each from its `seek` frame for
/// `seek_num_frames` frames, zero-padded to `num_segment_frames` -> `[r, n_mels, frames]`.
fn cut_window(
    features: &Tensor,
    running: &[usize],
    seek: &[usize],
    seek_num_frames: &[usize],
    num_segment_frames: usize,
) -> Result<Tensor> {
    let rows = running
        .iter()
        .map(|&i| {
            let total = features.dim(2)?;
            let start = seek[i].min(total);
            let n = seek_num_frames[i].min(total - start);
            let cut = features.narrow(0, i, 1)?.narrow(2, start, n)?; // [1, n_mels, n]
            if n < num_segment_frames {
                Ok(cut.pad_with_zeros(2, 0, num_segment_frames - n)?)
            } else {
                Ok(cut)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// HF `_set_max_new_tokens_and_length`, on Whisper's own copy of the config: the decoder prompt
/// and the new tokens must fit in `max_target_positions`; without `max_new_tokens`, `max_length`
/// grows by the prompt (at most `max_target_positions / 2 - 1` tokens) every window, up to
/// `max_target_positions`.
fn set_max_new_tokens_and_length(
    gc: &mut GenerationConfig,
    prompt_len: usize,
    max_target: usize,
) -> Result<()> {
    let max_new_tokens = gc.max_new_tokens.unwrap_or(0);
    if max_new_tokens + prompt_len > max_target {
        return Err(Error::config(format!(
            "The length of `decoder_input_ids`, including special start tokens, prompt tokens, and \
             previous tokens, is {prompt_len},  and `max_new_tokens` is {max_new_tokens}. Thus, the \
             combined length of `decoder_input_ids` and `max_new_tokens` is: {}. This exceeds the \
             `max_target_positions` of the Whisper model: {max_target}. You should either reduce \
             the length of your prompt, or reduce the value of `max_new_tokens`, so that their \
             combined length is less than {max_target}.",
            max_new_tokens + prompt_len
        )));
    }
    let initial = (max_target / 2).saturating_sub(1).min(prompt_len);
    if gc.max_new_tokens.is_none() {
        if let Some(max_length) = gc.max_length {
            gc.max_length = Some((max_length + initial).min(max_target));
        }
    }
    Ok(())
}
