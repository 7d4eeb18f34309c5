//! Multi-threaded matrix-vector products for decode on the CPU: `y = x W^T` for a few rows of `x`.
//!
//! At decode time `x` has one row per sequence, so the product is bound by reading `W` once from
//! memory. candle's CPU matmul (the `gemm` crate) is built for large `m`: at `m = 1..8` it reaches a
//! fraction of the memory bandwidth, and for bf16 it widens the whole weight matrix to f32 on every
//! call. Here each thread streams a band of weight rows once (converting f16/bf16 rows to f32 in a
//! small buffer), and computes the dot products of that row with every row of `x`, which stay in
//! cache. llama.cpp's `ggml_compute_forward_mul_mat` does the same for `ne11` small.

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::aligned;
use super::columns::Columns;
use super::gemv_avx2::{self, Out, WeightElem};
use super::gemv_avx512::{self, Avx512Elem};
use crate::error::Result;

/// Up to this many rows of `x`, [`matmul_t`] beats candle's matmul (whose packing copies the
/// whole weight on every call). Measured on SmolLM2-135M f32 (2 threads, AVX-512 tiles with
/// prefetch): 32 rows 1.5x, 64 rows 1.1-1.2x candle's; 96-128 rows no faster or slower; 32
/// concurrent clients of the engine 1.28x with 64 against 16 (BENCHMARKS.md).
pub const MAX_ROWS: usize = 64;

/// The most weight rows of one rayon task ([`rows_per_task`]).
const MAX_ROWS_PER_TASK: usize = 4096;

/// Lanes of the dot-product accumulator: two AVX registers, so the loop vectorises and
/// hides the add latency.
const LANES: usize = 16;

/// `x [m, k] · w[n, k]^T -> [m, n]`, in f32 accumulation, returned in `x`'s dtype.
///
/// `w` must be a contiguous CPU tensor of f32, f16 or bf16; `x` any float CPU tensor. Returns
/// `None` when the tensors are not of that kind (the caller falls back to candle's matmul).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !matches!(w.device(), Device::Cpu) || w.rank() != 2 {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    let m = x.elem_count() / k;
    let out_dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?.contiguous()?;
    // A copy of `x` that starts on a cache line, as the weights do (see `aligned`).
    let (x_buf, x_start) = {
        let (storage, layout) = x32.storage_and_layout();
        let Some(xs) = cpu_slice::<f32>(&storage, layout) else {
            return Ok(None);
        };
        let (mut buf, start) = aligned::vec(xs.len(), 0f32);
        buf[start..start + xs.len()].copy_from_slice(xs);
        (buf, start)
    };
    let x_vec = &x_buf[x_start..x_start + m * k];
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    // [m, n]
    let y = match cpu {
        CpuStorage::F32(v) if gemv_avx2::available() => bands(x_vec, m, k, &v[start..end], n),
        CpuStorage::F16(v) if gemv_avx2::available() => bands(x_vec, m, k, &v[start..end], n),
        CpuStorage::BF16(v) if gemv_avx2::available() => bands(x_vec, m, k, &v[start..end], n),
        CpuStorage::F32(v) => products(x_vec, m, k, &v[start..end], n, |row, _| row),
        CpuStorage::BF16(v) => products(x_vec, m, k, &v[start..end], n, |row, buf| {
            row.convert_to_f32_slice(buf);
            buf
        }),
        CpuStorage::F16(v) => products(x_vec, m, k, &v[start..end], n, |row, buf| {
            row.convert_to_f32_slice(buf);
            buf
        }),
        _ => return Ok(None),
    };
    drop(storage);
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok(Some(
        Tensor::from_vec(y, dims, &Device::Cpu)?.to_dtype(out_dtype)?,
    ))
}

/// The contiguous data of a CPU tensor of element type `T`.
fn cpu_slice<'a, T: candle_core::WithDType>(
    storage: &'a Storage,
    layout: &Layout,
) -> Option<&'a [T]> {
    let Storage::Cpu(cpu) = storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    cpu.as_slice::<T>().ok().map(|s| &s[start..end])
}

/// Weight rows per rayon task of an `n`-row product: two tasks per thread (a multiple of
/// `multiple` rows, 8 here, 32 for the AMX tiles), at most [`MAX_ROWS_PER_TASK`]. Few large
/// tasks keep the threads in step: on two cores, SmolLM2-135M f32 decode at batch 1 ran 42.7
/// tok/s against 37.0 with 64-row tasks (batch 4: 151 against 129; f16 batch 1: 56.7 against
/// 53); the cap balances the LM head (two tasks of 24k rows a thread: 40.5-41.0).
pub(super) fn rows_per_task(n: usize, multiple: usize) -> usize {
    let even = n
        .div_ceil(2 * rayon::current_num_threads())
        .div_ceil(multiple)
        * multiple;
    even.clamp(multiple, MAX_ROWS_PER_TASK / multiple * multiple)
}

/// `y[i, j] = dot(x[i], w[j])` for every input row `i` and weight row `j`: `[m, n]`, by the
/// AVX2 tile kernels (with several input rows and AVX-512F, the AVX-512 tiles; with 16 rows or
/// more, the outer-product tiles of either, the AVX2 ones for f32 weights), a band of
/// [`rows_per_task`] weight rows per task, each task writing its own columns of `y` (no
/// transposition afterwards: it and its zeroed buffer were a fifth of the products' time at 32
/// rows).
#[allow(unsafe_code)]
fn bands<W: WeightElem + Avx512Elem>(x: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
    let wide = m > 1 && gemv_avx512::available();
    // 16 rows or more: the outer-product tiles over `x` transposed once, in chunks of two
    // registers a k-step: 32 rows (then 16) with AVX-512, else 16 rows and f32 weights only.
    let w32 = W::as_f32(w);
    let widths: &[usize] = if wide { &[32, 16] } else { &[16] };
    let outer = m >= Columns::MIN_ROWS && (wide || (w32.is_some() && avx2_outer_tiles()));
    let columns = outer.then(|| Columns::new(x, m, k, widths));
    let mut y = vec![0f32; m * n];
    let rows_per_task = rows_per_task(n, 8);
    // SAFETY: `y` holds `m` rows of `n` and is not touched until every task is done; each task
    // writes the columns of its own weight rows.
    let out = unsafe { Out::new(y.as_mut_ptr(), n) };
    (0..n.div_ceil(rows_per_task))
        .into_par_iter()
        .for_each(|task| {
            let first = task * rows_per_task;
            let rows = rows_per_task.min(n - first);
            // SAFETY: the caller checked `gemv_avx2::available()` (and `wide` the AVX-512
            // kernels'); `w` holds `n` rows of `k`, this band's rows are `first..first + rows`,
            // whose columns of `y` only this task writes.
            unsafe {
                let out = out.at_column(first);
                if let Some(cols) = &columns {
                    match w32 {
                        Some(w32) if !wide => cols.band_avx2(x, w32, first, rows, out),
                        _ => cols.band(x, w, first, rows, out),
                    }
                } else if wide {
                    W::band_avx512(x, m, k, w, first, rows, out)
                } else {
                    W::band(x, m, k, w, first, rows, out)
                }
            }
        });
    y
}

/// Whether batches of [`Columns::MIN_ROWS`] rows or more of f32 weights take the AVX2
/// outer-product tiles on CPUs without AVX-512 (default) or the dot tiles
/// (`LMGEN_CPU_OUTER_TILES=0`, for measuring one against the other).
fn avx2_outer_tiles() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LMGEN_CPU_OUTER_TILES").map_or(true, |v| v != "0"))
}

/// The same as [`bands`] in portable code, for CPUs without AVX2 and FMA (`[m, n]`).
/// `row_f32` turns one weight row into f32, using the buffer if it must convert.
fn products<W, F>(x: &[f32], m: usize, k: usize, w: &[W], n: usize, row_f32: F) -> Vec<f32>
where
    W: Sync,
    F: for<'b> Fn(&'b [W], &'b mut [f32]) -> &'b [f32] + Sync,
{
    let mut y_t = vec![0f32; n * m];
    let rows_per_task = rows_per_task(n, 8);
    y_t.par_chunks_mut(rows_per_task * m)
        .enumerate()
        .for_each(|(task, out)| {
            let mut buf = vec![0f32; k];
            let first = task * rows_per_task;
            for (r, out_row) in out.chunks_exact_mut(m).enumerate() {
                let j = first + r;
                let w_row = row_f32(&w[j * k..(j + 1) * k], &mut buf);
                for (i, o) in out_row.iter_mut().enumerate() {
                    *o = dot(&x[i * k..(i + 1) * k], w_row);
                }
            }
        });
    transposed(y_t, m, n)
}

/// `y_t` `[rows, m]` as `[m, rows]` (the portable and the quantized products' layout).
pub(crate) fn transposed(y_t: Vec<f32>, m: usize, rows: usize) -> Vec<f32> {
    if m == 1 {
        return y_t;
    }
    let mut y = vec![0f32; m * rows];
    for (j, col) in y_t.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * rows + j] = *v;
        }
    }
    y
}

/// `sum(a * b)` over equal-length slices, in `LANES` independent partial sums.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &Tensor, w: &Tensor) -> Vec<Vec<f32>> {
        x.to_dtype(DType::F32)
            .unwrap()
            .matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap()
            .to_vec2()
            .unwrap()
    }

    #[test]
    fn matches_candle_matmul_for_every_weight_dtype() {
        let dev = Device::Cpu;
        // n not a multiple of the rows per task, k not a multiple of LANES.
        let (m, n, k) = (3, 200, 37);
        let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
        let w32 = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = w32.to_dtype(dtype).unwrap();
            let want = reference(&x, &w);
            let got: Vec<Vec<f32>> = matmul_t(&x, &w).unwrap().unwrap().to_vec2().unwrap();
            for (g, r) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!(
                    (g - r).abs() < 1e-4 * (1.0 + r.abs()),
                    "{dtype:?}: {g} vs {r}"
                );
            }
        }
    }

    /// The portable loop, which CPUs without AVX2 run (the test above takes the AVX2 kernels
    /// where the CPU has them).
    #[test]
    fn portable_products_match_candle_matmul() {
        let dev = Device::Cpu;
        let (m, n, k) = (3, 70, 37);
        let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
        let want = reference(&x, &w);
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let ws: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let y = products(&xs, m, k, &ws, n, |row, _| row);
        for (i, row) in y.chunks_exact(n).enumerate() {
            for (j, g) in row.iter().enumerate() {
                let r = want[i][j];
                assert!((g - r).abs() < 1e-4 * (1.0 + r.abs()), "{g} vs {r}");
            }
        }
    }

    #[test]
    fn keeps_leading_dims_and_dtype() {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 1, 8), DType::BF16, &dev).unwrap();
        let w = Tensor::ones((5, 8), DType::BF16, &dev).unwrap();
        let y = matmul_t(&x, &w).unwrap().unwrap();
        assert_eq!(y.dims(), &[2, 1, 5]);
        assert_eq!(y.dtype(), DType::BF16);
        let v: Vec<f32> = y
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(v, vec![8.0; 10]);
    }
}
