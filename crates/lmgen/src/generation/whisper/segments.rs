//! Cutting a window's generated tokens into timed segments and deciding where the next window
//! starts (HF `WhisperGenerationMixin._retrieve_segment`), and joining segments back into
//! sequences (`_pad_to_max_length`).
//!
//! Timestamp tokens are `timestamp_begin + i` for `i * time_precision` seconds (0.02 s). Two
//! timestamps in a row end a segment and start the next. A window whose tokens end in a single
//! timestamp had no speech after it: the next window starts where this one ends. Otherwise the
//! last, unfinished segment is dropped and the next window starts at the last closed pair's
//! timestamp (`2` feature frames per timestamp step).

use crate::TokenId;

/// One timed piece of a transcription (HF `segments` entries).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Start in seconds from the beginning of the audio.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
    /// The segment's tokens, timestamp tokens included (no decoder prompt, no EOS).
    pub tokens: Vec<TokenId>,
}

/// Where the timestamps are and how they map to time.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `<|0.00|>`; any id from here on is a timestamp.
    pub timestamp_begin: TokenId,
    /// Seconds per timestamp step (`time_precision`, 0.02).
    pub time_precision: f64,
    /// Seconds per feature frame (`time_precision_features`, 0.01).
    pub time_precision_features: f64,
    /// Feature frames per encoder position (`conv1.stride * conv2.stride`, 2).
    pub input_stride: usize,
}

/// `seq[i]` with Python's negative indices; `None` out of range.
fn at(seq: &[TokenId], i: isize) -> Option<TokenId> {
    let i = if i < 0 { seq.len() as isize + i } else { i };
    usize::try_from(i).ok().and_then(|i| seq.get(i).copied())
}

/// `_retrieve_segment`: the segments of one window's tokens (`seek_sequence`, prompt and EOS
/// removed) that started `time_offset` seconds in and covered `seek_num_frames` frames, and how
/// many frames the next window moves on.
pub fn retrieve_segment(
    seq: &[TokenId],
    time_offset: f64,
    seek_num_frames: usize,
    timing: &Timing,
) -> (Vec<Segment>, usize) {
    let is_ts: Vec<bool> = seq.iter().map(|&t| t >= timing.timestamp_begin).collect();
    let pos = |t: TokenId| i64::from(t) - i64::from(timing.timestamp_begin);
    let single_timestamp_ending = is_ts.len() >= 2 && is_ts[is_ts.len() - 2..] == [false, true];
    // Indices after each pair of consecutive timestamps.
    let mut slices: Vec<usize> = (1..seq.len())
        .filter(|&i| is_ts[i - 1] && is_ts[i])
        .collect();
    if slices.is_empty() {
        // No closed pair: the whole window is one segment, ending at its last timestamp (or at
        // the end of the window when there is none, or only <|0.00|>).
        let mut last = ((seek_num_frames as f32 * timing.time_precision_features as f32)
            / timing.time_precision as f32) as i64 as f64;
        if let Some(&t) = seq.iter().rev().find(|&&t| t >= timing.timestamp_begin) {
            if t != timing.timestamp_begin {
                last = pos(t) as f64;
            }
        }
        let segment = Segment {
            start: time_offset,
            end: time_offset + last * timing.time_precision,
            tokens: seq.to_vec(),
        };
        return (vec![segment], seek_num_frames);
    }
    if single_timestamp_ending {
        slices.push(seq.len());
    } else if let Some(last) = slices.last_mut() {
        // The last segment keeps its closing timestamp pair, to tell it from a single ending.
        *last += 1;
    }
    let mut segments = Vec::with_capacity(slices.len());
    let mut last_slice = 0;
    for (i, &current) in slices.iter().enumerate() {
        let tokens = &seq[last_slice..current];
        let is_last = i == slices.len() - 1;
        let end_index: isize = if !is_last || single_timestamp_ending {
            -1
        } else {
            -2
        };
        let start = tokens.first().map_or(0, |&t| pos(t));
        let end = at(tokens, end_index).map_or(0, pos);
        segments.push(Segment {
            start: time_offset + start as f64 * timing.time_precision,
            end: time_offset + end as f64 * timing.time_precision,
            tokens: tokens.to_vec(),
        });
        last_slice = current;
    }
    let offset = if single_timestamp_ending {
        // No speech after the last timestamp.
        seek_num_frames
    } else {
        // Throw away the unfinished segment: seek to the last closed pair's timestamp.
        let last = at(seq, last_slice as isize - 2).map_or(0, pos);
        usize::try_from(last).unwrap_or(0) * timing.input_stride
    };
    (segments, offset)
}

/// A window's generated tokens as `_postprocess_outputs` and `generate_with_fallback` leave them:
/// trailing padding removed (as many tokens as the row holds `pad` ids, keeping the EOS when pad
/// is EOS), then a final EOS removed. Returns the tokens with the EOS still in (what the average
/// log-probability counts) and without it.
pub fn strip_padding(
    generated: &[TokenId],
    pad: TokenId,
    eos: TokenId,
) -> (Vec<TokenId>, Vec<TokenId>) {
    let mut seq = generated.to_vec();
    if seq.last() == Some(&pad) {
        let mut n = seq.iter().filter(|&&t| t == pad).count();
        if pad == eos {
            n -= 1;
        }
        seq.truncate(seq.len().saturating_sub(n));
    }
    let with_eos = seq.clone();
    if seq.last() == Some(&eos) {
        seq.pop();
    }
    (with_eos, seq)
}

/// `_pad_to_max_length` at the end of generation: each row's segment tokens joined, rows
/// right-padded with `pad` to the longest.
pub fn join_segments(rows: &[Vec<Segment>], pad: TokenId) -> Vec<Vec<TokenId>> {
    let mut out: Vec<Vec<TokenId>> = rows
        .iter()
        .map(|segments| {
            segments
                .iter()
                .flat_map(|s| s.tokens.iter().copied())
                .collect()
        })
        .collect();
    let longest = out.iter().map(Vec::len).max().unwrap_or(0);
    for row in &mut out {
        row.resize(longest, pad);
    }
    out
}

/// `_pad_to_max_length` for conditioning on earlier text: a row's segments joined (a segment that
/// ends in a timestamp pair loses its last timestamp), the last `cut_off_length` tokens kept,
/// after `bos` (`<|startofprev|>` or the prompt).
pub fn previous_tokens(
    segments: &[Segment],
    bos: &[TokenId],
    cut_off_length: usize,
    timestamp_begin: TokenId,
) -> Vec<TokenId> {
    let mut joined = Vec::new();
    for s in segments {
        let t = &s.tokens;
        if t.len() > 2 && t[t.len() - 2] >= timestamp_begin {
            joined.extend_from_slice(&t[..t.len() - 1]);
        } else {
            joined.extend_from_slice(t);
        }
    }
    // Python's `sequence[-cut_off_length:]`: a cut-off of 0 keeps everything.
    let keep = match cut_off_length {
        0 => 0,
        n => joined.len().saturating_sub(n),
    };
    bos.iter()
        .copied()
        .chain(joined[keep..].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text tokens below 100; `<|0.00|>` = 100.
    const TIMING: Timing = Timing {
        timestamp_begin: 100,
        time_precision: 0.02,
        time_precision_features: 0.01,
        input_stride: 2,
    };

    #[test]
    fn pairs_cut_segments_and_an_unfinished_one_is_dropped() {
        // <0.00> a b <0.50> <0.50> c d <1.00> <1.00> e
        let seq = [100, 1, 2, 125, 125, 3, 4, 150, 150, 5];
        let (segments, offset) = retrieve_segment(&seq, 10.0, 3000, &TIMING);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].tokens, [100, 1, 2, 125]);
        assert!((segments[0].start - 10.0).abs() < 1e-12 && (segments[0].end - 10.5).abs() < 1e-12);
        assert_eq!(segments[1].tokens, [125, 3, 4, 150, 150]);
        assert!((segments[1].end - 11.0).abs() < 1e-12);
        assert_eq!(offset, 100, "seek to <1.00>: 50 steps of 2 frames");
    }

    #[test]
    fn a_single_final_timestamp_ends_the_window() {
        let seq = [100, 1, 125, 125, 2, 140];
        let (segments, offset) = retrieve_segment(&seq, 0.0, 3000, &TIMING);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[1].tokens, [125, 2, 140]);
        assert!((segments[1].end - 0.8).abs() < 1e-12);
        assert_eq!(offset, 3000);
    }

    #[test]
    fn without_pairs_the_window_is_one_segment() {
        let (segments, offset) = retrieve_segment(&[1, 2, 3], 30.0, 3000, &TIMING);
        assert_eq!(segments[0].tokens, [1, 2, 3]);
        assert!((segments[0].end - 60.0).abs() < 1e-9);
        assert_eq!(offset, 3000);
        let (segments, _) = retrieve_segment(&[100, 1, 120], 0.0, 60, &TIMING);
        assert!((segments[0].end - 0.4).abs() < 1e-12);
    }

    #[test]
    fn padding_and_eos_are_stripped_as_transformers_does() {
        // pad == eos: the padding goes, then the EOS.
        assert_eq!(
            strip_padding(&[5, 6, 9, 9, 9], 9, 9),
            (vec![5, 6, 9], vec![5, 6])
        );
        assert_eq!(
            strip_padding(&[5, 6, 7], 9, 9),
            (vec![5, 6, 7], vec![5, 6, 7])
        );
        assert_eq!(
            join_segments(
                &[
                    vec![],
                    vec![Segment {
                        start: 0.0,
                        end: 1.0,
                        tokens: vec![1, 2]
                    }]
                ],
                9
            ),
            [vec![9, 9], vec![1, 2]]
        );
        let s = [Segment {
            start: 0.0,
            end: 1.0,
            tokens: vec![100, 1, 125, 125],
        }];
        assert_eq!(previous_tokens(&s, &[7], 2, 100), [7, 1, 125]);
    }
}
