//! The Unigram segmentation: the best-scoring split of normalized text into pieces
//! (sentencepiece's `unigram::Model::EncodeOptimized`, one pass of Viterbi).

use std::ops::Range;

use super::{PieceType, SentencePieceModel};

/// sentencepiece's `kUnkPenalty`: an unknown character scores `min_score - 10`.
const UNK_PENALTY: f32 = 10.0;

/// The best path ending at a position: its last piece and score (`BestPathNode`).
#[derive(Clone, Copy)]
struct Best {
    id: u32,
    score: f32,
    starts_at: Option<usize>,
}

/// The pieces of `normalized` as (byte range, id), in order. Ties keep the first candidate seen
/// (shorter pieces and earlier starts first), as sentencepiece's strict `>` does.
pub(super) fn viterbi(model: &SentencePieceModel, normalized: &str) -> Vec<(Range<usize>, u32)> {
    let size = normalized.len();
    if size == 0 {
        return Vec::new();
    }
    let unk_score = model.min_score - UNK_PENALTY;
    let mut best = vec![
        Best {
            id: 0,
            score: 0.0,
            starts_at: None,
        };
        size + 1
    ];
    let starts: Vec<usize> = normalized.char_indices().map(|(i, _)| i).collect();
    for (k, &start) in starts.iter().enumerate() {
        let here = best[start].score;
        let char_len = starts.get(k + 1).copied().unwrap_or(size) - start;
        let mut has_single = false;
        let limit = (start + model.max_piece_len).min(size);
        for &end in starts[k + 1..]
            .iter()
            .take_while(|&&e| e <= limit)
            .chain((limit == size).then_some(&size))
        {
            let Some(&id) = model.matchable.get(&normalized[start..end]) else {
                continue;
            };
            let piece = model.piece(id);
            if piece.kind == PieceType::Unused {
                continue;
            }
            let len = end - start;
            // `score` is a double in sentencepiece (the user-defined branch's type), so the sum and
            // the comparison are in double and the best score is stored as a float.
            let score = match piece.kind {
                PieceType::UserDefined => (len as f32 * model.max_score) as f64 - 0.1,
                _ => piece.score as f64,
            };
            let candidate = score + here as f64;
            let target = &mut best[end];
            if target.starts_at.is_none() || candidate > target.score as f64 {
                *target = Best {
                    id,
                    score: candidate as f32,
                    starts_at: Some(start),
                };
            }
            if len == char_len {
                has_single = true;
            }
        }
        if !has_single {
            let target = &mut best[start + char_len];
            let candidate = unk_score + here;
            if target.starts_at.is_none() || candidate > target.score {
                *target = Best {
                    id: model.unk_id,
                    score: candidate,
                    starts_at: Some(start),
                };
            }
        }
    }
    let mut out = Vec::new();
    let mut end = size;
    while end > 0 {
        let node = best[end];
        // Every character boundary is reached (at worst by an unknown character).
        let start = node.starts_at.unwrap_or(0);
        out.push((start..end, node.id));
        end = start;
    }
    out.reverse();
    out
}
