//! Two pairs of small ops of a decode step fused on the CPU, each one pass instead of two candle
//! ops (each with its own allocation and dispatch), with the arithmetic of those ops so the
//! results are the same to the bit: the residual add and the next RMSNorm
//! ([`add_rms_norm`], candle's `add` then `candle_nn::ops::rms_norm`), and the SiLU-gated
//! product of a fused gate/up projection ([`swiglu`], candle's `silu` then `mul`). The GPU's
//! counterparts are [`crate::cuda::add_rms_norm`] and [`crate::cuda::swiglu`].

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Outputs from which [`swiglu`] splits its rows across the thread pool (below, one thread:
/// a decode step's few rows).
const PARALLEL_MIN: usize = 1 << 15;

/// Whether `t` is a contiguous f32 CPU tensor, the only kind these passes take.
fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// Runs `f` over the f32 data of contiguous f32 CPU tensors, read in place under their storage
/// guards; `None` if one is of another kind.
fn with_f32<const N: usize, R>(ts: [&Tensor; N], f: impl FnOnce([&[f32]; N]) -> R) -> Option<R> {
    if !ts.iter().all(|t| applies(t)) {
        return None;
    }
    let guards = ts.map(|t| t.storage_and_layout());
    let mut data: [&[f32]; N] = [&[]; N];
    for (d, (storage, layout)) in data.iter_mut().zip(&guards) {
        let (start, end) = layout.contiguous_offsets()?;
        *d = match &**storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[start..end],
            _ => return None,
        };
    }
    Some(f(data))
}

/// `(x + h, rms_norm(x + h) * w)` for f32 CPU tensors `x`, `h` `[.., dim]` and `w` `[dim]`;
/// `None` for anything else (the caller runs candle's ops).
pub fn add_rms_norm(
    x: &Tensor,
    h: &Tensor,
    w: &Tensor,
    eps: f32,
) -> Result<Option<(Tensor, Tensor)>> {
    let dim = w.elem_count();
    if x.dims() != h.dims() || x.dims().last() != Some(&dim) || dim == 0 {
        return Ok(None);
    }
    let Some((sum, normed)) = with_f32([x, h, w], |[xv, hv, wv]| {
        let sum: Vec<f32> = xv.iter().zip(hv).map(|(x, h)| x + h).collect();
        let mut normed = vec![0f32; sum.len()];
        for (src, dst) in sum.chunks_exact(dim).zip(normed.chunks_exact_mut(dim)) {
            // candle-nn's `rms_row`: the squares summed in order, then `s / m * alpha`.
            let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
            let m = (sum2 / dim as f32 + eps).sqrt();
            for ((d, &s), &a) in dst.iter_mut().zip(src).zip(wv) {
                *d = s / m * a;
            }
        }
        (sum, normed)
    }) else {
        return Ok(None);
    };
    let shape = x.shape().clone();
    Ok(Some((
        Tensor::from_vec(sum, shape.clone(), x.device())?,
        Tensor::from_vec(normed, shape, x.device())?,
    )))
}

/// `[.., 2 * inter] -> [.., inter]`: `silu(gate) * up` over a fused gate/up projection (the
/// gate's columns first) of f32 on the CPU; `None` for anything else.
pub fn swiglu(gate_up: &Tensor, inter: usize) -> Result<Option<Tensor>> {
    if gate_up.dims().last() != Some(&(2 * inter)) || inter == 0 {
        return Ok(None);
    }
    // candle's `silu` (`v / (1 + exp(-v))`), then `mul`, over one row (16 lanes at a time,
    // with the C library's `expf` to the bit).
    let row = |out: &mut [f32], row: &[f32]| {
        let (gate, up) = row.split_at(inter);
        super::expf::silu_mul(out, gate, up);
    };
    let Some(out) = with_f32([gate_up], |[v]| {
        let mut out = vec![0f32; v.len() / 2];
        if out.len() < PARALLEL_MIN {
            (out.chunks_mut(inter).zip(v.chunks_exact(2 * inter))).for_each(|(o, r)| row(o, r));
        } else {
            // A prompt's rows side by side (one exponential per element: a prefill of 512
            // tokens spent ~4% of its time here on one core).
            out.par_chunks_mut(inter)
                .zip(v.par_chunks_exact(2 * inter))
                .for_each(|(o, r)| row(o, r));
        }
        out
    }) else {
        return Ok(None);
    };
    let mut dims = gate_up.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = inter;
    }
    Ok(Some(Tensor::from_vec(out, dims, gate_up.device())?))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, D};

    use super::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn equal_to_candles_ops_to_the_bit() -> Result<()> {
        let dev = Device::Cpu;
        for rows in [1, 3, 40] {
            let x = Tensor::randn(0f32, 1.0, (1, rows, 576), &dev)?;
            let h = Tensor::randn(0f32, 1.0, (1, rows, 576), &dev)?;
            let w = Tensor::randn(1f32, 0.1, 576, &dev)?;
            let (sum, normed) = add_rms_norm(&x, &h, &w, 1e-5)?.expect("applies");
            let want_sum = (&x + &h)?;
            assert_eq!(bits(&sum), bits(&want_sum));
            let want = candle_nn::ops::rms_norm(&want_sum, &w, 1e-5)?;
            assert_eq!(bits(&normed), bits(&want));
            let gate_up = Tensor::randn(0f32, 3.0, (1, rows, 2 * 1536), &dev)?;
            let got = swiglu(&gate_up, 1536)?.expect("applies");
            let gate = candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, 1536)?)?;
            let want = (gate * gate_up.narrow(D::Minus1, 1536, 1536)?)?;
            assert_eq!(bits(&got), bits(&want));
        }
        let half = Tensor::zeros((1, 4), DType::F16, &dev)?;
        assert!(swiglu(&half, 2)?.is_none());
        Ok(())
    }
}
