//! HF `EarlyExitCandidateGenerator` (`candidate_generator.py`): self-speculative decoding, the draft
//! being the target's own first `assistant_early_exit` layers followed by its final norm and LM head
//! (LayerSkip). It only pays off with models trained for it (e.g. `facebook/layerskip-llama3.2-1B`);
//! the output is the target's either way.
//!
//! transformers gives the draft a cache of its own; lmgen drafts into the target's cache, whose first
//! layers hold exactly the keys and values the draft needs, and crops the draft's entries before the
//! target verifies (the draft's weights and cache are the target's).

use super::confidence::ConfidenceThreshold;
use super::draft_model::{DraftCache, Drafter};
use super::DraftModelCandidateGenerator;
use super::{CandidateGenerator, Candidates, DraftContext, DraftLength};
use crate::error::{Error, Result};
use crate::models::CausalLM;
use crate::TokenId;

/// The target's first layers as the draft.
#[derive(Debug)]
pub struct EarlyExitCandidateGenerator<'m> {
    inner: DraftModelCandidateGenerator<'m>,
}

impl<'m> EarlyExitCandidateGenerator<'m> {
    /// Drafts with the first `assistant_early_exit` layers of `model`, which must be between 1 and
    /// the model's `num_hidden_layers`.
    pub fn new(
        model: &'m dyn CausalLM,
        assistant_early_exit: usize,
        length: DraftLength,
        assistant_confidence_threshold: f32,
    ) -> Result<Self> {
        let layers = model.config().num_hidden_layers;
        if assistant_early_exit == 0 || assistant_early_exit > layers {
            return Err(Error::config(format!(
                "`assistant_early_exit` must be between 1 and the model's `num_hidden_layers` ({layers}), got {assistant_early_exit}"
            )));
        }
        let drafter = Drafter {
            model,
            num_hidden_layers: Some(assistant_early_exit),
            cache: DraftCache::Target,
        };
        // transformers adapts the threshold only for `AssistedCandidateGenerator` itself.
        let confidence = ConfidenceThreshold::new(assistant_confidence_threshold, false);
        Ok(Self {
            inner: DraftModelCandidateGenerator::with_drafter(drafter, length, confidence),
        })
    }
}

impl CandidateGenerator for EarlyExitCandidateGenerator<'_> {
    fn get_candidates(&mut self, ctx: DraftContext<'_, '_>) -> Result<Candidates> {
        self.inner.get_candidates(ctx)
    }

    fn update_candidate_strategy(
        &mut self,
        sequence: &[TokenId],
        num_candidates: usize,
        num_matches: usize,
    ) {
        self.inner
            .update_candidate_strategy(sequence, num_candidates, num_matches);
    }

    fn num_candidate_tokens(&self) -> usize {
        self.inner.num_candidate_tokens()
    }
}
