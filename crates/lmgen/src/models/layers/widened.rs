//! `x [m, k] · w[n, k]^T` in f32 on the CPU for a weight stored in another format (f16, bf16,
//! quantized blocks) and many rows of `x` (prefill): the weight's rows are cut into panels of
//! [`PANEL_ROWS`], and each of rayon's threads takes a panel at a time, widens it to f32 into a
//! buffer the thread keeps (small enough to stay in its L2 cache) and multiplies it by candle's
//! f32 kernel (the `gemm` crate) on that one thread, writing straight into the panel's columns of
//! the output. The widening costs `n k` operations against the product's `2 m n k`.
//!
//! Widening 16 MiB blocks of rows on both threads and multiplying each by a two-thread gemm (how
//! this ran before) left gemm packing its left-hand side out of a block that had fallen out of
//! the caches: `pack_lhs` alone was ~9% of a 512-token f16 prefill of the Qwen2.5-0.5B shape, the
//! widening another 3%. With a panel of 64 rows (gemm's AVX-512 tile height; its AVX2 one is 16)
//! the pack reads from L2 and the threads never wait for each other inside a product: that
//! prefill went from 419-424 to 494-517 tokens/s (BENCHMARKS.md). Allocating a zeroed buffer per
//! block and concatenating the blocks' outputs (what candle's ops on the widened blocks would do)
//! took about a tenth of a 512-token f16 prefill of SmolLM2-135M.
//!
//! The sums are those of candle's f32 matmul of the whole widened weight, to the bit: the same
//! kernel over the same `k` (gemm's depth blocking depends on `k` alone), each output column's
//! sum independent of the panel it falls in.
#![allow(unsafe_code)]

use std::cell::RefCell;

use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

use super::thread_gemm::{product, Operand};

/// Weight rows a panel: gemm's f32 tile height with AVX-512 (4 registers of 16 lanes; 2 of 8
/// with AVX2). On the Zen 5 machine, 512 prompt rows of the Qwen2.5-0.5B shape in f16: 32 rows
/// 453-482 tokens/s, 64 rows 494-517, 96 rows 473-485, 128 rows 487-498, 512 rows 439-472.
/// Fewer input rows, or a short last panel, take more ([`panels`]).
pub const PANEL_ROWS: usize = 64;

/// Whether gemm multiplies `rows` weight rows by `m` input rows on its general path (packed
/// tiles, the depth cut in blocks by `k` alone): not its small-product path (both at most 64,
/// whose depth blocks are 512 long) nor its dot-product path (at most 256 outputs). Sums on
/// different paths differ in the last bits.
fn general_path(rows: usize, m: usize) -> bool {
    !(rows <= 64 && m <= 64) && rows * m > 256
}

/// The panels `(first row, rows)` of `n` weight rows against `m` input rows: [`PANEL_ROWS`]
/// each, or the smallest multiple of it that gemm multiplies on its general path, with a last
/// panel too short for that path joined to the one before; one panel of all the rows where the
/// whole product is not on that path either. So each panel's sums are the whole product's.
fn panels(n: usize, m: usize) -> Vec<(usize, usize)> {
    if !general_path(n, m) {
        return vec![(0, n)];
    }
    let size = (1..)
        .map(|panels| panels * PANEL_ROWS)
        .find(|&rows| general_path(rows, m) || rows >= n)
        .unwrap_or(n);
    let mut out: Vec<(usize, usize)> = (0..n)
        .step_by(size)
        .map(|start| (start, size.min(n - start)))
        .collect();
    if let [.., (_, before), (_, last)] = out[..] {
        if !general_path(last, m) {
            out.pop();
            if let Some(panel) = out.last_mut() {
                panel.1 = before + last;
            }
        }
    }
    out
}

thread_local! {
    /// The widened panel, reused by every call on this thread.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether f32 rows of `k` values start a multiple of 2 KiB apart: gemm's packing of a
/// right-hand side whose columns are that far apart runs into cache-set conflicts. On the Zen 4
/// machine, 512 rows against a `[4096, 1024]` weight ran 159 GFLOP/s, against the same weight
/// with rows one line wider 201; `[1024, 3072]` 142 against 184 (BENCHMARKS.md).
pub fn rows_conflict(k: usize) -> bool {
    (k * 4).is_multiple_of(2048)
}

/// The row stride of a widened panel for rows of `k` values: `k`, or one cache line more where
/// the rows would conflict ([`rows_conflict`]).
fn panel_stride(k: usize) -> usize {
    if rows_conflict(k) {
        k + 16
    } else {
        k
    }
}

/// The output `[m, n]` shared by the panels' tasks, each writing its own columns.
struct Output(*mut f32);

// SAFETY: the tasks write disjoint columns of one buffer that outlives them (below).
unsafe impl Sync for Output {}

/// `y [m, n] = xs [m, k] · w^T`, `w` `[n, k]` given panel by panel: `widen(start, dst, ld)`
/// writes rows `start..start + dst.len() / ld` of `w` in f32 into `dst`, row `r` at
/// `dst[r * ld..r * ld + k]` (`ld` is `k`, one cache line more where [`rows_conflict`]). It is
/// called on rayon's threads, a panel a call, and must not itself use rayon (a thread waiting
/// in a nested join could take another panel and find its buffer borrowed).
pub fn widened_matmul(
    xs: &[f32],
    (m, n, k): (usize, usize, usize),
    widen: impl Fn(usize, &mut [f32], usize) + Sync,
) -> Vec<f32> {
    assert_eq!(xs.len(), m * k, "widened_matmul: x is not [m, k]");
    let mut y = vec![0f32; m * n]; // [m, n]
    let ld = panel_stride(k);
    let out = Output(y.as_mut_ptr());
    let out = &out;
    panels(n, m).into_par_iter().for_each(|(start, rows)| {
        PANEL.with_borrow_mut(|buffer| {
            let len = rows * ld;
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            let buffer = &mut buffer[..len];
            widen(start, buffer, ld);
            // SAFETY: `y` holds `m` rows of `n` and lives until every task has returned; this
            // task alone writes its `rows` columns from `start`; `xs` holds `m` rows of `k`
            // (asserted); `buffer` holds `rows` rows `ld` apart, of which the first `k` values
            // are read as the `[k, rows]` right-hand side (column stride `ld`, row stride 1). No
            // two operands overlap.
            unsafe {
                product(
                    (m, rows, k),
                    Operand::rows(out.0.add(start), n),
                    Operand::rows(xs.as_ptr(), k),
                    Operand::columns(buffer.as_ptr(), ld),
                );
            }
        });
    });
    y
}

/// `f` over the f32 values of `x` `[m, k]` (contiguous on the CPU) read in place, without a
/// copy; `None` for another device or dtype, or a strided `x`.
pub fn with_rows<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (guard, layout) = x.storage_and_layout();
    match (&*guard, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => Some(f(&v[start..end])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Equal to the bit to candle's f32 matmul of the whole weight: several panels, a last one
    /// joined to the one before (2051 and 130 rows), a long `k` (gemm's depth in several blocks),
    /// few and many input rows, fewer weight rows than a panel, and rows whose panel is one
    /// cache line wider (k = 512).
    #[test]
    fn equals_candles_matmul_of_the_whole_weight() -> crate::error::Result<()> {
        let dev = Device::Cpu;
        for (m, k, n) in [
            (5, 40_003, 250),
            (20, 24, 2051),
            (7, 512, 33),
            (70, 1000, 130),
            (300, 64, 200),
        ] {
            let x = Tensor::randn(0f32, 1., (m, k), &dev)?;
            let w = Tensor::randn(0f32, 1., (n, k), &dev)?;
            let want: Vec<f32> = x.matmul(&w.t()?)?.flatten_all()?.to_vec1()?;
            let (xs, ws): (Vec<f32>, Vec<f32>) =
                (x.flatten_all()?.to_vec1()?, w.flatten_all()?.to_vec1()?);
            let got = widened_matmul(&xs, (m, n, k), |start, dst, ld| {
                for (r, row) in dst.chunks_mut(ld).enumerate() {
                    row[..k].copy_from_slice(&ws[(start + r) * k..(start + r + 1) * k]);
                }
            });
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.to_bits(), w.to_bits(), "k={k}: {g} vs {w}");
            }
        }
        Ok(())
    }

    /// Every weight row in exactly one panel, in order, each on gemm's general path where the
    /// whole product is.
    #[test]
    fn panels_cover_the_rows_on_the_general_path() {
        for m in [1, 2, 3, 5, 17, 64, 65, 300, 512] {
            for n in [1, 3, 63, 64, 65, 129, 200, 896, 2051, 9728] {
                let panels = panels(n, m);
                let mut next = 0;
                for &(start, rows) in &panels {
                    assert_eq!(start, next, "n={n} m={m}: {panels:?}");
                    assert!(rows > 0);
                    if general_path(n, m) {
                        assert!(general_path(rows, m), "n={n} m={m}: {panels:?}");
                    }
                    next += rows;
                }
                assert_eq!(next, n, "n={n} m={m}: {panels:?}");
            }
        }
        assert_eq!(panels(896, 512).len(), 14);
    }
}
