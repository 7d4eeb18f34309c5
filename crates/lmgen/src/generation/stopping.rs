//! Stopping criteria (HF `stopping_criteria.py`), checked per sequence after each new token.

use std::time::Instant;

use crate::TokenId;

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// Reached `max_length` / `max_new_tokens`.
    Length,
    /// Generated an EOS token.
    Eos,
    /// The text ends in one of `stop_strings` (HF `StopStringCriteria`).
    StopString,
    /// Ran past `max_time` seconds (HF `MaxTimeCriteria`).
    Time,
    /// The model drafts as an assistant (`is_assistant`) and was less sure of its last token
    /// than `assistant_confidence_threshold` (HF `ConfidenceCriteria`).
    Confidence,
}

impl FinishReason {
    /// The OpenAI-style name: `"length"` or `"stop"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos
            | FinishReason::StopString
            | FinishReason::Time
            | FinishReason::Confidence => "stop",
        }
    }
}

/// HF `StoppingCriteria`, per sequence: `tokens` is the whole row (prompt and generated).
pub trait StoppingCriterion: Send {
    /// Why the row is done, or `None` to go on.
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason>;
}

/// HF `MaxLengthCriteria`: done once the row holds `max_length` tokens (prompt included).
#[derive(Debug, Clone)]
pub(crate) struct MaxLengthCriteria {
    pub max_length: usize,
}

impl StoppingCriterion for MaxLengthCriteria {
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        (tokens.len() >= self.max_length).then_some(FinishReason::Length)
    }
}

/// HF `EosTokenCriteria`: done when the last token is one of the EOS ids (the EOS is kept).
#[derive(Debug, Clone)]
pub(crate) struct EosTokenCriteria {
    pub eos_token_ids: Vec<TokenId>,
}

impl StoppingCriterion for EosTokenCriteria {
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        let last = tokens.last()?;
        self.eos_token_ids
            .contains(last)
            .then_some(FinishReason::Eos)
    }
}

/// HF `MaxTimeCriteria`: done once more than `max_time` seconds have passed since
/// `initial_timestamp` (by default, when the criterion was built). Like transformers, a zero or
/// negative `max_time` stops at the first check.
#[derive(Debug, Clone)]
pub(crate) struct MaxTimeCriteria {
    pub max_time: f64,
    pub initial_timestamp: Instant,
}

impl MaxTimeCriteria {
    /// Counts from now.
    pub fn new(max_time: f64) -> Self {
        Self {
            max_time,
            initial_timestamp: Instant::now(),
        }
    }
}

impl StoppingCriterion for MaxTimeCriteria {
    fn check(&mut self, _tokens: &[TokenId]) -> Option<FinishReason> {
        (self.initial_timestamp.elapsed().as_secs_f64() > self.max_time)
            .then_some(FinishReason::Time)
    }
}

/// HF `StoppingCriteriaList`: the first criterion that fires gives the reason.
#[derive(Default)]
pub(crate) struct StoppingCriteriaList<'a> {
    criteria: Vec<Box<dyn StoppingCriterion + 'a>>,
}

impl std::fmt::Debug for StoppingCriteriaList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoppingCriteriaList({} criteria)", self.criteria.len())
    }
}

impl<'a> StoppingCriteriaList<'a> {
    /// Max length then EOS. `generate()` builds the full list in transformers' order
    /// (`_get_stopping_criteria`): max length, max time, stop strings, EOS, then the caller's.
    pub fn new(max_length: usize, eos_token_ids: &[TokenId]) -> Self {
        let mut list = Self::default();
        list.push(MaxLengthCriteria { max_length });
        list.push_eos(eos_token_ids);
        list
    }

    /// Adds the EOS criterion when there are EOS ids.
    pub fn push_eos(&mut self, eos_token_ids: &[TokenId]) {
        if !eos_token_ids.is_empty() {
            self.push(EosTokenCriteria {
                eos_token_ids: eos_token_ids.to_vec(),
            });
        }
    }

    pub fn push(&mut self, c: impl StoppingCriterion + 'a) {
        self.criteria.push(Box::new(c));
    }

    pub fn push_boxed(&mut self, c: Box<dyn StoppingCriterion + 'a>) {
        self.criteria.push(c);
    }

    /// Checks every criterion (each sees the row, as transformers runs them all). When several
    /// fire at once, the more specific reason wins over `Length` (an EOS on the last allowed
    /// step is reported as `Eos`).
    pub fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        let mut reason = None;
        for c in &mut self.criteria {
            match (c.check(tokens), reason) {
                (Some(r), None) | (Some(r), Some(FinishReason::Length)) => reason = Some(r),
                _ => {}
            }
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_is_reported_over_length() {
        let mut l = StoppingCriteriaList::new(3, &[7]);
        assert_eq!(l.check(&[1, 2]), None);
        assert_eq!(l.check(&[1, 7]), Some(FinishReason::Eos));
        assert_eq!(l.check(&[1, 2, 3]), Some(FinishReason::Length));
        assert_eq!(l.check(&[1, 2, 7]), Some(FinishReason::Eos));
    }

    #[test]
    fn max_time() {
        let mut c = MaxTimeCriteria::new(3600.0);
        assert_eq!(c.check(&[1]), None);
        let mut c = MaxTimeCriteria::new(-1.0);
        assert_eq!(c.check(&[1]), Some(FinishReason::Time));
        c.initial_timestamp -= std::time::Duration::from_millis(20);
        c.max_time = 0.01;
        assert_eq!(c.check(&[1]), Some(FinishReason::Time));
        assert_eq!(FinishReason::StopString.as_str(), "stop");
    }
}
