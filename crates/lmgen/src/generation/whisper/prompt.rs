//! Whisper's decoder prompt: `<|startoftranscript|>`, the language (given or detected), the task,
//! `<|notimestamps|>` unless timestamps are asked for (HF `_retrieve_init_tokens`,
//! `detect_language`), and per window the earlier text or the caller's prompt before it
//! (`_prepare_decoder_input_ids`).

use candle_core::Tensor;

use super::config::WhisperGenerationConfig;
use super::languages::language_to_id;
use super::segments::{previous_tokens, Segment};
use crate::cache::{DynamicCache, EncoderDecoderCache};
use crate::error::{Error, Result};
use crate::models::seq2seq::EncoderInput;
use crate::models::{CausalLM, ForwardInput};
use crate::TokenId;

/// HF `TASK_IDS`.
pub const TASKS: [&str; 2] = ["translate", "transcribe"];

/// What the prompt is built from, the caller's settings over the checkpoint's.
#[derive(Debug, Clone, Copy)]
pub struct PromptSpec<'a> {
    /// The checkpoint's Whisper settings.
    pub whisper: &'a WhisperGenerationConfig,
    /// `decoder_start_token_id` (`<|startoftranscript|>`).
    pub decoder_start_token_id: TokenId,
    /// The task (`"transcribe"` or `"translate"`), if any.
    pub task: Option<&'a str>,
    /// One language for every row, or one per row; `None` detects it (multilingual checkpoints).
    pub languages: Option<&'a [String]>,
    /// Leave `<|notimestamps|>` out.
    pub return_timestamps: bool,
}

/// HF `_retrieve_init_tokens`: one prompt per row of `features` (`[b, n_mels, frames]`, whose
/// first window is read when the language is detected).
pub fn init_tokens(
    model: &dyn CausalLM,
    features: &Tensor,
    spec: &PromptSpec<'_>,
    num_segment_frames: usize,
) -> Result<Vec<Vec<TokenId>>> {
    let w = spec.whisper;
    let batch = features.dim(0)?;
    let mut init: Vec<Option<TokenId>> = vec![Some(spec.decoder_start_token_id)];
    if spec.task.is_none() && spec.languages.is_none() {
        // The deprecated `forced_decoder_ids`, read only without `language` and `task`.
        if let Some(forced) = w.forced_decoder_ids.as_deref() {
            tracing::warn!("Using custom `forced_decoder_ids` from the (generation) config. This is deprecated in favor of the `task` and `language` flags/config options.");
            if forced.first().is_some_and(|&(i, _)| i == 1) {
                let mut rest = forced;
                let mut i = 1;
                while let Some((&(index, id), tail)) = rest.split_first() {
                    if index != i {
                        break;
                    }
                    init.push(id);
                    rest = tail;
                    i += 1;
                }
                if !rest.is_empty() {
                    return Err(Error::config(format!(
                        "You are using token ids in `forced_decoder_ids` that do not seem to correctly \
                         follow the prompt pattern of Whisper. Make sure that {rest:?} has an entry for \
                         all indices >= 1 and < {}.",
                        rest[0].0
                    )));
                }
            }
        }
    }
    let lang_undefined = init.len() <= 1 || init[1].is_none();
    let rows = match spec.languages {
        Some(l) if l.len() == 1 => 1,
        Some(l) if l.len() != batch => {
            return Err(Error::config(format!(
            "When passing a list of languages, the length of the list must match the batch size. \
                 Expected length of {batch}, but got {} languages.",
            l.len()
        )))
        }
        _ => batch,
    };
    let mut prompts = vec![init; rows];
    let lang_ids = match (spec.languages, &w.lang_to_id) {
        (Some(languages), Some(ids)) => Some(
            languages
                .iter()
                .map(|l| language_to_id(l, ids))
                .collect::<Result<Vec<_>>>()?,
        ),
        (Some(_), None) => return Err(outdated("language")),
        (None, Some(ids)) if lang_undefined => Some(detect_language(
            model,
            features,
            spec.decoder_start_token_id,
            ids.values().copied(),
            num_segment_frames,
        )?),
        (None, _) => None,
    };
    if let Some(lang_ids) = lang_ids {
        for (p, id) in prompts.iter_mut().zip(lang_ids) {
            if p.len() > 1 {
                p[1] = Some(id);
            } else {
                p.push(Some(id));
            }
        }
    }
    let no_timestamps = w.no_timestamps_token_id;
    let mut out = Vec::with_capacity(rows);
    for mut p in prompts {
        match (spec.task, &w.task_to_id) {
            (Some(task), Some(ids)) if TASKS.contains(&task) => {
                let id = ids.get(task).copied().ok_or_else(|| {
                    Error::config(format!(
                        "`task_to_id` of the generation config has no `{task}`"
                    ))
                })?;
                p.push(Some(id));
            }
            (Some(task), Some(_)) => {
                return Err(Error::config(format!(
                    "The `{task}` task is not supported. The task should be one of `{TASKS:?}`"
                )))
            }
            (Some(_), None) => return Err(outdated("task")),
            (None, Some(ids)) if spec.languages.is_some() => {
                // A language without a task transcribes.
                if !ids.values().any(|id| p.contains(&Some(*id))) {
                    if let Some(&transcribe) = ids.get("transcribe") {
                        p.push(Some(transcribe));
                    }
                }
            }
            (None, _) => {}
        }
        let last = p.last().copied().flatten();
        match no_timestamps {
            Some(nt) if !spec.return_timestamps && last != Some(nt) => p.push(Some(nt)),
            Some(nt) if spec.return_timestamps && last == Some(nt) => {
                tracing::info!("<|notimestamps|> prompt token is removed from generation_config since `return_timestamps` is set to `'True'`.");
                p.pop();
            }
            _ => {}
        }
        out.push(p.into_iter().flatten().collect::<Vec<_>>());
    }
    if out.iter().any(|p| p.len() != out[0].len()) {
        return Err(Error::config(
            "the rows' Whisper prompts have different lengths (`forced_decoder_ids` with some languages unset)",
        ));
    }
    if out.len() == 1 && batch > 1 {
        out = vec![out[0].clone(); batch];
    }
    Ok(out)
}

/// transformers' error for a setting the checkpoint's generation config cannot serve.
fn outdated(argument: &str) -> Error {
    Error::config(format!(
        "The generation config is outdated and is thus not compatible with the `{argument}` argument \
         to `generate`. Please update the generation config as per the instructions \
         https://github.com/huggingface/transformers/issues/25084#issuecomment-1664398224"
    ))
}

/// HF `detect_language`: one decoder step on `<|startoftranscript|>` over the first window of
/// `features` (`[b, n_mels, frames]`), the most likely of `languages`' tokens per row (the lowest
/// id among equal scores, as `argmax`).
pub fn detect_language(
    model: &dyn CausalLM,
    features: &Tensor,
    decoder_start_token_id: TokenId,
    languages: impl IntoIterator<Item = TokenId>,
    num_segment_frames: usize,
) -> Result<Vec<TokenId>> {
    let encoder = model
        .encoder()
        .ok_or_else(|| Error::input("language detection needs an encoder-decoder model"))?;
    let (b, _, frames) = features.dims3()?;
    let window = features
        .narrow(2, 0, frames.min(num_segment_frames))?
        .to_device(model.device())?;
    let encoded = encoder.encode(&EncoderInput::Features(&window))?;
    let mut cache = EncoderDecoderCache::new(Box::new(DynamicCache::new()), encoded);
    let ids = Tensor::new(vec![vec![decoder_start_token_id]; b], model.device())?; // [b, 1]
    let positions = Tensor::new(vec![vec![0u32]; b], model.device())?;
    let out = model.forward(&ForwardInput::last(&ids, &positions), &mut cache)?;
    let logits: Vec<Vec<f32>> = out.logits.squeeze(1)?.to_vec2()?; // [b, vocab]
    let mut languages: Vec<TokenId> = languages.into_iter().collect();
    languages.sort_unstable();
    logits
        .iter()
        .map(|row| {
            let mut best: Option<(TokenId, f32)> = None;
            for &id in &languages {
                let score = row.get(id as usize).copied().ok_or_else(|| {
                    Error::config(format!("`lang_to_id` holds {id}, outside the vocabulary"))
                })?;
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((id, score));
                }
            }
            best.map(|(id, _)| id)
                .ok_or_else(|| Error::config("`lang_to_id` is empty: no language to detect"))
        })
        .collect()
}

/// What a window's decoder prompt is built from.
#[derive(Debug, Clone, Copy)]
pub struct WindowPrompt<'a> {
    /// Each row's prompt from [`init_tokens`].
    pub init_tokens: &'a [Vec<TokenId>],
    /// The caller's `prompt_ids` (starting with `<|startofprev|>`).
    pub prompt_ids: Option<&'a [TokenId]>,
    /// The prompt conditions every window (`prompt_condition_type="all-segments"`), not only the
    /// first.
    pub prompt_all_segments: bool,
    /// `prev_sot_token_id`, else `suppress_tokens[-2]`.
    pub prev_sot: Option<TokenId>,
    /// `max_target_positions / 2 - 1`: earlier tokens kept.
    pub cut_off_length: usize,
    /// `<|0.00|>`.
    pub timestamp_begin: TokenId,
    /// Left padding of earlier texts of different lengths.
    pub pad_token_id: TokenId,
}

/// A window's decoder prompts, one per running row, and their padding (`decoder_input_ids !=
/// pad_token_id` when conditioned on earlier text, as transformers builds it; `None` when nothing
/// is masked).
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderPrompt {
    /// `[r][t]` token ids.
    pub ids: Vec<Vec<TokenId>>,
    /// `[r][t]` 1 = attend, 0 = padding.
    pub mask: Option<Vec<Vec<u8>>>,
}

/// HF `_prepare_decoder_input_ids`: the decoder prompt of each row still running (`rows`, indices
/// into `segments` and `condition`): the earlier text after `<|startofprev|>` (rows conditioned on
/// it, once row 0 has segments; left-padded to the longest), else the caller's prompt, then the
/// row's prompt. The caller's prompt of `prompt_condition_type="first-segment"` is row `i`'s
/// first segment here.
pub fn window_prompt(
    spec: &WindowPrompt<'_>,
    rows: &[usize],
    segments: &[Vec<Segment>],
    condition: &[bool],
) -> DecoderPrompt {
    let init = |i: usize| spec.init_tokens[i].clone();
    let first_has_segments = segments.first().is_some_and(|s| !s.is_empty());
    // transformers looks at every row's flag and at row 0's segments only.
    if condition.iter().any(|&c| c) && first_has_segments {
        let bos: Vec<TokenId> = match (spec.prompt_ids, spec.prompt_all_segments) {
            (Some(p), true) => p.to_vec(),
            _ => spec.prev_sot.into_iter().collect(),
        };
        let prev: Vec<Vec<TokenId>> = rows
            .iter()
            .map(|&i| {
                if condition[i] && !segments[i].is_empty() {
                    previous_tokens(
                        &segments[i],
                        &bos,
                        spec.cut_off_length,
                        spec.timestamp_begin,
                    )
                } else {
                    bos.clone()
                }
            })
            .collect();
        let longest = prev.iter().map(Vec::len).max().unwrap_or(0);
        let ids: Vec<Vec<TokenId>> = rows
            .iter()
            .zip(prev)
            .map(|(&i, p)| {
                let pad = std::iter::repeat_n(spec.pad_token_id, longest - p.len());
                pad.chain(p).chain(init(i)).collect()
            })
            .collect();
        let mask: Vec<Vec<u8>> = ids
            .iter()
            .map(|r| {
                r.iter()
                    .map(|&t| u8::from(t != spec.pad_token_id))
                    .collect()
            })
            .collect();
        let padded = mask.iter().flatten().any(|&m| m == 0);
        return DecoderPrompt {
            ids,
            mask: padded.then_some(mask),
        };
    }
    let ids = rows
        .iter()
        .map(|&i| {
            let prompt = spec.prompt_ids.unwrap_or(&[]);
            prompt.iter().copied().chain(init(i)).collect()
        })
        .collect();
    DecoderPrompt { ids, mask: None }
}
