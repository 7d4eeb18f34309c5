//! `x [.., k] · w[n, k]^T` for an f32, f16 or bf16 weight and many rows of `x` (prefill, large
//! batches) on the CPU: panels of weight rows on rayon's threads, each widened to f32 (`half`'s
//! vectorised slice conversion, F16C where the CPU has it) or copied, into the thread's L2, and
//! multiplied by candle's f32 kernel, writing into the output's columns ([`widened_matmul`]).
//!
//! candle's CPU matmul has no bf16 kernel (it widens the whole matrix to f32 on every call) and a
//! slow f16 one. For f32 weights it runs gemm over the whole weight on both threads, packing the
//! weight's rows from memory while the threads wait for each other inside the product; a 512-token
//! f32 prefill of the Qwen2.5-0.5B shape took it 392-397 tokens/s against 477 for the panels. The
//! sums are the same to the bit (gemm's general path over the same `k`).

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::slice::HalfFloatSliceExt;

use crate::error::Result;
use crate::models::layers::widened::{widened_matmul, with_rows};

/// `x · w^T`, `w` `[n, k]` f32, f16 or bf16, contiguous on the CPU; the result in `x`'s dtype
/// and shape with the last dimension `n`. `None` when `w` is not of that kind (the caller runs
/// candle's ops).
pub fn panel_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (n, k) = w.dims2()?;
    let x32 = x.to_dtype(DType::F32)?.reshape(((), k))?.contiguous()?; // [m, k]
    let m = x32.dim(0)?;
    let (wg, wl) = w.storage_and_layout();
    let (Storage::Cpu(cpu), Some((w0, w1))) = (&*wg, wl.contiguous_offsets()) else {
        return Ok(None);
    };
    if !matches!(
        cpu,
        CpuStorage::F32(_) | CpuStorage::F16(_) | CpuStorage::BF16(_)
    ) {
        return Ok(None);
    }
    let y = with_rows(&x32, |xs| {
        widened_matmul(xs, (m, n, k), |start, block, ld| {
            let rows = block.len() / ld;
            let src = w0 + start * k..w0 + (start + rows) * k;
            debug_assert!(src.end <= w1);
            match cpu {
                CpuStorage::F16(v) => widen(&v[src], k, block, ld),
                CpuStorage::BF16(v) => widen(&v[src], k, block, ld),
                CpuStorage::F32(v) => {
                    for (d, s) in block.chunks_mut(ld).zip(v[src].chunks(k)) {
                        d[..k].copy_from_slice(s);
                    }
                }
                _ => unreachable!("checked above: f32, f16 or bf16"),
            }
        })
    });
    drop(wg);
    let Some(y) = y else {
        return Ok(None);
    };
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok(Some(
        Tensor::from_vec(y, dims, &Device::Cpu)?.to_dtype(x.dtype())?,
    ))
}

/// The rows of `src` (`k` values each) widened to f32 into `dst`, row `r` at `dst[r * ld..]`.
fn widen<T>(src: &[T], k: usize, dst: &mut [f32], ld: usize)
where
    [T]: HalfFloatSliceExt,
{
    for (d, s) in dst.chunks_mut(ld).zip(src.chunks(k)) {
        s.convert_to_f32_slice(&mut d[..k]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to the bit to candle's f32 matmul of the widened weight (the same gemm kernel,
    /// writing into a wider output; candle multiplies the batch's two prompts apart, the panels
    /// both at once): a long `k` over several panels, many short rows, a prompt longer than
    /// gemm's small-product paths; leading dims kept; f32, f16 and bf16.
    #[test]
    fn equals_the_f32_product_of_the_widened_weight() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, k, n) in [(5, 41_946, 250), (20, 24, 2051), (40, 896, 200)] {
            let x = Tensor::randn(0f32, 1., (2, rows, k), &dev)?;
            let w = Tensor::randn(0f32, 1., (n, k), &dev)?;
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let wh = w.to_dtype(dtype)?;
                let want = x.broadcast_matmul(&wh.to_dtype(DType::F32)?.t()?)?;
                let got = panel_matmul(&x, &wh)?.expect("applies");
                assert_eq!(got.dims(), &[2, rows, n]);
                let (g, w): (Vec<f32>, Vec<f32>) = (
                    got.flatten_all()?.to_vec1()?,
                    want.flatten_all()?.to_vec1()?,
                );
                for (g, w) in g.iter().zip(&w) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{dtype:?} k={k}: {g} vs {w}");
                }
            }
            assert!(panel_matmul(&x, &w.to_dtype(DType::F64)?)?.is_none());
        }
        Ok(())
    }
}
