//! Constraints for constrained beam search (HF `beam_constraints.py`, transformers 4.47; transformers
//! 5 moved constrained beam search to the Hub, lmgen keeps it built in): tokens the output must
//! contain, and the per-hypothesis progress through them.
//!
//! `force_words_ids` in a [`GenerationConfig`](crate::generation::GenerationConfig) builds them from
//! JSON; [`GenerateOptions::constraints`](crate::generation::GenerateOptions::constraints) takes them
//! directly (transformers' `constraints` argument).

mod disjunctive;
mod list_state;
mod phrasal;

pub use disjunctive::DisjunctiveConstraint;
pub(crate) use list_state::ConstraintListState;
pub use phrasal::PhrasalConstraint;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::TokenId;

/// A constraint on the output (HF `Constraint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// An ordered run of tokens.
    Phrasal(PhrasalConstraint),
    /// Any one of several runs of tokens.
    Disjunctive(DisjunctiveConstraint),
}

impl Constraint {
    /// A [`PhrasalConstraint`].
    pub fn phrasal(token_ids: Vec<TokenId>) -> Result<Self> {
        PhrasalConstraint::new(token_ids).map(Self::Phrasal)
    }

    /// A [`DisjunctiveConstraint`].
    pub fn disjunctive(words: Vec<Vec<TokenId>>) -> Result<Self> {
        DisjunctiveConstraint::new(words).map(Self::Disjunctive)
    }

    /// Tokens needed to fulfil it from scratch (HF `seqlen`).
    pub(crate) fn seqlen(&self) -> usize {
        match self {
            Self::Phrasal(c) => c.seqlen(),
            Self::Disjunctive(c) => c.seqlen(),
        }
    }

    /// The tokens that make progress (HF `advance`), empty when none.
    pub(crate) fn advance(&self) -> Vec<TokenId> {
        match self {
            Self::Phrasal(c) => c.advance().into_iter().collect(),
            Self::Disjunctive(c) => c.advance(),
        }
    }

    /// Whether `token` makes progress (HF `does_advance`).
    pub(crate) fn does_advance(&self, token: TokenId) -> bool {
        match self {
            Self::Phrasal(c) => c.does_advance(token),
            Self::Disjunctive(c) => c.does_advance(token),
        }
    }

    /// Records `token` (HF `update`): `(stepped, completed, reset)`.
    pub(crate) fn update(&mut self, token: TokenId) -> (bool, bool, bool) {
        match self {
            Self::Phrasal(c) => c.update(token),
            Self::Disjunctive(c) => c.update(token),
        }
    }

    /// Tokens still needed (HF `remaining`).
    pub(crate) fn remaining(&self) -> usize {
        match self {
            Self::Phrasal(c) => c.remaining(),
            Self::Disjunctive(c) => c.remaining(),
        }
    }

    /// The same constraint with no progress (HF `copy(stateful=False)`).
    pub(crate) fn fresh(&self) -> Self {
        match self {
            Self::Phrasal(c) => Self::Phrasal(c.fresh()),
            Self::Disjunctive(c) => Self::Disjunctive(c.fresh()),
        }
    }

    /// The constraints of `force_words_ids` (HF `generate()`): a list whose items are either a word
    /// (`[int]`, a [`PhrasalConstraint`]) or a list of alternative words (`[[int]]`, a
    /// [`DisjunctiveConstraint`]).
    pub(crate) fn from_force_words_ids(value: &Value) -> Result<Vec<Self>> {
        let bad = || {
            Error::config(format!(
                "`force_words_ids` has to either be a `List[List[List[int]]]` or `List[List[int]]` of positive integers, but is {value}"
            ))
        };
        let ids = |v: &Value| -> Result<Vec<TokenId>> {
            let items = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
            items
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|n| TokenId::try_from(n).ok())
                        .ok_or_else(bad)
                })
                .collect()
        };
        let words = value.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
        words
            .iter()
            .map(|word| {
                let items = word.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
                if items[0].is_array() {
                    let alternatives = items.iter().map(ids).collect::<Result<Vec<_>>>()?;
                    Self::disjunctive(alternatives)
                } else {
                    Self::phrasal(ids(word)?)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn force_words_ids_builds_phrasal_and_disjunctive_constraints() {
        let got = Constraint::from_force_words_ids(&json!([[11, 29], [[432], [56, 301]]])).unwrap();
        assert_eq!(got[0], Constraint::phrasal(vec![11, 29]).unwrap());
        assert_eq!(
            got[1],
            Constraint::disjunctive(vec![vec![432], vec![56, 301]]).unwrap()
        );
    }

    #[test]
    fn malformed_force_words_ids_name_the_field() {
        for bad in [
            json!([]),
            json!([[]]),
            json!([[-1]]),
            json!([["a"]]),
            json!(7),
            json!([[[1], []]]),
            json!([[[1], [1, 2]]]),
        ] {
            let err = Constraint::from_force_words_ids(&bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("force_words_ids") || err.contains("disjunctive"),
                "{bad}: {err}"
            );
        }
    }
}
