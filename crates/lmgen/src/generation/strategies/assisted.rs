//! HF `GenerationMixin._assisted_decoding` (`generation/utils.py`): assisted (speculative) decoding
//! for greedy search and sampling, batch size 1.
//!
//! Each round a candidate generator (`generation/candidates`) proposes tokens; the target scores
//! the sequence plus all of them in one forward pass (`logits_to_keep = candidates + 1`), the
//! logits processors run on each position, and the target keeps:
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

use crate::cache::{DynamicCache, EncoderDecoderCache, KvCache};
use crate::error::{Error, Result};
use crate::generation::candidates::universal::UniversalOptions;
use crate::generation::candidates::{
    forward_row, AssistedStats, CandidateGenerator, DraftContext, DraftModelCandidateGenerator,
    EarlyExitCandidateGenerator, PromptLookupCandidateGenerator, RowLayout,
    UniversalCandidateGenerator,
};
use crate::generation::context::GenerationContext;
use crate::generation::logits::Scores;
use crate::generation::resolve::{Assisted, Draft, DraftSource};
use crate::generation::sampler::{softmax, Sampler};
use crate::generation::{GenerateInput, GenerateOutput, ResolvedGeneration};
use crate::models::seq2seq::EncoderOutput;
use crate::models::{CausalLM, LogitsToKeep};
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// The draft model of one call and the tokenizers universal assisted decoding needs.
pub(crate) struct Assistant<'a> {
    /// HF `assistant_model`.
    pub model: Option<&'a dyn CausalLM>,
    /// The target's tokenizer.
    pub tokenizer: Option<&'a Tokenizer>,
    /// HF `assistant_tokenizer`.
    pub assistant_tokenizer: Option<&'a Tokenizer>,
    /// An encoder-decoder draft's encoder output on the call's encoder input (HF
    /// `assistant_encoder_outputs`), which its own cache carries.
    pub encoder_output: Option<EncoderOutput>,
}

/// Assisted decoding of one prompt.
pub(crate) fn run(
    model: &dyn CausalLM,
    input: &GenerateInput,
    g: &ResolvedGeneration,
    ctx: GenerationContext<'_, '_>,
    settings: &Assisted,
    assistant: Assistant<'_>,
) -> Result<GenerateOutput> {
    let Assisted { do_sample, draft } = *settings;
    let GenerationContext {
        processors,
        mut stopping,
        mut sampler,
        mut streamer,
        mut outputs,
        ..
    } = ctx;
    let t = g.prompt_len;
    let (lengths, eos) = (g.lengths, &g.eos_token_id);
    let mut generator = candidate_generator(model, &draft, &assistant)?;
    let mut cache = g.new_cache();
    let mut sequence = input.input_ids[0].clone();
    let prompt_mask = input.attention_mask.as_ref().map(|m| m[0].as_slice());
    let mut layout = RowLayout::new(prompt_mask, t);
    if let Some(s) = streamer.as_mut() {
        s.put(&sequence)?;
    }
    let mut finish = None;
    let mut stats = AssistedStats::default();
    // A recurrent state can only go back to a checkpoint: prefill the prompt (all but its last
    // token, which each round feeds) on its own, so that rejected drafts never send the state
    // back before it.
    let recurrent = model.config().layer_types.iter().any(|l| !l.is_attention());
    if recurrent && sequence.len() > 1 {
        forward_row(
            model,
            &sequence[..sequence.len() - 1],
            &layout,
            LogitsToKeep::Last,
            None,
            cache.as_mut(),
        )?;
    }
    while finish.is_none() {
        let cur_len = sequence.len();
        // 1. Candidates.
        let candidates = generator.get_candidates(DraftContext {
            sequence: &sequence,
            layout: &layout,
            max_length: lengths.max_length,
            processors: &processors,
            sampler: &mut sampler,
            eos,
            target_cache: cache.as_mut(),
        })?;
        let k = candidates.tokens.len();
        // 2. The target over the sequence and the candidates: k + 1 positions of logits.
        let mut extended = sequence.clone();
        extended.extend_from_slice(&candidates.tokens);
        let mut extended_layout = layout.clone();
        extended_layout.resize(extended.len());
        // Rejected candidates are dropped by `crop`; a recurrent state returns here instead and
        // the accepted tokens run again with the next round's candidates (`seq_len` says where).
        cache.checkpoint();
        let raw = forward_row(
            model,
            &extended,
            &extended_layout,
            LogitsToKeep::LastN(k + 1),
            None,
            cache.as_mut(),
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
        for i in 0..appended {
            outputs.push_scores(|| Scores::new(processed.row(i).to_vec(), 1, vocab));
            outputs.push_logits(|| Scores::new(raw.row(i).to_vec(), 1, vocab));
        }
        if let Some(s) = streamer.as_mut() {
            s.put(&sequence[cur_len..])?;
        }
        if finish.is_some() {
            break;
        }
        // 5. Drop the rejected candidates' keys and values (the last token is fed next round;
        // with a recurrent state, every token after the checkpoint).
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
        scores: outputs.scores,
        logits: outputs.logits,
        hidden_states: None,
        attentions: None,
        finish_reasons: vec![finish],
        prompt_len: t,
        sequences_scores: None,
        beam_indices: None,
        assisted: Some(stats),
    })
}

/// HF `_get_candidate_generator` for the draft `resolve` chose: early exit, prompt lookup, or the
/// assistant model, with another tokenizer when the vocabularies differ.
fn candidate_generator<'a>(
    model: &'a dyn CausalLM,
    draft: &Draft,
    assistant: &Assistant<'a>,
) -> Result<Box<dyn CandidateGenerator + 'a>> {
    let (length, threshold) = (draft.length, draft.confidence_threshold);
    let vocab = model.config().vocab_size;
    let (target_lookbehind, assistant_lookbehind) = match draft.source {
        DraftSource::EarlyExit { layers } => {
            return Ok(Box::new(EarlyExitCandidateGenerator::new(
                model, layers, length, threshold,
            )?));
        }
        DraftSource::PromptLookup {
            num_tokens,
            max_matching_ngram_size,
        } => {
            return Ok(Box::new(PromptLookupCandidateGenerator::new(
                num_tokens,
                max_matching_ngram_size,
                vocab,
            )?));
        }
        DraftSource::Model {
            target_lookbehind,
            assistant_lookbehind,
        } => (target_lookbehind, assistant_lookbehind),
    };
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
        let cache = assistant.encoder_output.as_ref().map(|encoder| {
            Box::new(EncoderDecoderCache::new(
                Box::new(DynamicCache::new()),
                encoder.clone(),
            )) as Box<dyn KvCache>
        });
        return Ok(Box::new(DraftModelCandidateGenerator::new(
            draft, length, threshold, cache,
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
                    target_lookbehind,
                    assistant_lookbehind,
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
