//! HF `AssistedCandidateGenerator` (`candidate_generator.py`): a smaller model with the same tokenizer
//! drafts up to `num_assistant_tokens` tokens each round, as the target would pick them (the same
//! logits processors, argmax or a draw), stopping early at EOS or below
//! `assistant_confidence_threshold`.
//!
//! The draft keeps its own KV cache across rounds and crops it to the part of the sequence that
//! is still valid (HF `_update_past_and_masks`). transformers runs the draft through `generate()`
//! with a copy of the target's config and processors; lmgen runs the same steps directly.
//!
//! Deliberate difference: transformers reads `num_assistant_tokens`, its schedule and the confidence
//! threshold from the *assistant's* `generation_config`, so values passed to `generate()` are
//! ignored; lmgen reads them from the call's config (the only place a caller of the CLI or the
//! JSON-lines interface can set them).

use super::confidence::ConfidenceThreshold;
use super::{forward_row, CandidateGenerator, Candidates, DraftContext, DraftLength, RowLayout};
use crate::cache::{DynamicCache, KvCache};
use crate::error::{Error, Result};
use crate::generation::logits::{LogitsProcessorList, Scores};
use crate::generation::sampler::{softmax, Sampler};
use crate::models::{CausalLM, LogitsToKeep};
use crate::TokenId;

/// Where the draft's keys and values live.
pub(crate) enum DraftCache {
    /// A cache of its own, holding the keys and values of `ids` (with the draft's encoder output
    /// beside them for an encoder-decoder draft).
    Own {
        cache: Box<dyn KvCache>,
        ids: Vec<TokenId>,
    },
    /// The target's cache (early exit: the draft is the target's first layers).
    Target,
}

/// Autoregressive drafting with a model: shared by the separate draft, early exit and the draft with
/// another tokenizer.
pub(crate) struct Drafter<'m> {
    pub model: &'m dyn CausalLM,
    /// Early exit after this many layers (`None`: the whole draft model).
    pub num_hidden_layers: Option<usize>,
    pub cache: DraftCache,
}

/// One drafting pass.
pub(crate) struct DraftRun<'r, 'a> {
    /// The draft's input: the sequence in the draft's vocabulary.
    pub ids: &'r [TokenId],
    pub layout: &'r RowLayout,
    /// At most this many tokens (at least 1).
    pub max_new: usize,
    /// Applied to the draft's logits (absent when the draft has another vocabulary).
    pub processors: Option<&'r LogitsProcessorList<'a>>,
    pub sampler: &'r mut Sampler,
    /// Drafting stops after one of these.
    pub eos: &'r [TokenId],
    pub confidence: &'r ConfidenceThreshold,
    /// The target's cache, for [`DraftCache::Target`].
    pub target_cache: Option<&'r mut dyn KvCache>,
}

/// What a drafting pass produced.
#[derive(Debug)]
pub(crate) struct Draft {
    pub tokens: Vec<TokenId>,
    /// Processed scores of each drafted token, `[tokens.len(), vocab]`.
    pub scores: Scores,
    /// The probability the draft gave each of its tokens.
    pub probs: Vec<f32>,
}

impl std::fmt::Debug for DraftCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Own { cache, ids } => f
                .debug_struct("Own")
                .field("cached", &cache.seq_len())
                .field("ids", &ids.len())
                .finish(),
            Self::Target => f.write_str("Target"),
        }
    }
}

impl std::fmt::Debug for Drafter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drafter")
            .field("num_hidden_layers", &self.num_hidden_layers)
            .finish()
    }
}

impl<'m> Drafter<'m> {
    /// A draft model with a cache of its own: a dynamic cache, or `cache` (an encoder-decoder
    /// draft's, holding its encoder output).
    pub fn own(model: &'m dyn CausalLM, cache: Option<Box<dyn KvCache>>) -> Self {
        Self {
            model,
            num_hidden_layers: None,
            cache: DraftCache::Own {
                cache: cache.unwrap_or_else(|| Box::new(DynamicCache::new())),
                ids: Vec::new(),
            },
        }
    }

    /// Drafts up to `run.max_new` tokens after `run.ids`.
    pub fn run(&mut self, run: DraftRun<'_, '_>) -> Result<Draft> {
        let (model, layers) = (self.model, self.num_hidden_layers);
        match &mut self.cache {
            DraftCache::Own { cache, ids } => {
                // Keep what is still valid, and always re-run the last token for its logits.
                let valid = ids
                    .iter()
                    .zip(run.ids)
                    .take_while(|(a, b)| a == b)
                    .count()
                    .min(run.ids.len() - 1);
                // A recurrent state goes back to its checkpoint, maybe before `valid`.
                cache.crop(valid)?;
                ids.truncate(cache.seq_len().min(valid));
                cache.checkpoint();
                let input = run.ids;
                let draft = draft_loop(model, layers, cache.as_mut(), run)?;
                ids.clear();
                ids.extend_from_slice(input);
                ids.extend_from_slice(&draft.tokens[..draft.tokens.len() - 1]);
                Ok(draft)
            }
            DraftCache::Target => {
                let mut run = run;
                let cache = run.target_cache.take().ok_or_else(|| {
                    Error::input("internal: early exit drafting without the target's cache")
                })?;
                let before = cache.seq_len();
                cache.checkpoint();
                let draft = draft_loop(model, layers, cache, run);
                // The target recomputes these positions with every layer: drop the draft's entries.
                cache.crop(before)?;
                draft
            }
        }
    }
}

/// HF `AssistedCandidateGenerator._generate_candidates`: the draft's own greedy/sample loop, stopped
/// by the length budget, an EOS id or low confidence (the stopping token is kept).
fn draft_loop(
    model: &dyn CausalLM,
    num_hidden_layers: Option<usize>,
    cache: &mut dyn KvCache,
    run: DraftRun<'_, '_>,
) -> Result<Draft> {
    let mut rows = vec![run.ids.to_vec()];
    let mut layout = run.layout.clone();
    let mut tokens = Vec::new();
    let mut data = Vec::new();
    let mut probs = Vec::new();
    let mut vocab;
    loop {
        let mut scores = forward_row(
            model,
            &rows[0],
            &layout,
            LogitsToKeep::Last,
            num_hidden_layers,
            cache,
        )?; // [1, vocab]
        if let Some(p) = run.processors {
            p.process(&rows, &mut scores)?;
        }
        let tok = run.sampler.select(&scores)?[0];
        let p = softmax(scores.row(0))
            .and_then(|probs| probs.get(tok as usize).copied())
            .unwrap_or(0.0) as f32;
        vocab = scores.vocab;
        data.extend_from_slice(scores.row(0));
        tokens.push(tok);
        probs.push(p);
        rows[0].push(tok);
        layout.push();
        if tokens.len() >= run.max_new || run.eos.contains(&tok) || run.confidence.stops(p) {
            break;
        }
    }
    let n = tokens.len();
    Ok(Draft {
        tokens,
        scores: Scores::new(data, n, vocab),
        probs,
    })
}

/// HF `AssistedCandidateGenerator`: a separate draft model with the target's tokenizer.
#[doc(alias = "AssistedCandidateGenerator")]
#[derive(Debug)]
pub struct DraftModelCandidateGenerator<'m> {
    drafter: Drafter<'m>,
    length: DraftLength,
    confidence: ConfidenceThreshold,
}

impl<'m> DraftModelCandidateGenerator<'m> {
    /// A draft `assistant` drafting `length` tokens per round, stopping below
    /// `assistant_confidence_threshold` (which adapts from round to round, as transformers with
    /// scikit-learn). `cache`: the draft's own (an encoder-decoder draft's, with its encoder
    /// output), else a new dynamic cache.
    pub fn new(
        assistant: &'m dyn CausalLM,
        length: DraftLength,
        assistant_confidence_threshold: f32,
        cache: Option<Box<dyn KvCache>>,
    ) -> Self {
        Self {
            drafter: Drafter::own(assistant, cache),
            length,
            confidence: ConfidenceThreshold::new(assistant_confidence_threshold, true),
        }
    }

    /// With any drafter, a fixed confidence threshold (early exit).
    pub(crate) fn with_drafter(
        drafter: Drafter<'m>,
        length: DraftLength,
        confidence: ConfidenceThreshold,
    ) -> Self {
        Self {
            drafter,
            length,
            confidence,
        }
    }
}

impl CandidateGenerator for DraftModelCandidateGenerator<'_> {
    fn get_candidates(&mut self, ctx: DraftContext<'_, '_>) -> Result<Candidates> {
        // HF `_calculate_new_tokens`: leave room for the target's own token.
        let cur_len = ctx.sequence.len();
        let max_new = self
            .length
            .num_assistant_tokens
            .min(ctx.max_length.saturating_sub(cur_len + 1));
        if max_new == 0 {
            return Ok(Candidates::default());
        }
        let draft = self.drafter.run(DraftRun {
            ids: ctx.sequence,
            layout: ctx.layout,
            max_new,
            processors: Some(ctx.processors),
            sampler: ctx.sampler,
            eos: ctx.eos,
            confidence: &self.confidence,
            target_cache: Some(ctx.target_cache),
        })?;
        self.confidence.record(&draft.probs);
        Ok(Candidates {
            tokens: draft.tokens,
            scores: Some(draft.scores),
        })
    }

    fn update_candidate_strategy(
        &mut self,
        _sequence: &[TokenId],
        num_candidates: usize,
        num_matches: usize,
    ) {
        self.length.update(num_candidates, num_matches);
        self.confidence.update(num_matches);
    }

    fn num_candidate_tokens(&self) -> usize {
        self.length.num_assistant_tokens
    }
}
