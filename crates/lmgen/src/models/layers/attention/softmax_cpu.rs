//! `softmax(scores * scale + mask)` over the last dimension in one pass per row on the CPU, for
//! a prompt's attention.
//!
//! candle runs it as three ops (the scale, the mask's broadcast add, the softmax), each
//! allocating and writing a `[b, nh, t, s]` tensor, and its `exp` of a masked score (the mask is
//! `finfo.min`, so `s - max` is about -3.4e38) takes glibc's underflow path, which sets `errno`:
//! together about a quarter of a 512-token prefill of SmolLM2-135M. Here each row is scaled,
//! masked, exponentiated and normalised in place in one buffer, with candle's arithmetic in the
//! same order (`s * scale + 0`, `+ mask`, the max and the sum by candle's own vector reductions,
//! `exp(s - max)`, `/ sum`), so the result is equal to the three ops' to the bit. An exponent
//! below -104 is 0 without calling `exp` (glibc's `expf` rounds everything below
//! `ln(2^-150)` = -103.97 to +0).
#![allow(unsafe_code)]

use candle_core::cpu::kernels::VecOps;
use std::ops::{Add, Mul};

use candle_core::{CpuStorage, Device, Storage, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Result;

/// Below this, `exp` is +0 in f32 (see the module docs).
const EXP_UNDERFLOW: f32 = -104.0;

extern "C" {
    /// The C library's `expf`, which `f32::exp` lowers to, called by name: LLVM takes its
    /// `exp` intrinsic for free of side effects and hoisted it out of the underflow branch, so
    /// every masked score still took glibc's underflow path (4% of a 512-token f16 prefill of
    /// SmolLM2-135M in `xflowf` alone); a call to the C function sets `errno` and stays put.
    fn expf(x: f32) -> f32;
}

/// `softmax(scores * scale + mask)` over the last dimension: `scores` `[b, nh, t, s]`, `mask`
/// `[b or 1, 1, t or 1, s]`, both contiguous on the CPU in one dtype (f32, or f16/bf16, whose
/// softmax runs in f32 and is rounded back, as transformers' eager attention does). `None` where
/// that does not hold (the caller runs candle's ops).
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
    if mask.is_some_and(|m| m.dtype() != scores.dtype()) {
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
    let shape = Shape {
        nh,
        t,
        s,
        mask: mask_shape,
    };
    let (sg, sl) = scores.storage_and_layout();
    let Some((s0, s1)) = sl.contiguous_offsets() else {
        return Ok(None);
    };
    let guard = mask.map(|m| m.storage_and_layout());
    let mask_storage = match &guard {
        None => None,
        Some((mg, ml)) => match ml.contiguous_offsets() {
            Some(range) => Some((&**mg, range)),
            None => return Ok(None),
        },
    };
    macro_rules! run {
        ($variant:ident, $src:expr) => {{
            let mask_data = match mask_storage {
                None => None,
                Some((Storage::Cpu(CpuStorage::$variant(mv)), (m0, m1))) => Some(&mv[m0..m1]),
                Some(_) => return Ok(None),
            };
            let out = rows(&$src[s0..s1], scale, mask_data, shape);
            Tensor::from_vec(out, (b, nh, t, s), &Device::Cpu)?
        }};
    }
    let out = match &*sg {
        Storage::Cpu(CpuStorage::F32(v)) => run!(F32, v),
        Storage::Cpu(CpuStorage::F16(v)) => run!(F16, v),
        Storage::Cpu(CpuStorage::BF16(v)) => run!(BF16, v),
        _ => return Ok(None),
    };
    drop((sg, guard));
    Ok(Some(out))
}

/// The scores' shape: heads, queries and keys, and the mask's `(batch, queries)` if any.
#[derive(Clone, Copy)]
struct Shape {
    nh: usize,
    t: usize,
    s: usize,
    mask: Option<(usize, usize)>,
}

/// A scores dtype: candle's arithmetic in it (f16/bf16 round every op back), widened to f32 for
/// the softmax.
trait Elem: Copy + Send + Sync + Add<Output = Self> + Mul<Output = Self> {
    fn from_f64(v: f64) -> Self;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

macro_rules! elem {
    ($t:ty, $from64:expr, $to32:expr, $from32:expr) => {
        impl Elem for $t {
            fn from_f64(v: f64) -> Self {
                $from64(v)
            }
            fn to_f32(self) -> f32 {
                $to32(self)
            }
            fn from_f32(v: f32) -> Self {
                $from32(v)
            }
        }
    };
}

elem!(f32, |v: f64| v as f32, |v: f32| v, |v: f32| v);
elem!(f16, f16::from_f64, f16::to_f32, f16::from_f32);
elem!(bf16, bf16::from_f64, bf16::to_f32, bf16::from_f32);

/// Each row of `src` (`[b, nh, t, s]`) scaled, masked and softmaxed as candle's ops would: the
/// scale and the mask's add in `T` (candle's `affine` then `broadcast_add`), widened to f32, then
/// candle's f32 softmax (the max and the sum by its own vector reductions, `exp(s - max)`,
/// `/ sum`), rounded back to `T`.
fn rows<T: Elem>(src: &[T], scale: f64, mask: Option<&[T]>, shape: Shape) -> Vec<T> {
    let Shape {
        nh,
        t,
        s,
        mask: mask_shape,
    } = shape;
    let (scale, zero) = (T::from_f64(scale), T::from_f64(0.0));
    let mut out = vec![T::from_f32(0.0); src.len()];
    out.par_chunks_mut(s)
        .zip(src.par_chunks(s))
        .enumerate()
        .for_each_init(
            || vec![0f32; s],
            |row_f32, (row, (dst, src))| {
                // `row` is (batch, head, query) in order.
                let mask_row = match (mask, mask_shape) {
                    (Some(data), Some((mb, mt))) => {
                        let (batch, query) = (row / (nh * t), row % t);
                        let at = (if mb == 1 { 0 } else { batch }) * mt
                            + if mt == 1 { 0 } else { query };
                        Some(&data[at * s..][..s])
                    }
                    _ => None,
                };
                match mask_row {
                    Some(m) => {
                        for ((d, &x), &mv) in row_f32.iter_mut().zip(src).zip(m) {
                            *d = ((x * scale + zero) + mv).to_f32();
                        }
                    }
                    None => {
                        for (d, &x) in row_f32.iter_mut().zip(src) {
                            *d = (x * scale + zero).to_f32();
                        }
                    }
                }
                let mut max = f32::NEG_INFINITY;
                // SAFETY: `row_f32` holds `s > 0` values and `max` is one value.
                unsafe { f32::vec_reduce_max(row_f32.as_ptr(), &mut max, s) };
                for d in row_f32.iter_mut() {
                    let x = *d - max;
                    // SAFETY: `expf` is the C library's, which `f32::exp` calls.
                    *d = if x < EXP_UNDERFLOW {
                        0.0
                    } else {
                        unsafe { expf(x) }
                    };
                }
                let mut sum = 0f32;
                // SAFETY: as above.
                unsafe { f32::vec_reduce_sum(row_f32.as_ptr(), &mut sum, s) };
                for (o, d) in dst.iter_mut().zip(row_f32.iter()) {
                    *o = T::from_f32(*d / sum);
                }
            },
        );
    out
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;

    /// Bit-equal to candle's scale, broadcast add and softmax (for f16/bf16: the scale and add
    /// in that dtype, the softmax in f32, rounded back, as `attend_with_weights` runs them),
    /// with a causal `finfo.min` mask (full, and broadcast over the batch and the queries), a row
    /// masked entirely, and none.
    #[test]
    fn equals_candles_ops_to_the_bit() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nh, t, s) = (2, 3, 5, 9);
        let scores = (Tensor::randn(0f32, 4., (b, nh, t, s), &dev)? * 3.0)?;
        let causal = |min: f32| {
            let mut causal = vec![0f32; b * t * s];
            for (i, m) in causal.iter_mut().enumerate() {
                let (batch, q, k) = (i / (t * s), i / s % t, i % s);
                if k > q + s - t || (batch == 1 && q == 0) {
                    *m = min;
                }
            }
            Tensor::from_vec(causal, (b, 1, t, s), &dev)
        };
        let row = Tensor::randn(0f32, 1., (1, 1, 1, s), &dev)?;
        // Head sizes 64 (an exact scale in f16) and 128 (a rounded one).
        for (dtype, min, scale) in [
            (DType::F32, f32::MIN, 0.125),
            (DType::F16, f16::MIN.to_f32(), 0.125),
            (DType::F16, f16::MIN.to_f32(), 128f64.powf(-0.5)),
            (DType::BF16, bf16::MIN.to_f32(), 128f64.powf(-0.5)),
        ] {
            let scores = scores.to_dtype(dtype)?;
            let full = causal(min)?.to_dtype(dtype)?;
            let row = row.to_dtype(dtype)?;
            for mask in [Some(&full), Some(&row), None] {
                let got = scaled_masked_softmax(&scores, scale, mask)?.expect("applies");
                assert_eq!(got.dtype(), dtype);
                let mut want = (&scores * scale)?;
                if let Some(m) = mask {
                    want = want.broadcast_add(m)?;
                }
                let want = candle_nn::ops::softmax_last_dim(&want.to_dtype(DType::F32)?)?
                    .to_dtype(dtype)?;
                let (g, w): (Vec<f32>, Vec<f32>) = (
                    got.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                    want.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                );
                for (g, w) in g.iter().zip(&w) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{dtype:?}: {g} vs {w}");
                }
            }
        }
        // Not applicable: a mask in another dtype than the scores.
        let half = scores.to_dtype(DType::F16)?;
        assert!(scaled_masked_softmax(&half, 0.125, Some(&row))?.is_none());
        Ok(())
    }
}
