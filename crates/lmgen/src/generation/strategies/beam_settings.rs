//! What every beam loop resolves before its first step (HF `generate()` before `_beam_search`,
//! `_group_beam_search`, `_constrained_beam_search`): the beam settings with transformers' defaults,
//! the resolved lengths, and the prompt expanded to `num_beams` rows per batch item.

use super::prepare;
use super::sample::expand;
use crate::error::{Error, Result};
use crate::generation::config::{EarlyStopping, Lengths};
use crate::generation::logits::LogitsProcessorList;
use crate::generation::stopping::StoppingCriteriaList;
use crate::generation::{GenerateInput, GenerateOptions, GenerationConfig};
use crate::models::CausalLM;
use crate::TokenId;

/// Resolved settings of a beam run.
pub(super) struct BeamSettings {
    /// Batch items.
    pub batch: usize,
    /// Padded prompt length.
    pub t: usize,
    /// `num_beams`.
    pub nb: usize,
    /// `num_return_sequences`.
    pub nrs: usize,
    pub early: EarlyStopping,
    pub length_penalty: f64,
    pub lengths: Lengths,
    /// The prompt expanded to `[b * num_beams, t]` (`_expand_inputs_for_generation`).
    pub input: GenerateInput,
    pub eos: Vec<TokenId>,
    /// `pad_token_id`, else the first EOS id (transformers' `_prepare_special_tokens`).
    pub pad: Option<TokenId>,
    pub output_scores: bool,
    pub output_logits: bool,
}

impl BeamSettings {
    /// Resolves `config` for `input`; refuses a streamer (transformers does with beams) and more
    /// return sequences than beams.
    pub(super) fn new(
        model: &dyn CausalLM,
        input: &GenerateInput,
        config: &GenerationConfig,
        options: &GenerateOptions<'_>,
    ) -> Result<Self> {
        if options.streamer.is_some() {
            return Err(Error::input(
                "a streamer cannot be used with beam search (`num_beams` > 1), as in transformers; set `num_beams` to 1 or drop the streamer",
            ));
        }
        let (batch, t) = input.validate(model.config().vocab_size)?;
        let c = config.with_defaults();
        let nb = c.num_beams.unwrap_or(1).max(1);
        let nrs = c.num_return_sequences.unwrap_or(1);
        if nrs > nb {
            return Err(Error::config(format!(
                "`num_return_sequences` ({nrs}) must be <= `num_beams` ({nb})"
            )));
        }
        Ok(Self {
            batch,
            t,
            nb,
            nrs,
            early: c.early_stopping.unwrap_or(EarlyStopping::False),
            length_penalty: c.length_penalty.unwrap_or(1.0),
            lengths: prepare::lengths(model, config, t)?,
            input: expand(input, nb),
            eos: config.eos_token_ids(),
            pad: config
                .pad_token_id
                .or(config.eos_token_ids().first().copied()),
            output_scores: config.output_scores.unwrap_or(false),
            output_logits: config.output_logits.unwrap_or(false),
        })
    }

    /// The logits processors and stopping criteria for the expanded prompt.
    pub(super) fn processors_and_criteria<'a, 'o: 'a>(
        &'a self,
        model: &'a dyn CausalLM,
        config: &GenerationConfig,
        options: GenerateOptions<'o>,
    ) -> Result<(LogitsProcessorList<'a>, StoppingCriteriaList<'a>)> {
        prepare::processors_and_criteria(
            model,
            config,
            &self.input.input_ids,
            &self.lengths,
            &self.eos,
            options,
        )
    }

    /// `[b * num_beams]` rows.
    pub(super) fn rows(&self) -> usize {
        self.batch * self.nb
    }

    /// Candidates per step for `beams` beams: `max(2, 1 + n_eos) * beams`, so at least `beams`
    /// of them are not EOS.
    pub(super) fn candidates(&self, beams: usize) -> usize {
        2usize.max(1 + self.eos.len()) * beams
    }
}
