//! `x [.., k] · w[n, k]^T` for an f16/bf16 weight and many rows of `x` (prefill) on the CPU.
//!
//! candle's CPU matmul has no bf16 kernel (it widens the whole matrix to f32 on every call) and a
//! slow f16 one, so a block of weight rows at a time is widened to f32 (`half`'s vectorised slice
//! conversion, F16C where the CPU has it, on rayon's threads) and multiplied by candle's f32
//! kernel (the `gemm` crate), which writes straight into its columns of the output. The widening
//! costs `n k` operations against the product's `2 m n k`. The block buffer is the thread's own
//! and kept between calls: allocating it for each block (zeroed, then overwritten) and
//! concatenating the blocks' outputs took about a tenth of a 512-token f16 prefill of
//! SmolLM2-135M.
#![allow(unsafe_code)]

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::error::Result;

/// The most f32 values one widened block holds (16 MiB): rows of `w` per block are this over `k`.
const BLOCK_VALUES: usize = 1 << 22;

/// Elements widened per rayon task.
const WIDEN_CHUNK: usize = 1 << 16;

thread_local! {
    /// The widened block, reused by every call on this thread.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `x · w^T`, `w` `[n, k]` f16 or bf16, contiguous on the CPU; the result in `x`'s dtype and
/// shape with the last dimension `n`. `None` when `w` is not of that kind.
pub fn half_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (n, k) = w.dims2()?;
    let x32 = x.to_dtype(DType::F32)?.reshape(((), k))?.contiguous()?; // [m, k]
    let m = x32.dim(0)?;
    let (wg, wl) = w.storage_and_layout();
    let (Storage::Cpu(cpu), Some((w0, w1))) = (&*wg, wl.contiguous_offsets()) else {
        return Ok(None);
    };
    if !matches!(cpu, CpuStorage::F16(_) | CpuStorage::BF16(_)) {
        return Ok(None);
    }
    let (xg, xl) = x32.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(xv)), Some((x0, x1))) = (&*xg, xl.contiguous_offsets())
    else {
        return Ok(None);
    };
    let xs = &xv[x0..x1];
    let mut y = vec![0f32; m * n]; // [m, n]
    let rows_per_block = (BLOCK_VALUES / k.max(1)).clamp(1, n.max(1));
    BLOCK.with_borrow_mut(|block| {
        for start in (0..n).step_by(rows_per_block) {
            let rows = rows_per_block.min(n - start);
            let len = rows * k;
            if block.len() < len {
                block.resize(len, 0.0);
            }
            let block = &mut block[..len];
            let src = w0 + start * k..w0 + start * k + len;
            match cpu {
                CpuStorage::F16(v) => widen(&v[src], block),
                CpuStorage::BF16(v) => widen(&v[src], block),
                _ => unreachable!("checked above: f16 or bf16"),
            }
            debug_assert!(w0 + start * k + len <= w1);
            let threads = rayon::current_num_threads();
            let parallelism = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: `y` holds `m` rows of `n`, this block writes its `rows` columns from
            // `start`; `xs` holds `m` rows of `k`; `block` holds `rows` rows of `k`, read as the
            // `[k, rows]` right-hand side (column stride `k`, row stride 1). No two operands
            // overlap.
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
                    k as isize,
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
    drop((wg, xg));
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok(Some(
        Tensor::from_vec(y, dims, &Device::Cpu)?.to_dtype(x.dtype())?,
    ))
}

/// `src` widened to f32 into `dst` (of the same length), on rayon's threads.
fn widen<T: Sync>(src: &[T], dst: &mut [f32])
where
    [T]: HalfFloatSliceExt,
{
    dst.par_chunks_mut(WIDEN_CHUNK)
        .zip(src.par_chunks(WIDEN_CHUNK))
        .for_each(|(d, s)| s.convert_to_f32_slice(d));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to the bit to candle's f32 matmul of the widened weight (the same gemm kernel,
    /// writing into a wider output): several blocks (k large enough that a block holds fewer
    /// rows than `n`), and many short rows in one block; leading dims kept; f16 and bf16.
    #[test]
    fn equals_the_f32_product_of_the_widened_weight() -> Result<()> {
        let dev = Device::Cpu;
        // 99 rows a block; then one block of short rows.
        for (rows, k, n) in [(5, BLOCK_VALUES / 100 + 3, 250), (20, 24, 2051)] {
            let x = Tensor::randn(0f32, 1., (2, rows, k), &dev)?;
            let w = Tensor::randn(0f32, 1., (n, k), &dev)?;
            for dtype in [DType::F16, DType::BF16] {
                let wh = w.to_dtype(dtype)?;
                let want = x.broadcast_matmul(&wh.to_dtype(DType::F32)?.t()?)?;
                let got = half_matmul(&x, &wh)?.expect("applies");
                assert_eq!(got.dims(), &[2, rows, n]);
                let (g, w): (Vec<f32>, Vec<f32>) = (
                    got.flatten_all()?.to_vec1()?,
                    want.flatten_all()?.to_vec1()?,
                );
                for (g, w) in g.iter().zip(&w) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{dtype:?} k={k}: {g} vs {w}");
                }
            }
            assert!(half_matmul(&x, &w)?.is_none());
        }
        Ok(())
    }
}
