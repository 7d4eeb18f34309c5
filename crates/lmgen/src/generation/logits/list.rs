//! HF `LogitsProcessorList` and `GenerationMixin._get_logits_processor`
//! (`src/transformers/generation/utils.py`): the processors `generate()` builds for a config, in its order.

use super::*;
use crate::error::Result;
use crate::generation::config::GenerationConfig;
use crate::models::CausalLM;
use crate::TokenId;

/// What the processors need to know besides the config.
pub struct ProcessorContext<'a> {
    /// Padded prompt length (transformers' `input_ids_length`).
    pub input_len: usize,
    /// Resolved absolute `min_length` (prompt included).
    pub min_length: usize,
    /// Resolved absolute `max_length` (prompt included), for `ForcedEOSTokenLogitsProcessor`.
    pub max_length: usize,
    /// The prompt rows: what transformers passes as `encoder_input_ids` for a decoder-only model (its
    /// `inputs_tensor`), used by the encoder repetition penalty and encoder n-gram blocking. Without it
    /// those two are skipped, as transformers does without 2-D input ids.
    pub prompt_ids: Option<&'a [Vec<TokenId>]>,
    /// The model, for classifier-free guidance (a second forward pass per step).
    pub model: Option<&'a dyn CausalLM>,
    /// CFG negative prompt (`negative_prompt_ids`); default: the last prompt token of each row.
    pub negative_prompt_ids: Option<Vec<Vec<TokenId>>>,
    /// CFG negative prompt mask (`negative_prompt_attention_mask`); default all ones.
    pub negative_prompt_attention_mask: Option<Vec<Vec<u8>>>,
    /// `prefix_allowed_tokens_fn` of `generate()`.
    pub prefix_allowed_tokens_fn: Option<PrefixAllowedTokensFn>,
    /// The caller's `logits_processor` list, merged as transformers merges it.
    pub user_processors: Vec<Box<dyn LogitsProcessor + 'a>>,
    /// The model's vocabulary size, for the watermark's greenlists; default: the model's.
    pub vocab_size: Option<usize>,
}

impl std::fmt::Debug for ProcessorContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorContext")
            .field("input_len", &self.input_len)
            .field("min_length", &self.min_length)
            .field("max_length", &self.max_length)
            .field("has_model", &self.model.is_some())
            .field("user_processors", &self.user_processors.len())
            .finish_non_exhaustive()
    }
}

impl ProcessorContext<'_> {
    /// A context with only the lengths set.
    pub fn new(input_len: usize, min_length: usize, max_length: usize) -> Self {
        Self {
            input_len,
            min_length,
            max_length,
            prompt_ids: None,
            model: None,
            negative_prompt_ids: None,
            negative_prompt_attention_mask: None,
            prefix_allowed_tokens_fn: None,
            user_processors: Vec::new(),
            vocab_size: None,
        }
    }
}

/// HF `LogitsProcessorList`: applies processors in order.
#[derive(Default)]
pub struct LogitsProcessorList<'a> {
    processors: Vec<Box<dyn LogitsProcessor + 'a>>,
}

impl std::fmt::Debug for LogitsProcessorList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.names().collect();
        write!(f, "LogitsProcessorList({names:?})")
    }
}

/// transformers' `min_tokens_to_keep` for the warpers: 1, or for beam sampling the number of EOS ids
/// plus one (2 without EOS), so that a non-EOS continuation always survives (`utils.py`).
pub fn min_tokens_to_keep(num_beams: usize, eos_count: usize) -> usize {
    if num_beams > 1 {
        if eos_count > 0 {
            eos_count + 1
        } else {
            2
        }
    } else {
        1
    }
}

impl<'a> LogitsProcessorList<'a> {
    /// The processors `generate()` builds for `config` (`_get_logits_processor`, utils.py), in its
    /// order; unset fields take transformers' defaults. Warpers are built only when `do_sample`.
    pub fn from_config(config: &GenerationConfig, ctx: ProcessorContext<'a>) -> Result<Self> {
        let c = config.with_defaults();
        let mut list = Self::default();
        let eos = c.eos_token_ids();
        if let Some(g) = c.guidance_scale.filter(|&g| g != 1.0) {
            let model = ctx.model.ok_or_else(|| {
                crate::error::Error::unsupported(
                    "`guidance_scale` needs the model (classifier-free guidance runs it on the negative prompt)",
                )
            })?;
            list.push(UnbatchedClassifierFreeGuidanceLogitsProcessor::new(
                g,
                model,
                ctx.negative_prompt_ids.clone(),
                ctx.negative_prompt_attention_mask.clone(),
                c.use_cache.unwrap_or(true),
            )?);
        }
        if let Some(bias) = &c.sequence_bias {
            list.push(SequenceBiasLogitsProcessor::new(bias.clone())?);
        }
        if let Some(p) = c.encoder_repetition_penalty.filter(|&p| p != 1.0) {
            if let Some(prompt) = ctx.prompt_ids {
                list.push(EncoderRepetitionPenaltyLogitsProcessor::new(
                    p,
                    prompt.to_vec(),
                )?);
            } else {
                tracing::warn!("`encoder_repetition_penalty` needs the prompt ids; ignoring it");
            }
        }
        if let Some(p) = c.repetition_penalty.filter(|&p| p != 1.0) {
            list.push(RepetitionPenaltyLogitsProcessor::new(p, None)?);
        }
        if let Some(n) = c.no_repeat_ngram_size.filter(|&n| n > 0) {
            list.push(NoRepeatNGramLogitsProcessor::new(n)?);
        }
        if let Some(n) = c.encoder_no_repeat_ngram_size.filter(|&n| n > 0) {
            if let Some(prompt) = ctx.prompt_ids {
                list.push(EncoderNoRepeatNGramLogitsProcessor::new(n, prompt)?);
            } else {
                tracing::warn!("`encoder_no_repeat_ngram_size` needs the prompt ids; ignoring it");
            }
        }
        if let Some(bad) = &c.bad_words_ids {
            list.push(NoBadWordsLogitsProcessor::new(bad.clone(), &eos)?);
        }
        if ctx.min_length > 0 && !eos.is_empty() {
            list.push(MinLengthLogitsProcessor::new(ctx.min_length, eos.clone()));
        }
        if let Some(n) = c.min_new_tokens.filter(|&n| n > 0) {
            if !eos.is_empty() {
                list.push(MinNewTokensLengthLogitsProcessor::new(
                    ctx.input_len,
                    n,
                    eos.clone(),
                ));
            }
        }
        if let Some(f) = ctx.prefix_allowed_tokens_fn.clone() {
            list.push(PrefixConstrainedLogitsProcessor::new(
                f,
                c.num_beams.unwrap_or(1),
            ));
        }
        if let Some(bos) = c.forced_bos_token_id {
            list.push(ForcedBOSTokenLogitsProcessor::new(bos));
        }
        if let Some(forced) = &c.forced_eos_token_id {
            list.push(ForcedEOSTokenLogitsProcessor::new(
                ctx.max_length,
                forced.as_slice().to_vec(),
            ));
        }
        if c.remove_invalid_values == Some(true) {
            list.push(InfNanRemoveLogitsProcessor);
        }
        if let Some((start, factor)) = c.exponential_decay_length_penalty {
            list.push(ExponentialDecayLengthPenalty::new(
                (start, factor),
                eos.clone(),
                ctx.input_len,
            ));
        }
        if let Some(tokens) = &c.suppress_tokens {
            list.push(SuppressTokensLogitsProcessor::new(tokens.clone()));
        }
        if let Some(tokens) = &c.begin_suppress_tokens {
            let begin_index = if ctx.input_len > 1 || c.forced_bos_token_id.is_none() {
                ctx.input_len
            } else {
                ctx.input_len + 1
            };
            list.push(SuppressTokensAtBeginLogitsProcessor::new(
                tokens.clone(),
                begin_index,
            ));
        }
        list.merge_user(ctx.user_processors);
        if c.do_sample == Some(true) {
            let keep = min_tokens_to_keep(c.num_beams.unwrap_or(1), eos.len());
            if let Some(t) = c.temperature.filter(|&t| t != 1.0) {
                list.push(TemperatureLogitsWarper::new(t)?);
            }
            if let Some(h) = c.top_h {
                list.push(TopHLogitsWarper::new(h)?);
            }
            if let Some(k) = c.top_k.filter(|&k| k != 0) {
                list.push(TopKLogitsWarper::new(k, keep)?);
            }
            if let Some(p) = c.top_p.filter(|&p| p < 1.0) {
                list.push(TopPLogitsWarper::new(p, keep)?);
            }
            if let Some(p) = c.min_p {
                list.push(MinPLogitsWarper::new(p, keep)?);
            }
            if let Some(p) = c.typical_p.filter(|&p| p < 1.0) {
                list.push(TypicalLogitsWarper::new(p, keep)?);
            }
            if let Some(e) = c.epsilon_cutoff.filter(|&e| 0.0 < e && e < 1.0) {
                list.push(EpsilonLogitsWarper::new(e, keep)?);
            }
            if let Some(e) = c.eta_cutoff.filter(|&e| 0.0 < e && e < 1.0) {
                list.push(EtaLogitsWarper::new(e, keep)?);
            }
        }
        if let Some(w) = &c.watermarking_config {
            // transformers appends it after every other processor and warper (#34630).
            if SynthIDTextWatermarkingConfig::is_synthid(w) {
                list.push(SynthIDTextWatermarkLogitsProcessor::new(
                    SynthIDTextWatermarkingConfig::from_json(w)?,
                )?);
            } else {
                let vocab = ctx
                    .vocab_size
                    .or_else(|| ctx.model.map(|m| m.config().vocab_size))
                    .ok_or_else(|| {
                        crate::error::Error::unsupported(
                            "`watermarking_config` needs the model's vocabulary size",
                        )
                    })?;
                list.push(WatermarkLogitsProcessor::new(
                    WatermarkingConfig::from_json(w)?,
                    vocab,
                )?);
            }
        }
        if c.renormalize_logits == Some(true) {
            list.push(LogitNormalization);
        }
        Ok(list)
    }

    /// transformers' `_merge_criteria_processor_list`: a user processor of the same type as a built-in
    /// one replaces it in place; the others are appended (after the built-in processors, before the
    /// warpers).
    fn merge_user(&mut self, user: Vec<Box<dyn LogitsProcessor + 'a>>) {
        let mut rest = Vec::new();
        for p in user {
            let name = p.type_name();
            match self.processors.iter().position(|d| d.type_name() == name) {
                Some(i) => {
                    tracing::warn!(processor = name, "a custom logits processor replaces the one built from the generation config");
                    self.processors[i] = p;
                }
                None => rest.push(p),
            }
        }
        self.processors.extend(rest);
    }

    /// Appends a processor.
    pub fn push(&mut self, p: impl LogitsProcessor + 'a) {
        self.processors.push(Box::new(p));
    }

    /// Whether the list has no processor.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// The number of processors.
    pub fn len(&self) -> usize {
        self.processors.len()
    }

    /// The short type names of the processors, in order (e.g. `"TopKLogitsWarper"`).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.processors
            .iter()
            .map(|p| p.type_name().rsplit("::").next().unwrap_or_default())
    }

    /// Runs every processor in order.
    pub fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        for p in &self.processors {
            p.process(input_ids, scores)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(config: serde_json::Value) -> Vec<&'static str> {
        let c =
            GenerationConfig::from_json(&config, crate::generation::config::UnknownFields::Reject)
                .unwrap();
        let list = LogitsProcessorList::from_config(&c, ProcessorContext::new(8, 0, 28)).unwrap();
        list.names().collect()
    }

    #[test]
    fn order_follows_get_logits_processor() {
        assert_eq!(
            names(
                json!({"do_sample": true, "temperature": 0.7, "top_k": 10, "top_p": 0.9,
                "repetition_penalty": 1.2, "no_repeat_ngram_size": 2, "renormalize_logits": true,
                "sequence_bias": [[[1], 1.0]], "suppress_tokens": [3], "min_p": 0.1})
            ),
            [
                "SequenceBiasLogitsProcessor",
                "RepetitionPenaltyLogitsProcessor",
                "NoRepeatNGramLogitsProcessor",
                "SuppressTokensLogitsProcessor",
                "TemperatureLogitsWarper",
                "TopKLogitsWarper",
                "TopPLogitsWarper",
                "MinPLogitsWarper",
                "LogitNormalization",
            ]
        );
        assert!(names(json!({"temperature": 0.5, "top_p": 0.5})).is_empty());
    }

    #[test]
    fn user_processor_replaces_same_type_in_place() {
        let c = GenerationConfig::from_json(
            &json!({"repetition_penalty": 1.2, "no_repeat_ngram_size": 2}),
            crate::generation::config::UnknownFields::Reject,
        )
        .unwrap();
        let mut ctx = ProcessorContext::new(8, 0, 28);
        ctx.user_processors = vec![
            Box::new(LogitNormalization),
            Box::new(RepetitionPenaltyLogitsProcessor::new(3.0, None).unwrap()),
        ];
        let list = LogitsProcessorList::from_config(&c, ctx).unwrap();
        let mut s = Scores::new(vec![3.0, 0.0], 1, 2);
        assert_eq!(
            list.names().collect::<Vec<_>>(),
            [
                "RepetitionPenaltyLogitsProcessor",
                "NoRepeatNGramLogitsProcessor",
                "LogitNormalization"
            ]
        );
        list.process(&[vec![0]], &mut s).unwrap();
        assert!((s.data[0] - (1.0 - (1.0f32.exp() + 1.0).ln())).abs() < 1e-6);
    }

    #[test]
    fn beam_sampling_keeps_eos_plus_one() {
        assert_eq!(min_tokens_to_keep(1, 3), 1);
        assert_eq!(min_tokens_to_keep(2, 2), 3);
        assert_eq!(min_tokens_to_keep(2, 0), 2);
    }
}
