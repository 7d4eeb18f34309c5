//! A prompt's attention under a mask by position on the CPU ([`attend_causal_blocks`]): the
//! queries in blocks of [`BLOCK_ROWS`] rows, each block over only the keys one of its rows may
//! see (up to its last row's position; from its first row's window start on sliding layers).
//!
//! [`super::attend`] over the whole prompt multiplies every query by every key and masks half
//! the scores away afterwards, in candle ops that allocate and write `[b, nh, t, past + t]`
//! twice (the scores, the softmax) and the additive mask beside them (4 GiB each in f32 for a
//! 32k-token prompt): at 512 tokens of the Qwen3-0.6B shape ~60 ms a layer on two Zen 3 cores,
//! the products at 50-90 GFLOP/s and the fresh pages' faults and zeroing a good part of it.
//! Here each (batch row, query head, block) is one task on rayon's threads: `gemm` writes the
//! block's scores into a buffer the thread keeps, each row is scaled, masked and normalised in
//! place (the mask by position as a range of visible keys, never built), and `gemm`
//! multiplies them by the values straight into the output. The products do
//! ~(1 + 1 / blocks) / 2 of the unblocked work.
//!
//! Each row's scaled and masked scores, their maximum and the exponentials' sum are computed as
//! [`super::softmax_cpu`] computes them over the whole row ([`normalise_row`]) (a key left out is one the row may
//! not see: its exponential is +0 there); the products' sums over fewer keys are grouped
//! differently by gemm, so the result equals the unblocked one to rounding, not to the bit.
//! A softcap, sinks or another dtype take the blocks through candle's ops ([`super::attend`]).
#![allow(unsafe_code)]

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use super::softmax_cpu::normalise_row;
use super::{attend, Scores};
use crate::error::Result;
use crate::models::layers::mask::{masked_value, CausalMask};
use crate::models::layers::thread_gemm::{product, Operand};

/// Query rows a block: a block's scores (`rows x keys` f32) stay in the thread's cache for a
/// few thousand keys, and the masked work left in the diagonal block is half of `rows^2`.
pub const BLOCK_ROWS: usize = 64;

/// `softmax(q k^T * scale + mask) v` under `mask`, block by block (see the module's doc): `q`
/// `[b, nh, t, d]`, `k`, `v` `[b, nkv, past + t, d]` -> `[b, nh, t, d]`. `None` for another
/// device, or a prompt of fewer than two blocks (nothing to skip).
pub fn attend_causal_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &CausalMask,
    scores_of: Scores<'_>,
) -> Result<Option<Tensor>> {
    let t = q.dim(2)?;
    let s = k.dim(2)?;
    if !q.device().is_cpu() || t < 2 * BLOCK_ROWS || t != mask.q_len() || s != mask.kv_len() {
        return Ok(None);
    }
    if scores_of.softcap.is_none() && scores_of.sinks.is_none() && mask.dtype() == DType::F32 {
        if let Some(out) = fused(q, k, v, mask, scores_of.scale)? {
            return Ok(Some(out));
        }
    }
    let past = s - t;
    let mut outs = Vec::with_capacity(t.div_ceil(BLOCK_ROWS));
    for (r0, r1) in blocks(t) {
        let (lo, hi) = keys_of(past, (r0, r1), mask.window());
        let q_block = q.narrow(2, r0, r1 - r0)?.contiguous()?; // [b, nh, rows, d]
        let k_block = k.narrow(2, lo, hi - lo)?; // [b, nkv, keys, d]
        let v_block = v.narrow(2, lo, hi - lo)?;
        let m = mask.block(r0..r1, lo..hi)?; // [1, 1, rows, keys]
        outs.push(attend(&q_block, &k_block, &v_block, m.as_ref(), scores_of)?);
    }
    Ok(Some(Tensor::cat(&outs, 2)?)) // [b, nh, t, d]
}

/// The blocks `(first row, end)` of `t` query rows.
fn blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t)
        .step_by(BLOCK_ROWS)
        .map(move |r0| (r0, (r0 + BLOCK_ROWS).min(t)))
}

/// The keys `[lo, hi)` some row of the block `[r0, r1)` sees: up to the last row's position,
/// from the first row's window start.
fn keys_of(past: usize, (r0, r1): (usize, usize), window: Option<usize>) -> (usize, usize) {
    let lo = window.map_or(0, |w| (past + r0 + 1).saturating_sub(w));
    (lo, past + r1)
}

/// An f32 tensor's values on the CPU with its strides, for rows of its last dimension that are
/// contiguous (stride 1); `None` otherwise.
struct Strided<'a> {
    data: &'a [f32],
    start: usize,
    stride: [usize; 4],
}

fn strided<R>(x: &Tensor, f: impl FnOnce(Strided<'_>) -> Option<R>) -> Option<R> {
    let (guard, layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*guard else {
        return None;
    };
    let stride: [usize; 4] = layout.stride().try_into().ok()?;
    if stride[3] != 1 && layout.dims()[3] > 1 {
        return None;
    }
    f(Strided {
        data,
        start: layout.start_offset(),
        stride,
    })
}

impl Strided<'_> {
    /// The address of element `(a, b, row, 0)`.
    fn at(&self, a: usize, b: usize, row: usize) -> *const f32 {
        let i = self.start + a * self.stride[0] + b * self.stride[1] + row * self.stride[2];
        debug_assert!(i <= self.data.len());
        // SAFETY: within the storage the layout describes (the caller's indices are in range).
        unsafe { self.data.as_ptr().add(i) }
    }
}

thread_local! {
    /// A block's scores, reused by every task on this thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The output `[b, nh, t, d]` shared by the tasks, each writing its own rows.
struct Output(*mut f32);

// SAFETY: the tasks write disjoint rows of one buffer that outlives them (below).
unsafe impl Sync for Output {}

/// The fused blocks (see the module's doc): f32 `q`, `k`, `v` on the CPU whose last dimension is
/// contiguous; `None` otherwise.
fn fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &CausalMask,
    scale: f64,
) -> Result<Option<Tensor>> {
    let (b, nh, t, d) = q.dims4()?;
    let (nkv, s) = (k.dim(1)?, k.dim(2)?);
    if nkv == 0 || !nh.is_multiple_of(nkv) || v.dims() != k.dims() || k.dim(3)? != d {
        return Ok(None);
    }
    let n_rep = nh / nkv;
    let past = s - t;
    let (scale, masked, window) = (scale as f32, masked_value(DType::F32), mask.window());
    let mut out = vec![0f32; b * nh * t * d]; // [b, nh, t, d]
    let dst = Output(out.as_mut_ptr());
    let dst = &dst;
    let ran = strided(q, |qs| {
        strided(k, |ks| {
            strided(v, |vs| {
                let tasks: Vec<(usize, usize, (usize, usize))> = (0..b)
                    .flat_map(|bi| (0..nh).flat_map(move |h| blocks(t).map(move |bl| (bi, h, bl))))
                    .collect();
                tasks.into_par_iter().for_each(|(bi, h, (r0, r1))| {
                    let (lo, hi) = keys_of(past, (r0, r1), window);
                    let (rows, keys) = (r1 - r0, hi - lo);
                    SCORES.with_borrow_mut(|scores| {
                        if scores.len() < rows * keys {
                            scores.resize(rows * keys, 0.0);
                        }
                        let scores = &mut scores[..rows * keys]; // [rows, keys]
                        let kvh = h / n_rep;
                        // SAFETY: `scores` holds `rows` rows of `keys`; `q`'s rows r0..r1 of
                        // head h, and `k`'s rows lo..hi of head kvh, are within their storage
                        // (in range of their dims, checked above), `d` values each, contiguous.
                        unsafe {
                            product(
                                (rows, keys, d),
                                Operand::rows(scores.as_mut_ptr(), keys),
                                Operand::rows(qs.at(bi, h, r0), qs.stride[2]),
                                Operand::columns(ks.at(bi, kvh, lo), ks.stride[2]),
                            );
                        }
                        for (i, row) in scores.chunks_mut(keys).enumerate() {
                            // This row's position and the keys it sees among lo..hi: scaled,
                            // plus the additive mask's 0 or `masked` (its arithmetic), then
                            // normalised.
                            let p = past + r0 + i;
                            let first = window.map_or(0, |w| (p + 1).saturating_sub(w)) - lo;
                            let (before, rest) = row.split_at_mut(first);
                            let (seen, after) = rest.split_at_mut(p + 1 - lo - first);
                            for x in before.iter_mut().chain(after.iter_mut()) {
                                *x = (*x * scale + 0.0) + masked;
                            }
                            for x in seen.iter_mut() {
                                *x = (*x * scale + 0.0) + 0.0;
                            }
                            normalise_row(row);
                        }
                        // SAFETY: the output's rows r0..r1 of (bi, h) are this task's alone and
                        // within `out`; `v`'s rows lo..hi of head kvh are in its storage.
                        unsafe {
                            product(
                                (rows, d, keys),
                                Operand::rows(dst.0.add(((bi * nh + h) * t + r0) * d), d),
                                Operand::rows(scores.as_ptr(), keys),
                                Operand::rows(vs.at(bi, kvh, lo), vs.stride[2]),
                            );
                        }
                    });
                });
                Some(())
            })
        })
    });
    if ran.is_none() {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(out, (b, nh, t, d), &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::models::layers::mask::{DenseMask, MaskSpec};

    /// The blocks give the unblocked attention under the whole mask, fused and through candle's
    /// ops (a softcap and sinks): cached keys before the prompt, a prompt no multiple of a
    /// block, grouped heads, a sliding window shorter and longer than a block, keys and values
    /// read in place from a larger cache.
    #[test]
    fn blocks_equal_the_whole_masked_attention() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nh, nkv, d) = (2, 4, 2, 16);
        let sinks = Tensor::randn(0f32, 1., nh, &dev)?;
        for (past, t, window) in [
            (0, 2 * BLOCK_ROWS, None),
            (5, 3 * BLOCK_ROWS + 17, None),
            (0, 2 * BLOCK_ROWS + 1, Some(40)),
            (9, 3 * BLOCK_ROWS, Some(100)),
        ] {
            let s = past + t;
            let q = Tensor::randn(0f32, 1., (b, nh, t, d), &dev)?;
            // Views of a larger cache, as the KV cache hands them out.
            let k = Tensor::randn(0f32, 1., (b, nkv, s + 7, d), &dev)?.narrow(2, 0, s)?;
            let v = Tensor::randn(0f32, 1., (b, nkv, s + 7, d), &dev)?.narrow(2, 0, s)?;
            let spec = MaskSpec {
                padding: None,
                batch: b,
                q_len: t,
                kv_len: s,
            };
            let DenseMask::Causal(mask) = DenseMask::new(&spec, window, DType::F32, &dev)? else {
                panic!("a prompt without padding is masked by position");
            };
            for scores_of in [
                Scores {
                    scale: 0.25,
                    softcap: None,
                    sinks: None,
                },
                Scores {
                    scale: 0.25,
                    softcap: Some(3.0),
                    sinks: Some(&sinks),
                },
            ] {
                let whole = attend(&q, &k, &v, mask.tensor()?, scores_of)?;
                let blocks = attend_causal_blocks(&q, &k, &v, &mask, scores_of)?
                    .expect("two blocks or more");
                assert_eq!(blocks.dims(), whole.dims());
                let diff = (&blocks - &whole)?.abs()?.flatten_all()?.max(0)?;
                let diff = diff.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "past {past} t {t} window {window:?}: {diff}");
            }
        }
        // One block's worth of queries: nothing to skip.
        let q = Tensor::zeros((1, 2, BLOCK_ROWS, 8), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 2, BLOCK_ROWS, 8), DType::F32, &dev)?;
        let spec = MaskSpec {
            padding: None,
            batch: 1,
            q_len: BLOCK_ROWS,
            kv_len: BLOCK_ROWS,
        };
        let DenseMask::Causal(mask) = DenseMask::new(&spec, None, DType::F32, &dev)? else {
            panic!("masked by position");
        };
        let scores_of = Scores {
            scale: 1.0,
            softcap: None,
            sinks: None,
        };
        assert!(attend_causal_blocks(&q, &k, &k, &mask, scores_of)?.is_none());
        Ok(())
    }
}
