//! `x [m, k] · w[n, k]^T` in f32 on the CPU for a weight stored in another format (f16, bf16,
//! quantized blocks) and many rows of `x` (prefill): a block of weight rows at a time is widened
//! to f32 into a buffer the thread keeps, and candle's f32 kernel (the `gemm` crate) multiplies
//! it, writing straight into the block's columns of the output. The widening costs `n k`
//! operations against the product's `2 m n k`. Allocating a zeroed buffer per block and
//! concatenating the blocks' outputs (what candle's ops on the widened blocks would do) took about
//! a tenth of a 512-token f16 prefill of SmolLM2-135M.
//!
//! The sums are those of candle's f32 matmul of the whole widened weight, to the bit: the same
//! kernel over the same `k`, each output column's sum independent of the block it falls in.
#![allow(unsafe_code)]

use std::cell::RefCell;

use candle_core::{CpuStorage, Storage, Tensor};

/// The most f32 values one widened block holds (16 MiB): rows of `w` per block are this over the
/// block's row stride.
const BLOCK_VALUES: usize = 1 << 22;

thread_local! {
    /// The widened block, reused by every call on this thread.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether f32 rows of `k` values start a multiple of 2 KiB apart: gemm's packing of a
/// right-hand side whose columns are that far apart runs into cache-set conflicts. On the Zen 4
/// machine, 512 rows against a `[4096, 1024]` weight ran 159 GFLOP/s, against the same weight
/// with rows one line wider 201; `[1024, 3072]` 142 against 184 (BENCHMARKS.md).
pub fn rows_conflict(k: usize) -> bool {
    (k * 4).is_multiple_of(2048)
}

/// The row stride of a widened block for rows of `k` values: `k`, or one cache line more where
/// the rows would conflict ([`rows_conflict`]).
fn block_stride(k: usize) -> usize {
    if rows_conflict(k) {
        k + 16
    } else {
        k
    }
}

/// `y [m, n] = xs [m, k] · w^T`, `w` `[n, k]` given block by block: `widen(start, dst, ld)`
/// writes rows `start..start + dst.len() / ld` of `w` in f32 into `dst`, row `r` at
/// `dst[r * ld..r * ld + k]` (`ld` is `k`, one cache line more where [`rows_conflict`]; it may
/// use rayon's threads).
pub fn widened_matmul(
    xs: &[f32],
    (m, n, k): (usize, usize, usize),
    widen: impl Fn(usize, &mut [f32], usize),
) -> Vec<f32> {
    assert_eq!(xs.len(), m * k, "widened_matmul: x is not [m, k]");
    let mut y = vec![0f32; m * n]; // [m, n]
    let ld = block_stride(k);
    let rows_per_block = (BLOCK_VALUES / ld.max(1)).clamp(1, n.max(1));
    BLOCK.with_borrow_mut(|block| {
        for start in (0..n).step_by(rows_per_block) {
            let rows = rows_per_block.min(n - start);
            let len = rows * ld;
            if block.len() < len {
                block.resize(len, 0.0);
            }
            let block = &mut block[..len];
            widen(start, block, ld);
            let threads = rayon::current_num_threads();
            let parallelism = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: `y` holds `m` rows of `n`, this block writes its `rows` columns from
            // `start`; `xs` holds `m` rows of `k` (asserted); `block` holds `rows` rows `ld`
            // apart, of which the first `k` values are read as the `[k, rows]` right-hand side
            // (column stride `ld`, row stride 1). No two operands overlap.
            unsafe {
                gemm::gemm(
                    m,
                    rows,
                    k,
                    y.as_mut_ptr().add(start),
                    1,
                    n as isize,
                    false,
                    xs.as_ptr(),
                    1,
                    k as isize,
                    block.as_ptr(),
                    ld as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
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

/// Values (whole rows) per rayon task when widening: a few thousand.
pub const WIDEN_CHUNK: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Equal to the bit to candle's f32 matmul of the whole weight: several blocks (k large
    /// enough that a block holds fewer rows than `n`), many short rows in one block, and rows
    /// whose block is one cache line wider (k = 512).
    #[test]
    fn equals_candles_matmul_of_the_whole_weight() -> crate::error::Result<()> {
        let dev = Device::Cpu;
        for (m, k, n) in [
            (5, BLOCK_VALUES / 100 + 3, 250),
            (20, 24, 2051),
            (7, 512, 33),
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
}
