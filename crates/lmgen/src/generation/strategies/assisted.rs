//! HF `GenerationMixin._assisted_decoding` (`generation/utils.py`): assisted (speculative) decoding
//! for greedy search and sampling, batch size 1.
//!
//! Each round a [`CandidateGenerator`] proposes tokens; the target scores the sequence plus all of
//! them in one forward pass (`logits_to_keep = candidates + 1`), the logits processors run on each
//! position, and the target keeps:
//! - greedy (or sampling without a draft distribution): the longest prefix of candidates equal to
//!   its own choices, plus its own next token;
//! - sampling with a draft distribution: Leviathan et al.'s rule ([`speculative_sampling`]), which
//!   keeps the target's distribution exactly.
//!
//! The rejected candidates' keys and values are cropped from the cache. The output is the target's
//! own greedy output (and, when sampling, a draw from the target's distribution), whatever the draft.
//!
//! Deliberate difference: transformers checks the stopping criteria once per round on the whole
//! accepted block (and crops it to `max_length`), so a stop string completed inside the block does
//! not stop it there; lmgen checks after each accepted token, stopping exactly where the plain loop
//! stops. EOS and `max_length` give the same output either way.

use super::prepare;
use crate::cache::{DynamicCache, KvCache};
use crate::error::{Error, Result};
use crate::generation::candidates::universal::UniversalOptions;
use crate::generation::candidates::{
    forward_row, AssistedStats, CandidateGenerator, DraftContext, DraftLength,
    DraftModelCandidateGenerator, DraftSchedule, EarlyExitCandidateGenerator,
    PromptLookupCandidateGenerator, RowLayout, UniversalCandidateGenerator,
};
use crate::generation::logits::Scores;
use crate::generation::sampler::{softmax, Sampler};
use crate::generation::{GenerateInput, GenerateOptions, GenerateOutput, GenerationConfig};
use crate::models::{CausalLM, LogitsToKeep};
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// The draft sources of one call (besides the config's prompt lookup and early exit settings).
struct Assistant<'a> {
    model: Option<&'a dyn CausalLM>,
    tokenizer: Option<&'a Tokenizer>,
    assistant_tokenizer: Option<&'a Tokenizer>,
}

/// Assisted decoding of one prompt.
pub fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    config: &GenerationConfig,
    options: GenerateOptions<'_>,
) -> Result<GenerateOutput> {
    let mut options = options;
    let seed = options.seed;
    let mut streamer = options.streamer.take();
    let assistant = Assistant {
        model: options.assistant_model.take(),
        tokenizer: options.tokenizer,
        assistant_tokenizer: options.assistant_tokenizer.take(),
    };
    let mcfg = model.config();
    input.validate(mcfg.vocab_size)?;
    let effective = config.with_defaults();
    check_supported(&effective, input)?;
    let t = input.input_ids[0].len();
    let lengths = prepare::lengths(model, config, t)?;
    let eos = config.eos_token_ids();
    let mut generator = candidate_generator(model, &effective, &assistant)?;
    let (processors, mut stopping) =
        prepare::processors_and_criteria(model, config, &input.input_ids, &lengths, &eos, options)?;
    let do_sample = effective.do_sample == Some(true);
    let mut sampler = if do_sample {
        Sampler::multinomial(seed)
    } else {
        Sampler::Greedy
    };
    let output_scores = config.output_scores.unwrap_or(false);
    let output_logits = config.output_logits.unwrap_or(false);

    let mut cache = DynamicCache::new();
    let mut sequence = input.input_ids[0].clone();
    let prompt_mask = input.attention_mask.as_ref().map(|m| m[0].as_slice());
    let mut layout = RowLayout::new(prompt_mask, t);
    if let Some(s) = streamer.as_mut() {
        s.put(&sequence)?;
    }
    let mut finish = None;
    let mut all_scores = output_scores.then(Vec::new);
    let mut all_logits = output_logits.then(Vec::new);
    let mut stats = AssistedStats::default();
    while finish.is_none() {
        let cur_len = sequence.len();
        // 1. Candidates.
        let candidates = generator.get_candidates(DraftContext {
            sequence: &sequence,
            layout: &layout,
            max_length: lengths.max_length,
            processors: &processors,
            sampler: &mut sampler,
            eos: &eos,
            target_cache: &mut cache,
        })?;
        let k = candidates.tokens.len();
        // 2. The target over the sequence and the candidates: k + 1 positions of logits.
        let mut extended = sequence.clone();
        extended.extend_from_slice(&candidates.tokens);
        let mut extended_layout = layout.clone();
        extended_layout.resize(extended.len());
        let raw = forward_row(
            model,
            &extended,
            &extended_layout,
            LogitsToKeep::LastN(k + 1),
            None,
            &mut cache,
        )?; // [k + 1, vocab]
        let vocab = raw.vocab;
        let mut processed = raw.clone();
        for i in 0..=k {
            let mut row = Scores::new(raw.row(i).to_vec(), 1, vocab);
            processors.process(&[extended[..cur_len + i].to_vec()], &mut row)?;
            processed.row_mut(i).copy_from_slice(row.row(0));
        }
        // 3. Accepted tokens.
        let (valid, n_matches) = match (&candidates.scores, do_sample) {
            (Some(draft), true) => {
                speculative_sampling(&candidates.tokens, draft, &processed, &mut sampler)?
            }
            _ => select_and_compare(&candidates.tokens, &processed, &mut sampler)?,
        };
        // 4. Append them one by one, stopping where the plain loop would.
        let mut appended = 0;
        for &tok in &valid {
            sequence.push(tok);
            layout.push();
            appended += 1;
            finish = stopping.check(&sequence);
            if finish.is_some() {
                break;
            }
        }
        stats.rounds += 1;
        stats.drafted += k;
        stats.accepted += n_matches.min(appended);
        if let Some(s) = all_scores.as_mut() {
            s.extend((0..appended).map(|i| Scores::new(processed.row(i).to_vec(), 1, vocab)));
        }
        if let Some(l) = all_logits.as_mut() {
            l.extend((0..appended).map(|i| Scores::new(raw.row(i).to_vec(), 1, vocab)));
        }
        if let Some(s) = streamer.as_mut() {
            s.put(&sequence[cur_len..])?;
        }
        if finish.is_some() {
            break;
        }
        // 5. Drop the rejected candidates' keys and values (the last token is fed next round).
        cache.crop(sequence.len() - 1)?;
        generator.update_candidate_strategy(&sequence, k, n_matches);
    }
    if let Some(s) = streamer.as_mut() {
        s.end()?;
    }
    stats.num_assistant_tokens = generator.num_candidate_tokens();
    tracing::debug!(
        rounds = stats.rounds,
        drafted = stats.drafted,
        accepted = stats.accepted,
        "assisted decoding done"
    );
    Ok(GenerateOutput {
        sequences: vec![sequence],
        scores: all_scores,
        logits: all_logits,
        finish_reasons: vec![finish],
        prompt_len: t,
        sequences_scores: None,
        beam_indices: None,
        assisted: Some(stats),
    })
}

/// The limits of assisted decoding in transformers (`_validate_generation_mode`,
/// `_assisted_decoding`), plus classifier-free guidance, whose unconditional branch keeps a cache
/// of its own that rejected candidates would put out of step.
fn check_supported(c: &GenerationConfig, input: &GenerateInput) -> Result<()> {
    let n = c.num_return_sequences.unwrap_or(1);
    if n > 1 {
        return Err(Error::config(format!(
            "`num_return_sequences` has to be 1 with assisted decoding, got {n}"
        )));
    }
    let b = input.input_ids.len();
    if b > 1 {
        return Err(Error::input(format!(
            "assisted decoding supports batch size 1 only (as transformers), got {b} prompts; \
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
    Ok(())
}

/// HF `_get_candidate_generator`: early exit, else prompt lookup, else (MTP heads, which no
/// implemented architecture has) a draft model, with another tokenizer when the vocabularies differ.
fn candidate_generator<'a>(
    model: &'a dyn CausalLM,
    c: &GenerationConfig,
    assistant: &Assistant<'a>,
) -> Result<Box<dyn CandidateGenerator + 'a>> {
    let length = DraftLength {
        num_assistant_tokens: c.num_assistant_tokens.unwrap_or(20),
        schedule: DraftSchedule::parse(
            c.num_assistant_tokens_schedule
                .as_deref()
                .unwrap_or("constant"),
        )?,
    };
    let threshold = c.assistant_confidence_threshold.unwrap_or(0.4) as f32;
    let vocab = model.config().vocab_size;
    if assistant.model.is_some()
        && (c.assistant_early_exit.is_some() || c.prompt_lookup_num_tokens.is_some())
    {
        return Err(Error::config(
            "an assistant model and `assistant_early_exit` / `prompt_lookup_num_tokens` are two \
             different drafts; give one",
        ));
    }
    if let Some(layers) = c.assistant_early_exit {
        return Ok(Box::new(EarlyExitCandidateGenerator::new(
            model, layers, length, threshold,
        )?));
    }
    if let Some(n) = c.prompt_lookup_num_tokens {
        let ngram = c.max_matching_ngram_size.unwrap_or(2);
        return Ok(Box::new(PromptLookupCandidateGenerator::new(
            n, ngram, vocab,
        )?));
    }
    if c.use_mtp == Some(true) {
        return Err(Error::unsupported(
            "`use_mtp` (multi-token-prediction heads as the draft): none of the architectures \
             lmgen implements has them; set it to false",
        ));
    }
    let Some(draft) = assistant.model else {
        return Err(Error::input("internal: assisted decoding without a draft"));
    };
    let draft_vocab = draft.config().vocab_size;
    if draft_vocab == vocab {
        if assistant.assistant_tokenizer.is_some() {
            return Err(Error::input(format!(
                "`assistant_tokenizer` is not required when the main and assistant models use the same \
                 tokenizer (both have vocab_size {vocab}); omit it"
            )));
        }
        return Ok(Box::new(DraftModelCandidateGenerator::new(
            draft, length, threshold,
        )));
    }
    match (assistant.tokenizer, assistant.assistant_tokenizer) {
        (Some(tokenizer), Some(assistant_tokenizer)) => {
            Ok(Box::new(UniversalCandidateGenerator::new(
                draft,
                tokenizer,
                assistant_tokenizer,
                UniversalOptions {
                    length,
                    assistant_confidence_threshold: threshold,
                    target_lookbehind: c.target_lookbehind.unwrap_or(10),
                    assistant_lookbehind: c.assistant_lookbehind.unwrap_or(10),
                },
            )))
        }
        _ => Err(Error::input(format!(
            "the main and assistant models have different tokenizers (vocab_size {vocab} and \
             {draft_vocab}): pass `tokenizer` and `assistant_tokenizer` for universal assisted decoding"
        ))),
    }
}

/// Greedy verification (HF `_assisted_decoding` case 2): the target's own choice at each position
/// (argmax, or a draw when sampling without a draft distribution), kept while it equals the
/// candidate; returns the accepted tokens (matches plus the target's next token) and the number of
/// matches.
fn select_and_compare(
    candidates: &[TokenId],
    target: &Scores,
    sampler: &mut Sampler,
) -> Result<(Vec<TokenId>, usize)> {
    let mut out = Vec::with_capacity(candidates.len() + 1);
    for i in 0..=candidates.len() {
        let row = Scores::new(target.row(i).to_vec(), 1, target.vocab);
        let tok = sampler.select(&row)?[0];
        out.push(tok);
        if candidates.get(i) != Some(&tok) {
            return Ok((out, i));
        }
    }
    Ok((out, candidates.len()))
}

/// HF `_speculative_sampling` (Leviathan et al. 2023, algorithm 1): candidate `i`, drawn from the
/// draft's processed distribution `q_i`, is kept with probability `min(1, p_i / q_i)` where `p_i` is
/// the target's processed distribution; at the first rejection a token is drawn from
/// `norm(max(0, p - q))`, and when every candidate is kept one more from the target's next
/// distribution. The tokens returned are distributed exactly as the target's own samples.
///
/// `draft`: `[k, vocab]` processed draft scores, `target`: `[k + 1, vocab]` processed target scores.
/// Returns the accepted tokens and the number of candidates kept.
pub fn speculative_sampling(
    candidates: &[TokenId],
    draft: &Scores,
    target: &Scores,
    sampler: &mut Sampler,
) -> Result<(Vec<TokenId>, usize)> {
    let k = candidates.len();
    if draft.batch != k || target.batch != k + 1 || draft.vocab != target.vocab {
        return Err(Error::input(format!(
            "speculative sampling needs draft scores [{k}, vocab] and target scores [{}, vocab] of one \
             vocabulary, got [{}, {}] and [{}, {}]",
            k + 1,
            draft.batch,
            draft.vocab,
            target.batch,
            target.vocab
        )));
    }
    let probs = |row: &[f32]| {
        if row.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
            return Err(Error::input(
                "the processed scores contain NaN or +inf, so there is no distribution to sample from; set `remove_invalid_values: true`",
            ));
        }
        softmax(row).ok_or_else(|| {
            Error::input(
                "every token was filtered out (all scores are -inf), so nothing can be sampled; relax the logits processors",
            )
        })
    };
    let mut out = Vec::with_capacity(k + 1);
    for (i, &tok) in candidates.iter().enumerate() {
        let p = probs(target.row(i))?;
        let q = probs(draft.row(i))?;
        let t = tok as usize;
        let ratio = p.get(t).copied().unwrap_or(0.0) / q.get(t).copied().unwrap_or(0.0);
        if sampler.uniform()? <= ratio {
            out.push(tok);
            continue;
        }
        let residual: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a - b).max(0.0)).collect();
        let sum: f64 = residual.iter().sum();
        let next = if sum > 0.0 {
            let residual: Vec<f64> = residual.iter().map(|r| r / sum).collect();
            sampler.draw_from(&residual)?
        } else {
            sampler.draw_from(&p)?
        };
        out.push(next as TokenId);
        return Ok((out, i));
    }
    let p = probs(target.row(k))?;
    out.push(sampler.draw_from(&p)? as TokenId);
    Ok((out, k))
}
