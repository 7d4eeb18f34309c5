//! What every decoding loop builds before its first step (the input preparation of HF
//! `GenerationMixin.generate()`): resolved lengths, the logits processors and the stopping criteria.

use crate::error::{Error, Result};
use crate::generation::config::Lengths;
use crate::generation::logits::{LogitsProcessorList, ProcessorContext};
use crate::generation::stop_strings::StopStringCriteria;
use crate::generation::stopping::{MaxTimeCriteria, StoppingCriteriaList};
use crate::generation::{GenerateOptions, GenerationConfig};
use crate::models::CausalLM;
use crate::TokenId;

/// `max_length` / `min_length` for a padded prompt of `t` tokens, refusing prompts the model cannot
/// position (longer than `max_position_embeddings`) and, for learned positions, outputs past it.
pub(super) fn lengths(
    model: &dyn CausalLM,
    config: &GenerationConfig,
    t: usize,
) -> Result<Lengths> {
    let mcfg = model.config();
    if t > mcfg.max_position_embeddings {
        return Err(Error::input(format!(
            "the prompt has {t} tokens but the model's `max_position_embeddings` is {}",
            mcfg.max_position_embeddings
        )));
    }
    let lengths = config.resolve_lengths(t, Some(mcfg.max_position_embeddings))?;
    if mcfg.rope.is_none() && lengths.max_length > mcfg.max_position_embeddings {
        return Err(Error::input(format!(
            "`max_length` {} exceeds `max_position_embeddings` {} of this model (learned positions); lower `max_new_tokens`",
            lengths.max_length, mcfg.max_position_embeddings
        )));
    }
    Ok(lengths)
}

/// The logits processors (`_get_logits_processor`) and stopping criteria
/// (`_get_stopping_criteria`: max length, max time, stop strings, EOS, then the caller's) for the
/// (expanded) prompt rows `prompt_ids`. Takes the processor and criterion parts of `options`;
/// the caller keeps what it handles itself (seed, streamer).
pub(super) fn processors_and_criteria<'a, 'o: 'a>(
    model: &'a dyn CausalLM,
    config: &GenerationConfig,
    prompt_ids: &'a [Vec<TokenId>],
    lengths: &Lengths,
    eos: &[TokenId],
    options: GenerateOptions<'o>,
) -> Result<(LogitsProcessorList<'a>, StoppingCriteriaList<'a>)> {
    let t = prompt_ids.first().map_or(0, Vec::len);
    let mut ctx = ProcessorContext::new(t, lengths.min_length, lengths.max_length);
    ctx.prompt_ids = Some(prompt_ids);
    ctx.model = Some(model);
    ctx.negative_prompt_ids = options.negative_prompt_ids;
    ctx.negative_prompt_attention_mask = options.negative_prompt_attention_mask;
    ctx.prefix_allowed_tokens_fn = options.prefix_allowed_tokens_fn;
    ctx.user_processors = options.logits_processors;
    let processors = LogitsProcessorList::from_config(config, ctx)?;
    let mut stopping = StoppingCriteriaList::new(lengths.max_length, &[]);
    if let Some(secs) = config.max_time {
        stopping.push(MaxTimeCriteria::new(secs));
    }
    if let Some(stops) = config.stop_strings.as_ref().filter(|s| !s.is_empty()) {
        let tokenizer = options.tokenizer.ok_or_else(|| {
            Error::input(
                "`stop_strings` needs the tokenizer: pass it in `GenerateOptions::tokenizer` (transformers: `generate(tokenizer=...)`)",
            )
        })?;
        stopping.push(StopStringCriteria::new(tokenizer, stops)?);
    }
    stopping.push_eos(eos);
    for criterion in options.stopping_criteria {
        stopping.push_boxed(criterion);
    }
    Ok((processors, stopping))
}
