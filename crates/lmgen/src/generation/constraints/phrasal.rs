//! HF `PhrasalConstraint` (`src/transformers/generation/beam_constraints.py`, transformers 4.47): an
//! ordered sequence of tokens that must appear in the output.

use crate::error::{Error, Result};
use crate::TokenId;

/// An ordered run of tokens the output must contain (HF `PhrasalConstraint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhrasalConstraint {
    token_ids: Vec<TokenId>,
    /// Index of the last fulfilled token, `-1` before the first.
    fulfilled_idx: isize,
    completed: bool,
}

impl PhrasalConstraint {
    /// A constraint forcing `token_ids`, in order; refuses an empty list.
    pub(crate) fn new(token_ids: Vec<TokenId>) -> Result<Self> {
        if token_ids.is_empty() {
            return Err(Error::config(
                "a phrasal constraint needs a non-empty list of token ids",
            ));
        }
        Ok(Self {
            token_ids,
            fulfilled_idx: -1,
            completed: false,
        })
    }

    /// Tokens needed to fulfil the constraint from scratch (HF `seqlen`).
    pub(crate) fn seqlen(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether every token has been generated in order.
    #[cfg(test)]
    pub(crate) fn completed(&self) -> bool {
        self.completed
    }

    /// The token that makes progress (HF `advance`); `None` once completed.
    pub(crate) fn advance(&self) -> Option<TokenId> {
        if self.completed {
            return None;
        }
        self.token_ids
            .get((self.fulfilled_idx + 1) as usize)
            .copied()
    }

    /// Whether `token` makes progress (HF `does_advance`).
    pub(crate) fn does_advance(&self, token: TokenId) -> bool {
        !self.completed && self.advance() == Some(token)
    }

    /// Records `token` (HF `update`): returns `(stepped, completed, reset)`.
    pub(crate) fn update(&mut self, token: TokenId) -> (bool, bool, bool) {
        if self.does_advance(token) {
            self.fulfilled_idx += 1;
            self.completed = self.fulfilled_idx as usize == self.token_ids.len() - 1;
            (true, self.completed, false)
        } else {
            self.reset();
            (false, false, true)
        }
    }

    /// HF `reset`. transformers sets `fulfilled_idx = 0` here, not `-1`; kept, since a reset
    /// constraint is always replaced by a fresh copy in [`super::ConstraintListState`].
    pub(crate) fn reset(&mut self) {
        self.completed = false;
        self.fulfilled_idx = 0;
    }

    /// Tokens still needed (HF `remaining`).
    pub(crate) fn remaining(&self) -> usize {
        (self.token_ids.len() as isize - (self.fulfilled_idx + 1)).max(0) as usize
    }

    /// The same constraint with no progress (HF `copy(stateful=False)`).
    pub(crate) fn fresh(&self) -> Self {
        Self {
            token_ids: self.token_ids.clone(),
            fulfilled_idx: -1,
            completed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_through_the_phrase_and_resets_on_a_wrong_token() {
        let mut c = PhrasalConstraint::new(vec![5, 6, 7]).unwrap();
        assert_eq!(c.advance(), Some(5));
        assert_eq!(c.update(5), (true, false, false));
        assert_eq!(c.remaining(), 2);
        assert_eq!(c.update(9), (false, false, true));
        let mut c = c.fresh();
        c.update(5);
        c.update(6);
        assert_eq!(c.update(7), (true, true, false));
        assert!(c.completed());
        assert_eq!(c.advance(), None);
        assert_eq!(c.remaining(), 0);
        assert!(PhrasalConstraint::new(vec![]).is_err());
    }
}
