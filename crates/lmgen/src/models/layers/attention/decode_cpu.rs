//! One new query per head over the cached keys on the CPU (a dense decode step), in one parallel
//! pass over (row, key/value head) instead of candle's matmul (which packs the keys on every
//! call), softmax and a second matmul: at decode the work is small and those ops' set-up was
//! about a tenth of a SmolLM2-135M step.
//!
//! The arithmetic is `eager_attention_forward`'s in f32: `s_j = (q . k_j) * scale`,
//! `p = softmax(s)`, `o = sum_j p_j v_j`, for each query head over its key/value head
//! (grouped-query heads read the same rows). The paged store's decode
//! ([`crate::cache::paged`]) runs the same [`attend_one`].

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// `a . b` over f32 in eight lanes (vectorised by the compiler).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// One query head `q` `[d]` over `scores.len()` keys and values (`key(j)`, `value(j)`, each
/// `[d]`): adds `softmax(q k^T * scale) v` into `out` `[d]` (zeroed by the caller); `scores` is
/// scratch. On AVX-512 CPUs, for head sizes that are a multiple of 16 up to 128,
/// [`super::decode_avx512`] runs it with fused multiply-adds, else on AVX2 CPUs for multiples of
/// 8 [`super::decode_avx2`].
pub(crate) fn attend_one<'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    if super::decode_avx512::attend(q, &key, &value, scale, scores, out)
        || super::decode_avx2::attend(q, &key, &value, scale, scores, out)
    {
        return;
    }
    attend_portable(q, key, value, scale, scores, out);
}

/// [`attend_one`] in portable code: a multiply and an add per lane, one key at a time.
fn attend_portable<'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot(q, key(j)) * scale;
    }
    let sum = exp_from_max(scores);
    for (j, &e) in scores.iter().enumerate() {
        let p = e / sum;
        for (o, &x) in out.iter_mut().zip(value(j)) {
            *o += p * x;
        }
    }
}

/// Softmax's numerators in place: `exp(s - max(s))` for each score; returns their sum.
pub(super) fn exp_from_max(scores: &mut [f32]) -> f32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    crate::models::layers::expf::exp_minus_in_place(scores, max);
    scores.iter().fold(0f32, |sum, &s| sum + s)
}

/// The f32 data of a CPU storage and the layout's start, or `None`.
fn f32_data<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(CpuStorage::F32(v)) => v.get(layout.start_offset()..),
        _ => None,
    }
}

/// `softmax(q k^T * scale) v` for `q` `[b, nh, 1, d]` (contiguous f32 on the CPU) over `k`, `v`
/// `[b, nkv, s, d]` (f32, any strides with the last dim contiguous: the cache's narrowed views)
/// -> `[b, nh, 1, d]`. `None` where it does not apply (another device or dtype, other layouts):
/// the caller runs candle's ops.
pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    let (Ok((b, nh, t, d)), Ok((kb, nkv, s, kd))) = (q.dims4(), k.dims4()) else {
        return Ok(None);
    };
    let fits = q.device().is_cpu()
        && t == 1
        && kb == b
        && kd == d
        && s > 0
        && nkv > 0
        && nh % nkv == 0
        && v.dims() == k.dims()
        && q.is_contiguous()
        && k.stride()[3] == 1
        && v.stride()[3] == 1;
    if !fits {
        return Ok(None);
    }
    let ((qg, ql), (kg, kl), (vg, vl)) = (
        q.storage_and_layout(),
        k.storage_and_layout(),
        v.storage_and_layout(),
    );
    let (Some(qs), Some(ks), Some(vs)) = (f32_data(&qg, ql), f32_data(&kg, kl), f32_data(&vg, vl))
    else {
        return Ok(None);
    };
    let (kst, vst) = (k.stride(), v.stride());
    let n_rep = nh / nkv;
    let scale = scale as f32;
    let mut out = vec![0f32; b * nh * d];
    // One task per (row, key/value head): its n_rep query heads, `[n_rep, d]` of the output.
    out.par_chunks_mut(n_rep * d)
        .enumerate()
        .for_each(|(task, out)| {
            let (row, g) = (task / nkv, task % nkv);
            let (k0, v0) = (row * kst[0] + g * kst[1], row * vst[0] + g * vst[1]);
            let key = |j: usize| &ks[k0 + j * kst[2]..][..d];
            let value = |j: usize| &vs[v0 + j * vst[2]..][..d];
            let mut scores = vec![0f32; s];
            for (r, out) in out.chunks_exact_mut(d).enumerate() {
                let h = g * n_rep + r;
                let qh = &qs[(row * nh + h) * d..][..d];
                attend_one(qh, key, value, scale, &mut scores, out);
            }
        });
    drop((qg, kg, vg));
    Ok(Some(Tensor::from_vec(out, (b, nh, 1, d), q.device())?))
}

#[cfg(test)]
pub(super) mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::models::layers::attention::{attend, Scores};

    /// A kernel of [`attend_one`]'s contract: `(q, keys, values, scale, scores, out)`, `true`
    /// where it ran.
    pub(in crate::models::layers::attention) type Kernel<'k> =
        &'k dyn Fn(&[f32], &[Vec<f32>], &[Vec<f32>], f32, &mut [f32], &mut [f32]) -> bool;

    /// `kernel` against the same attention in f64 for each head size of `dims` and key counts
    /// around a four-key step (1, 3, 4, 5, 130), added into an output that is not zero.
    pub(in crate::models::layers::attention) fn check_against_f64(dims: &[usize], kernel: Kernel) {
        let mut seed = 3u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 9) as f32 / (1u32 << 22) as f32 - 1.0
        };
        for &d in dims {
            for s in [1, 3, 4, 5, 130] {
                let q: Vec<f32> = (0..d).map(|_| next()).collect();
                let k: Vec<Vec<f32>> = (0..s).map(|_| (0..d).map(|_| next()).collect()).collect();
                let v: Vec<Vec<f32>> = (0..s).map(|_| (0..d).map(|_| next()).collect()).collect();
                let scale = 0.3f32;
                let mut scores = vec![0f32; s];
                let mut out = vec![0.5f32; d];
                assert!(kernel(&q, &k, &v, scale, &mut scores, &mut out), "d {d}");
                let logits: Vec<f64> = k
                    .iter()
                    .map(|kj| {
                        q.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..d {
                    let want = 0.5 + (0..s).map(|j| e[j] / sum * v[j][c] as f64).sum::<f64>();
                    let got = out[c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "d {d} s {s} c {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The portable loop meets the same bound (the kernels above fall back to it).
    #[test]
    fn portable_matches_f64_attention() {
        check_against_f64(&[12, 64, 256], &|q, k, v, scale, scores, out| {
            attend_portable(q, |j| &k[j], |j| &v[j], scale, scores, out);
            true
        });
    }

    /// Views of a larger cache (as the dynamic cache hands them out), grouped-query heads, two
    /// rows: within f32 rounding of candle's matmul-softmax-matmul.
    #[test]
    fn equals_candle_attention_over_cache_views() -> Result<()> {
        let dev = Device::Cpu;
        for (b, nh, nkv, d, s) in [(1, 9, 3, 64, 130), (2, 4, 4, 12, 1), (3, 8, 2, 80, 37)] {
            let q = Tensor::randn(0f32, 1.0, (b, nh, 1, d), &dev)?;
            let k_buf = Tensor::randn(0f32, 1.0, (b, nkv, s + 9, d), &dev)?;
            let v_buf = Tensor::randn(0f32, 1.0, (b, nkv, s + 9, d), &dev)?;
            let (k, v) = (k_buf.narrow(2, 0, s)?, v_buf.narrow(2, 0, s)?);
            let scale = (d as f64).powf(-0.5);
            let got = decode_attention(&q, &k, &v, scale)?.expect("applies");
            let scores = Scores {
                scale,
                softcap: None,
                sinks: None,
            };
            let want = attend(&q, &k, &v, None, scores)?;
            let err: f32 = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar()?;
            assert!(err < 1e-5, "{b} {nh} {nkv} {d} {s}: {err}");
        }
        // Other dtypes and a multi-token query fall back.
        let q = Tensor::zeros((1, 2, 1, 4), DType::F16, &dev)?;
        assert!(decode_attention(&q, &q, &q, 1.0)?.is_none());
        let q = Tensor::zeros((1, 2, 2, 4), DType::F32, &dev)?;
        assert!(decode_attention(&q, &q, &q, 1.0)?.is_none());
        Ok(())
    }
}
