//! What every decoding loop builds before its first step, built once by
//! [`GenerationContext::new`] for `generate()` and for each request of the engine: the logits
//! processors (`_get_logits_processor`), the stopping criteria (`_get_stopping_criteria`), the
//! sampler, the streamer and the per-step outputs the caller asked for.

use candle_core::Tensor;

use super::logits::{LogitsProcessorList, ProcessorContext, Scores};
use super::resolve::ResolvedGeneration;
use super::sampler::Sampler;
use super::stop_strings::{CleanTokenizerVocab, StopStringCriteria};
use super::stopping::{MaxTimeCriteria, StoppingCriteriaList};
use super::streamer::TokenStreamer;
use super::{GenerateOptions, GenerationConfig};
use crate::error::{Error, Result};
use crate::models::CausalLM;
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// Where the rows being decoded come from: what the processors may read besides the scores.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// `generate()`: the model (classifier-free guidance runs it) and the prompt rows as given,
    /// before expansion (transformers' `encoder_input_ids` for the encoder penalties: an
    /// encoder-decoder model's encoder input, `None` for audio features).
    Generate {
        model: &'a dyn CausalLM,
        prompt_ids: Option<&'a [Vec<TokenId>]>,
    },
    /// One engine request: neither (the settings that need them are refused there).
    Engine { vocab_size: usize },
}

/// The vocabulary `stop_strings` are matched against.
#[derive(Clone, Copy)]
pub(crate) enum StopVocabulary<'a> {
    /// Cleaned from this tokenizer for the call.
    Tokenizer(&'a Tokenizer),
    /// Cleaned once, shared by every request (the engine).
    Clean(&'a CleanTokenizerVocab),
}

/// The per-step outputs a caller asked for: `output_scores`, `output_logits` (`[steps][rows,
/// vocab]`), `output_hidden_states` (`[steps][layers + 1]` of `[rows, t_step, hidden]`) and
/// `output_attentions` (`[steps][attention layers]` of `[rows, heads, t_step, past + t_step]`).
/// Nothing is kept that was not asked for.
#[derive(Debug, Default)]
pub(crate) struct StepOutputs {
    pub scores: Option<Vec<Scores>>,
    pub logits: Option<Vec<Scores>>,
    pub hidden_states: Option<Vec<Vec<Tensor>>>,
    pub attentions: Option<Vec<Vec<Tensor>>>,
}

impl StepOutputs {
    /// Keeps a step's processed scores, if asked.
    pub fn push_scores(&mut self, scores: impl FnOnce() -> Scores) {
        if let Some(all) = self.scores.as_mut() {
            all.push(scores());
        }
    }

    /// Keeps a step's raw logits, if asked.
    pub fn push_logits(&mut self, logits: impl FnOnce() -> Scores) {
        if let Some(all) = self.logits.as_mut() {
            all.push(logits());
        }
    }

    /// Keeps a step's hidden states and attention weights (the model's output for the step), if
    /// asked.
    pub fn push_model_outputs(
        &mut self,
        hidden_states: Option<Vec<Tensor>>,
        attentions: Option<Vec<Tensor>>,
    ) {
        if let Some(all) = self.hidden_states.as_mut() {
            all.push(hidden_states.unwrap_or_default());
        }
        if let Some(all) = self.attentions.as_mut() {
            all.push(attentions.unwrap_or_default());
        }
    }
}

/// The processors, criteria, sampler, streamer and outputs of one call.
pub(crate) struct GenerationContext<'a, 's> {
    pub processors: LogitsProcessorList<'a>,
    pub stopping: StoppingCriteriaList<'a>,
    /// Greedy, or seeded multinomial sampling when the mode samples.
    pub sampler: Sampler,
    /// The caller's seed, for loops that draw with their own RNG (beam sampling).
    pub seed: Option<u64>,
    pub streamer: Option<&'s mut dyn TokenStreamer>,
    pub outputs: StepOutputs,
}

impl<'a, 's> GenerationContext<'a, 's> {
    /// Builds everything the loop of `g` needs from the caller's `options` (its processors,
    /// criteria, seed, streamer, negative prompt, prefix function) for `rows`.
    ///
    /// A streamer needs one row and no beams, as in transformers; `stop_strings` need a
    /// vocabulary.
    pub fn new(
        g: &ResolvedGeneration,
        config: &GenerationConfig,
        mut options: GenerateOptions<'s>,
        rows: Rows<'a>,
        stop_vocabulary: Option<StopVocabulary<'_>>,
    ) -> Result<Self>
    where
        's: 'a,
    {
        let streamer = options.streamer.take();
        if streamer.is_some() {
            if g.mode.beams().is_some() {
                return Err(Error::input(
                    "a streamer cannot be used with beam search (`num_beams` > 1), as in transformers; set `num_beams` to 1 or drop the streamer",
                ));
            }
            if g.rows() > 1 {
                return Err(Error::input(format!(
                    "a streamer needs batch size 1 (one prompt, `num_return_sequences` 1), as in transformers; got {} rows",
                    g.rows()
                )));
            }
        }
        let lengths = g.lengths;
        let mut ctx = ProcessorContext::new(g.prompt_len, lengths.min_length, lengths.max_length);
        match rows {
            Rows::Generate { model, prompt_ids } => {
                ctx.model = Some(model);
                ctx.prompt_ids = prompt_ids;
            }
            Rows::Engine { vocab_size } => ctx.vocab_size = Some(vocab_size),
        }
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
            let criterion = match stop_vocabulary {
                Some(StopVocabulary::Tokenizer(tokenizer)) => {
                    StopStringCriteria::new(tokenizer, stops)?
                }
                Some(StopVocabulary::Clean(vocab)) => StopStringCriteria::from_vocab(vocab, stops)?,
                None => {
                    return Err(Error::input(
                        "`stop_strings` needs the tokenizer: pass it in `GenerateOptions::tokenizer` (transformers: `generate(tokenizer=...)`), or start the engine with one",
                    ))
                }
            };
            stopping.push(criterion);
        }
        stopping.push_eos(&g.eos_token_id);
        for criterion in options.stopping_criteria {
            stopping.push_boxed(criterion);
        }

        let sampler = if g.mode.do_sample() && g.mode.beams().is_none() {
            Sampler::multinomial(options.seed)
        } else {
            Sampler::Greedy
        };
        Ok(Self {
            processors,
            stopping,
            sampler,
            seed: options.seed,
            streamer,
            outputs: StepOutputs {
                scores: g.output_scores.then(Vec::new),
                logits: g.output_logits.then(Vec::new),
                hidden_states: g.output_hidden_states.then(Vec::new),
                attentions: g.output_attentions.then(Vec::new),
            },
        })
    }
}
