//! HF `WhisperTimeStampLogitsProcessor` (`src/transformers/generation/logits_process.py`): the
//! rules that make Whisper's timestamp tokens well formed when `return_timestamps` is on.
//!
//! Per row, over the tokens generated since `begin_index`: `<|notimestamps|>` is never chosen;
//! timestamps come in pairs (after two timestamps a text token must follow, after one timestamp
//! that followed text, another timestamp or EOS); timestamps never decrease (nor repeat, except to
//! close a pair); the first generated token is a timestamp of at most
//! `max_initial_timestamp_index`; and when the probability of all timestamps together beats
//! every single text token, a timestamp is forced.

use super::super::logits::{LogitsProcessor, Scores};
use crate::error::Result;
use crate::TokenId;

/// Well-formed timestamps (`return_timestamps=True`).
#[derive(Debug, Clone)]
pub struct WhisperTimeStampLogitsProcessor {
    /// `<|notimestamps|>`.
    pub no_timestamps_token_id: TokenId,
    /// The first timestamp token, `<|0.00|>`: `no_timestamps_token_id + 1`.
    pub timestamp_begin: TokenId,
    /// Text tokens are the ids below this (`eos_token_id`, else `bos_token_id`).
    pub eos_token_id: TokenId,
    /// Index of the first generated token (the decoder prompt's length).
    pub begin_index: usize,
    /// `max_initial_timestamp_index`: `None` lets the first timestamp be any.
    pub max_initial_timestamp_index: Option<usize>,
    /// Force a timestamp when all timestamps together are likelier than any text token
    /// (`_detect_timestamp_from_logprob`, default true).
    pub detect_timestamp_from_logprob: bool,
}

/// Sets `row[from..to]` (clamped to the row) to `-inf`.
fn mask(row: &mut [f32], from: usize, to: usize) {
    let to = to.min(row.len());
    if from < to {
        row[from..to].fill(f32::NEG_INFINITY);
    }
}

impl LogitsProcessor for WhisperTimeStampLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> Result<()> {
        let begin = self.timestamp_begin as usize;
        let eos = self.eos_token_id as usize;
        let vocab = scores.vocab;
        let cur_len = input_ids.first().map_or(0, Vec::len);
        for (k, ids) in input_ids.iter().enumerate() {
            let row = scores.row_mut(k);
            mask(
                row,
                self.no_timestamps_token_id as usize,
                self.no_timestamps_token_id as usize + 1,
            );
            let seq = ids.get(self.begin_index..).unwrap_or(&[]);
            let is_ts = |t: TokenId| t >= self.timestamp_begin;
            let last_was_timestamp = seq.last().is_some_and(|&t| is_ts(t));
            let penultimate_was_timestamp = seq.len() < 2 || is_ts(seq[seq.len() - 2]);
            if last_was_timestamp {
                if penultimate_was_timestamp {
                    mask(row, begin, vocab); // has to be a text token
                } else {
                    mask(row, 0, eos); // cannot be a text token
                }
            }
            if let Some(&last_ts) = seq.iter().rev().find(|&&t| is_ts(t)) {
                // Timestamps never decrease; <|0.00|> is not emitted twice.
                let last = if last_was_timestamp && !penultimate_was_timestamp {
                    last_ts as usize
                } else {
                    last_ts as usize + 1
                };
                mask(row, begin, last);
            }
        }
        if cur_len == self.begin_index {
            for row in scores.rows_mut() {
                mask(row, 0, begin);
                if let Some(max) = self.max_initial_timestamp_index {
                    mask(row, begin + max + 1, vocab);
                }
            }
        }
        if self.detect_timestamp_from_logprob {
            for row in scores.rows_mut() {
                let lse = log_sum_exp(row);
                let split = begin.min(row.len());
                // log_softmax, then logsumexp over the timestamps and max over the text tokens.
                let timestamp_logprob = log_sum_exp(&row[split..]) - lse;
                let max_text = row[..split]
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
                    - lse;
                if timestamp_logprob > max_text {
                    mask(row, 0, split);
                }
            }
        }
        Ok(())
    }
}

/// `log(sum(exp(row)))` in f32 (`-inf` for an empty or all `-inf` row), as torch's `logsumexp`.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vocabulary: 0..4 text, 4 = EOS, 5 = <|notimestamps|>, 6.. timestamps.
    fn processor(begin_index: usize) -> WhisperTimeStampLogitsProcessor {
        WhisperTimeStampLogitsProcessor {
            no_timestamps_token_id: 5,
            timestamp_begin: 6,
            eos_token_id: 4,
            begin_index,
            max_initial_timestamp_index: Some(1),
            detect_timestamp_from_logprob: true,
        }
    }

    fn run(p: &WhisperTimeStampLogitsProcessor, ids: Vec<TokenId>, row: Vec<f32>) -> Vec<bool> {
        let mut s = Scores::new(row, 1, 10);
        p.process(&[ids], &mut s).unwrap();
        s.data.iter().map(|x| x.is_finite()).collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let allowed = run(&processor(2), vec![9, 9], vec![5.0; 10]);
        assert_eq!(
            allowed,
            [false, false, false, false, false, false, true, true, false, false]
        );
    }

    #[test]
    fn timestamps_pair_up_and_never_go_back() {
        // text after <|0.02|>: a pair closes with a timestamp >= <|0.02|> or EOS.
        let p = processor(1);
        // Text tokens likelier than all timestamps together, so no timestamp is forced.
        let text_first = vec![5.0, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let allowed = run(&p, vec![9, 7, 1], text_first.clone());
        assert_eq!(allowed[..6], [true, true, true, true, true, false]);
        assert!(!allowed[6] && !allowed[7] && allowed[8], "{allowed:?}");
        // one timestamp after text: no text token, but EOS and later timestamps.
        let allowed = run(&p, vec![9, 7, 1, 8], text_first.clone());
        assert_eq!(allowed[..5], [false, false, false, false, true]);
        assert!(allowed[8] && allowed[9] && !allowed[7], "{allowed:?}");
        // a closed pair: text must follow.
        let allowed = run(&p, vec![9, 7, 1, 8, 8], text_first);
        assert_eq!(allowed[6..], [false, false, false, false]);
    }

    #[test]
    fn likely_timestamps_win_over_text() {
        // Text token 0 at 2.0; four timestamps at 1.0 each: logsumexp 1 + ln 4 > 2.
        let p = processor(1);
        let mut row = vec![f32::NEG_INFINITY; 10];
        row[0] = 2.0;
        row[6..].fill(1.0);
        let allowed = run(&p, vec![9, 1], row);
        assert!(!allowed[0] && allowed[6], "{allowed:?}");
    }
}
