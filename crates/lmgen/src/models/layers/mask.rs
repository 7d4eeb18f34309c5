//! Attention masks: causal, padding and sliding window, as transformers' `masking_utils.py`.
//!
//! Key `j` is visible to the query at absolute (cache) position `i` when `j <= i`, the key is not
//! padding, and, for sliding layers, `i - j < sliding_window` (`sliding_window_overlay`:
//! `kv_idx > q_idx - sliding_window`). Positions are cache indices, padding included, as in
//! transformers. A query that would see nothing (a padding row) is allowed its own position so
//! softmax stays finite; those rows are never read.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// What a mask is built from.
#[derive(Debug, Clone, Copy)]
pub struct MaskSpec<'a> {
    /// Per row, `past + t` flags (1 = real token). `None` = no padding.
    pub padding: Option<&'a [Vec<u8>]>,
    pub batch: usize,
    /// New tokens in this forward.
    pub q_len: usize,
    /// Cached plus new tokens.
    pub kv_len: usize,
}

/// Additive mask `[b, 1, q_len, kv_len]` (0 or -inf), or `None` when nothing is masked.
pub fn build(
    spec: &MaskSpec<'_>,
    sliding_window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let MaskSpec {
        padding,
        batch,
        q_len,
        kv_len,
    } = *spec;
    let past = kv_len - q_len;
    let visible = |row: usize, i: usize, j: usize| -> bool {
        let q = past + i;
        if j == q {
            return true;
        }
        j < q
            && padding.is_none_or(|p| p[row].get(j).copied().unwrap_or(1) != 0)
            && sliding_window.is_none_or(|w| q - j < w)
    };
    let any_masked = (0..batch).any(|r| (0..q_len).any(|i| (0..kv_len).any(|j| !visible(r, i, j))));
    if !any_masked {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(batch * q_len * kv_len);
    for r in 0..batch {
        for i in 0..q_len {
            data.extend((0..kv_len).map(|j| {
                if visible(r, i, j) {
                    0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Ok(Some(
        Tensor::from_vec(data, (batch, 1, q_len, kv_len), device)?.to_dtype(dtype)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(spec: &MaskSpec<'_>, w: Option<usize>) -> Vec<Vec<Vec<bool>>> {
        let m = build(spec, w, DType::F32, &Device::Cpu).unwrap();
        match m {
            None => vec![vec![vec![true; spec.kv_len]; spec.q_len]; spec.batch],
            Some(m) => m
                .squeeze(1)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap()
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|q| q.into_iter().map(|x| x == 0.0).collect())
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn causal_with_left_padding() {
        let pad = vec![vec![0, 1, 1]];
        let m = dense(
            &MaskSpec {
                padding: Some(&pad),
                batch: 1,
                q_len: 3,
                kv_len: 3,
            },
            None,
        );
        assert_eq!(
            m[0],
            vec![
                vec![true, false, false],
                vec![false, true, false],
                vec![false, true, true]
            ]
        );
    }

    #[test]
    fn sliding_window_limits_keys() {
        let m = dense(
            &MaskSpec {
                padding: None,
                batch: 1,
                q_len: 1,
                kv_len: 5,
            },
            Some(2),
        );
        assert_eq!(m[0][0], vec![false, false, false, true, true]);
    }

    #[test]
    fn decode_without_padding_needs_no_mask() {
        let spec = MaskSpec {
            padding: None,
            batch: 2,
            q_len: 1,
            kv_len: 7,
        };
        assert!(build(&spec, None, DType::F32, &Device::Cpu)
            .unwrap()
            .is_none());
    }
}
