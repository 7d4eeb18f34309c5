//! HF `ConstraintListState` (`beam_constraints.py`, transformers 4.47): one hypothesis' progress
//! through a list of constraints, and the "bank" constrained beam search sorts candidates by.

use super::Constraint;
use crate::error::{Error, Result};
use crate::TokenId;

/// Progress of one token sequence through a list of constraints (HF `ConstraintListState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintListState {
    /// The constraints, without progress.
    constraints: Vec<Constraint>,
    /// Longest constraint (HF `max_seqlen`).
    max_seqlen: usize,
    completed: bool,
    complete: Vec<Constraint>,
    inprogress: Option<Constraint>,
    pending: Vec<Constraint>,
}

impl ConstraintListState {
    /// A state with no progress; refuses an empty list.
    pub fn new(constraints: &[Constraint]) -> Result<Self> {
        if constraints.is_empty() {
            return Err(Error::config(
                "constrained beam search needs at least one constraint",
            ));
        }
        let constraints: Vec<Constraint> = constraints.iter().map(Constraint::fresh).collect();
        Ok(Self {
            max_seqlen: constraints
                .iter()
                .map(Constraint::seqlen)
                .max()
                .unwrap_or(0),
            pending: constraints.clone(),
            constraints,
            completed: false,
            complete: Vec::new(),
            inprogress: None,
        })
    }

    /// Whether every constraint is fulfilled.
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// HF `init_state`.
    fn init_state(&mut self) {
        self.complete.clear();
        self.inprogress = None;
        self.pending = self.constraints.iter().map(Constraint::fresh).collect();
    }

    /// HF `get_bank`: completed constraints times the longest constraint, plus the progress of the
    /// one in progress. Candidates with more progress rank in a higher bank.
    pub fn bank(&self) -> usize {
        let add = self
            .inprogress
            .as_ref()
            .map_or(0, |c| self.max_seqlen - c.remaining());
        self.complete.len() * self.max_seqlen + add
    }

    /// The tokens that make progress (HF `advance`): the next token of the constraint in progress,
    /// else the first tokens of every pending constraint.
    pub fn advance(&self) -> Vec<TokenId> {
        match &self.inprogress {
            Some(c) => c.advance(),
            None => self.pending.iter().flat_map(Constraint::advance).collect(),
        }
    }

    /// HF `reset(token_ids)`: the progress of the sequence `tokens` from scratch.
    pub fn reset(&mut self, tokens: &[TokenId]) {
        self.init_state();
        for &t in tokens {
            self.add(t);
            if self.completed {
                break;
            }
        }
    }

    /// HF `add`: records one generated token; returns `(complete, stepped)`.
    pub fn add(&mut self, token: TokenId) -> (bool, bool) {
        if self.completed {
            return (true, false);
        }
        if let Some(c) = self.inprogress.as_mut() {
            // In the middle of a constraint: the token continues it or breaks it (a broken
            // constraint goes back to pending, fresh; the token is not tried on the others).
            let (stepped, complete, reset) = c.update(token);
            if reset {
                self.pending.push(c.fresh());
                self.inprogress = None;
            }
            if complete {
                if let Some(c) = self.inprogress.take() {
                    self.complete.push(c);
                }
                if self.pending.is_empty() {
                    self.completed = true;
                }
            }
            return (complete, stepped);
        }
        // Not in a constraint: the first pending one the token advances takes it.
        let Some(cidx) = self.pending.iter().position(|c| c.does_advance(token)) else {
            return (false, false);
        };
        let mut c = self.pending.remove(cidx);
        let (stepped, complete, _) = c.update(token);
        if complete {
            self.complete.push(c);
        } else if stepped {
            self.inprogress = Some(c);
        }
        if self.pending.is_empty() && self.inprogress.is_none() {
            self.completed = true;
        }
        (complete, stepped)
    }

    /// `advance_state.copy(stateful=True)` followed by `.add(token)`, as HF
    /// `ConstrainedBeamSearchScorer.step_sentence_constraint` does for each advance token.
    ///
    /// transformers' stateful copy of a [`DisjunctiveConstraint`](super::DisjunctiveConstraint)
    /// shares its `current_seq` list with the original, so when the copy steps, the original's
    /// progress grows too and the next advance token of the same hypothesis is applied to that longer
    /// progress. lmgen reproduces it: `self` (the original) sees the step.
    pub fn advanced_copy(&mut self, token: TokenId) -> Self {
        let mut copy = self.clone();
        copy.add(token);
        if let Some(Constraint::Disjunctive(shared)) = self.inprogress.as_mut() {
            if shared.does_advance(token) {
                shared.push_aliased(token);
            }
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(c: Vec<Constraint>) -> ConstraintListState {
        ConstraintListState::new(&c).unwrap()
    }

    #[test]
    fn banks_rank_progress() {
        let p = Constraint::phrasal(vec![1, 2, 3]).unwrap();
        let q = Constraint::phrasal(vec![7]).unwrap();
        let mut s = state(vec![p, q]);
        assert_eq!(s.advance(), vec![1, 7]);
        s.reset(&[9, 1, 2]);
        assert_eq!(s.bank(), 2); // max_seqlen 3 - remaining 1
        assert_eq!(s.advance(), vec![3]);
        s.reset(&[1, 2, 3, 7]);
        assert!(s.completed());
        assert_eq!(s.bank(), 6);
    }

    #[test]
    fn a_broken_phrase_does_not_retry_the_breaking_token() {
        // transformers: "1 1 2" does not fulfil [1, 2]: the second 1 breaks progress and is dropped.
        let mut s = state(vec![Constraint::phrasal(vec![1, 2]).unwrap()]);
        s.reset(&[1, 1, 2]);
        assert!(!s.completed());
        s.reset(&[1, 2]);
        assert!(s.completed());
    }

    #[test]
    fn stateful_copies_of_a_disjunctive_constraint_share_progress() {
        let d = Constraint::disjunctive(vec![vec![1, 2], vec![1, 3]]).unwrap();
        let mut s = state(vec![d]);
        s.reset(&[1]);
        assert_eq!(s.advance(), vec![2, 3]);
        let a = s.advanced_copy(2);
        assert!(a.completed());
        // The original now sees [1, 2]: token 3 breaks it in the second copy.
        let b = s.advanced_copy(3);
        assert!(!b.completed());
        assert_eq!(b.bank(), 0);
    }
}
