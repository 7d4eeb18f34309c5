//! HF `DisjunctiveConstraint` and its `DisjunctiveTrie` (`beam_constraints.py`, transformers 4.47):
//! fulfilled by generating any one of several token sequences.

use crate::error::{Error, Result};
use crate::TokenId;

/// One of several words must appear in the output (HF `DisjunctiveConstraint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisjunctiveConstraint {
    /// The words, each a token sequence (HF `token_ids`).
    words: Vec<Vec<TokenId>>,
    /// The tokens generated so far along the trie (HF `current_seq`).
    current_seq: Vec<TokenId>,
    completed: bool,
}

impl DisjunctiveConstraint {
    /// A constraint fulfilled by any of `words`; refuses an empty list, an empty word, and a word that
    /// is a prefix of another (or a duplicate), as HF `DisjunctiveTrie(no_subsets=True)`.
    pub(crate) fn new(words: Vec<Vec<TokenId>>) -> Result<Self> {
        if words.is_empty() || words.iter().any(Vec::is_empty) {
            return Err(Error::config(format!(
                "a disjunctive constraint needs a non-empty list of non-empty token lists, got {words:?}"
            )));
        }
        let is_leaf =
            |w: &Vec<TokenId>| !words.iter().any(|o| o.len() > w.len() && o.starts_with(w));
        let mut leaves: Vec<&Vec<TokenId>> = words.iter().filter(|w| is_leaf(w)).collect();
        leaves.sort();
        leaves.dedup();
        if leaves.len() != words.len() {
            return Err(Error::config(format!(
                "each list of a disjunctive constraint can't be a complete subset of another list, but is {words:?}"
            )));
        }
        Ok(Self {
            words,
            current_seq: Vec::new(),
            completed: false,
        })
    }

    /// The longest word's length (HF `seqlen`, the trie's `max_height`).
    pub(crate) fn seqlen(&self) -> usize {
        self.words.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The trie's children of `current_seq`, in first-seen order (HF `DisjunctiveTrie.next_tokens`).
    fn next_tokens(&self) -> Vec<TokenId> {
        let n = self.current_seq.len();
        let mut out = Vec::new();
        for w in &self.words {
            if w.len() > n && w.starts_with(&self.current_seq) && !out.contains(&w[n]) {
                out.push(w[n]);
            }
        }
        out
    }

    /// The tokens that make progress (HF `advance`); empty once a word is complete.
    pub(crate) fn advance(&self) -> Vec<TokenId> {
        self.next_tokens()
    }

    /// Whether `token` makes progress (HF `does_advance`).
    pub(crate) fn does_advance(&self, token: TokenId) -> bool {
        self.next_tokens().contains(&token)
    }

    /// Records `token` (HF `update`): returns `(stepped, completed, reset)`.
    pub(crate) fn update(&mut self, token: TokenId) -> (bool, bool, bool) {
        let stepped = self.does_advance(token);
        if stepped {
            self.current_seq.push(token);
        } else {
            self.reset();
        }
        self.completed = self.next_tokens().is_empty();
        (stepped, self.completed, !stepped)
    }

    /// HF `reset`.
    pub(crate) fn reset(&mut self) {
        self.completed = false;
        self.current_seq.clear();
    }

    /// Tokens still needed to reach the longest word (HF `remaining`); 0 once complete.
    pub(crate) fn remaining(&self) -> usize {
        if self.completed {
            0
        } else {
            self.seqlen() - self.current_seq.len()
        }
    }

    /// The same constraint with no progress (HF `copy(stateful=False)`).
    pub(crate) fn fresh(&self) -> Self {
        Self {
            words: self.words.clone(),
            current_seq: Vec::new(),
            completed: false,
        }
    }

    /// Appends `token` to the progress without any check: what a Python alias of `current_seq`
    /// sees when a stateful copy steps (see [`super::ConstraintListState::advanced_copy`]).
    pub(super) fn push_aliased(&mut self, token: TokenId) {
        self.current_seq.push(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_word_completes_it() {
        let c = DisjunctiveConstraint::new(vec![vec![1], vec![2, 3]]).unwrap();
        assert_eq!(c.advance(), vec![1, 2]);
        assert_eq!(c.seqlen(), 2);
        let mut a = c.clone();
        assert_eq!(a.update(2), (true, false, false));
        assert_eq!(a.remaining(), 1);
        assert_eq!(a.update(3), (true, true, false));
        let mut b = c.fresh();
        assert_eq!(b.update(1), (true, true, false));
        assert_eq!(b.remaining(), 0);
        let mut r = c.fresh();
        assert_eq!(r.update(9), (false, false, true));
    }

    #[test]
    fn refuses_subsets_duplicates_and_empty_words() {
        assert!(DisjunctiveConstraint::new(vec![vec![1], vec![1, 2]]).is_err());
        assert!(DisjunctiveConstraint::new(vec![vec![1, 2], vec![1, 2]]).is_err());
        assert!(DisjunctiveConstraint::new(vec![vec![]]).is_err());
        assert!(DisjunctiveConstraint::new(vec![]).is_err());
        assert!(DisjunctiveConstraint::new(vec![vec![1, 2], vec![1, 3]]).is_ok());
    }
}
