//! `softmax(scores * scale + mask)` over the last dimension in one pass per row on the CPU, for
//! a prompt's attention.
//!
//! candle runs it as three ops (the scale, the mask's broadcast add, the softmax), each
//! allocating and writing a `[b, nh, t, s]` tensor, and its `exp` of a masked score (the mask is
//! `finfo.min`, so `s - max` is about -3.4e38) takes glibc's underflow path, which sets `errno`:
//! together about a quarter of a 512-token prefill of SmolLM2-135M. Here each row is scaled,
//! masked, exponentiated and normalised in place in one buffer, with candle's arithmetic in the
//! same order (`s * scale + 0`, `+ mask`, the max and the sum by candle's own vector reductions,
//! `exp(s - max)`, `/ sum`), so the result is equal to the three ops' to the bit. The
//! exponentials are [`expf`](crate::models::layers::expf)'s: 16 lanes at a time, each equal to
//! the C library's `expf`, and +0 below `ln(2^-150)` without its slow underflow path.
#![allow(unsafe_code)]

use candle_core::cpu::kernels::VecOps;
use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// `softmax(scores * scale + mask)` over the last dimension: `scores` `[b, nh, t, s]`, `mask`
/// `[b or 1, 1, t or 1, s]`, both contiguous f32 on the CPU. `None` where that does not hold
/// (the caller runs candle's ops).
pub fn scaled_masked_softmax(
    scores: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let Ok((b, nh, t, s)) = scores.dims4() else {
        return Ok(None);
    };
    if !scores.device().is_cpu() || !scores.is_contiguous() || s == 0 {
        return Ok(None);
    }
    let mask_shape = match mask {
        None => None,
        Some(m) => match m.dims4() {
            Ok((mb, 1, mt, ms))
                if (mb == b || mb == 1)
                    && (mt == t || mt == 1)
                    && ms == s
                    && m.is_contiguous()
                    && m.device().is_cpu() =>
            {
                Some((mb, mt))
            }
            _ => return Ok(None),
        },
    };
    let (sg, sl) = scores.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(sv)), Some((s0, s1))) = (&*sg, sl.contiguous_offsets())
    else {
        return Ok(None);
    };
    let guard = mask.map(|m| m.storage_and_layout());
    let mask_data: Option<&[f32]> = match &guard {
        None => None,
        Some((mg, ml)) => match (&**mg, ml.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(mv)), Some((m0, m1))) => Some(&mv[m0..m1]),
            _ => return Ok(None),
        },
    };
    let src = &sv[s0..s1];
    let scale = scale as f32;
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(s)
        .zip(src.par_chunks(s))
        .enumerate()
        .for_each(|(row, (dst, src))| {
            // `row` is (batch, head, query) in order.
            let mask_row = match (mask_data, mask_shape) {
                (Some(data), Some((mb, mt))) => {
                    let (batch, query) = (row / (nh * t), row % t);
                    let at =
                        (if mb == 1 { 0 } else { batch }) * mt + if mt == 1 { 0 } else { query };
                    Some(&data[at * s..][..s])
                }
                _ => None,
            };
            match mask_row {
                Some(m) => {
                    for ((d, &x), &mv) in dst.iter_mut().zip(src).zip(m) {
                        *d = (x * scale + 0.0) + mv;
                    }
                }
                None => {
                    for (d, &x) in dst.iter_mut().zip(src) {
                        *d = x * scale + 0.0;
                    }
                }
            }
            normalise_row(dst);
        });
    drop((sg, guard));
    Ok(Some(Tensor::from_vec(out, (b, nh, t, s), &Device::Cpu)?))
}

/// A row already scaled and masked, normalised in place: its maximum and sum by candle's vector
/// reductions and the exponentials in between, as `softmax_last_dim` computes them.
pub(super) fn normalise_row(row: &mut [f32]) {
    let s = row.len();
    let mut max = f32::NEG_INFINITY;
    // SAFETY: `row` holds `s` values (`s > 0`: every caller's rows have a key) and `max` is one.
    unsafe { f32::vec_reduce_max(row.as_ptr(), &mut max, s) };
    crate::models::layers::expf::exp_minus_in_place(row, max);
    let mut sum = 0f32;
    // SAFETY: as above.
    unsafe { f32::vec_reduce_sum(row.as_ptr(), &mut sum, s) };
    for d in row.iter_mut() {
        *d /= sum;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;

    /// Bit-equal to candle's scale, broadcast add and softmax, with a causal `finfo.min` mask
    /// (full, and broadcast over the batch and the queries), a row masked entirely, and none.
    #[test]
    fn equals_candles_ops_to_the_bit() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nh, t, s) = (2, 3, 5, 9);
        let scores = (Tensor::randn(0f32, 4., (b, nh, t, s), &dev)? * 3.0)?;
        let mut causal = vec![0f32; b * t * s];
        for (i, m) in causal.iter_mut().enumerate() {
            let (batch, q, k) = (i / (t * s), i / s % t, i % s);
            if k > q + s - t || (batch == 1 && q == 0) {
                *m = f32::MIN;
            }
        }
        let full = Tensor::from_vec(causal, (b, 1, t, s), &dev)?;
        let row = Tensor::randn(0f32, 1., (1, 1, 1, s), &dev)?;
        let scale = 0.125;
        for mask in [Some(&full), Some(&row), None] {
            let got = scaled_masked_softmax(&scores, scale, mask)?.expect("applies");
            let mut want = (&scores * scale)?;
            if let Some(m) = mask {
                want = want.broadcast_add(m)?;
            }
            let want = candle_nn::ops::softmax_last_dim(&want)?;
            let (g, w): (Vec<f32>, Vec<f32>) = (
                got.flatten_all()?.to_vec1()?,
                want.flatten_all()?.to_vec1()?,
            );
            for (g, w) in g.iter().zip(&w) {
                assert_eq!(g.to_bits(), w.to_bits(), "{g} vs {w}");
            }
        }
        // Not applicable: another dtype.
        let half = scores.to_dtype(DType::F16)?;
        assert!(scaled_masked_softmax(&half, scale, None)?.is_none());
        Ok(())
    }
}
