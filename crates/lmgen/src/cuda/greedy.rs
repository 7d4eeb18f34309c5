//! Greedy selection on the GPU: each row's first maximum and its log-probability, so that a step
//! whose rows only need their argmax reads back two numbers a row instead of the whole row of
//! logits (600 KB a row for a 152k vocabulary) and leaves the host's scan.

use candle_core::Tensor;

use crate::error::Result;

/// `[rows, vocab]` raw logits (f32, f16 or bf16, contiguous) -> `[rows, 2]` f32: each row's
/// greedy id (the first maximum, or the first NaN where the row has one, as the host's
/// [`argmax`](crate::generation::sampler::argmax)) and that logit minus the row's log-sum-exp
/// (its log-probability before any processor), in two launches (shares of each row over many
/// blocks, then one warp a row merging them: one block a row took 42 us on a 128k-entry row). `None` where the kernel does not
/// apply (see the [module](super) docs).
pub fn greedy_logprob(logits: &Tensor) -> Result<Option<Tensor>> {
    if !super::applies(logits) || !logits.is_contiguous() || logits.rank() != 2 {
        return Ok(None);
    }
    imp::run(logits)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CudaDevice, Layout, Shape, WithDType};

    use super::*;
    use crate::cuda::launch::Launch;

    pub fn run(logits: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(logits.apply_op1_no_bwd(&GreedyLogprob)?))
    }

    struct GreedyLogprob;

    /// Elements of a row each block of the first launch takes (256 threads, 16 each).
    const CHUNK: usize = 4096;
    /// Words of the kernel's `Pick` (best, its index, the first NaN's index, maximum, sum).
    const PICK_WORDS: usize = 5;

    /// Blocks over `CHUNK`-element shares of every row, then one warp a row merging them.
    fn launch<T: WithDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr>(
        src: &CudaSlice<T>,
        layout: &Layout,
        dev: &CudaDevice,
    ) -> candle_core::Result<CudaSlice<f32>> {
        let (a, b) = layout
            .contiguous_offsets()
            .ok_or_else(|| crate::cuda::cuda_only("greedy_logprob (contiguous logits)"))?;
        let src = src.slice(a..b);
        let (rows, vocab) = layout.shape().dims2()?;
        let out = unsafe { dev.alloc::<f32>(2 * rows)? };
        if rows == 0 || vocab == 0 {
            return Ok(out);
        }
        let splits = vocab.div_ceil(CHUNK);
        let part = unsafe { dev.alloc::<f32>(rows * splits * PICK_WORDS)? };
        let (stream, part_fn) = crate::cuda::func::<T>(dev, "lmgen_greedy_part")?;
        let cfg = LaunchConfig {
            grid_dim: (splits as u32, rows as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (vocab, chunk) = (vocab as i32, CHUNK as i32);
        let mut b = Launch::new(&stream, &part_fn);
        b.arg(&src).arg(&part).arg(&vocab).arg(&chunk).dependent();
        unsafe { b.launch(cfg) }.w()?;
        let (_, combine) = crate::cuda::func::<f32>(dev, "lmgen_greedy_combine")?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let splits = splits as i32;
        let mut b = Launch::new(&stream, &combine);
        b.arg(&part).arg(&out).arg(&splits).dependent();
        unsafe { b.launch(cfg) }.w()?;
        Ok(out)
    }

    cuda_op1!(
        GreedyLogprob,
        "lmgen-greedy-logprob",
        "greedy_logprob",
        |_op, s, l| {
            let dev = s.device();
            let out = match &s.slice {
                CudaStorageSlice::F32(src) => launch(src, l, dev)?,
                CudaStorageSlice::F16(src) => launch(src, l, dev)?,
                CudaStorageSlice::BF16(src) => launch(src, l, dev)?,
                _ => {
                    return Err(crate::cuda::cuda_only(
                        "greedy_logprob (f32, f16 or bf16 logits)",
                    ))
                }
            };
            let rows = l.shape().dims2()?.0;
            Ok(crate::cuda::output(
                CudaStorageSlice::F32(out),
                dev,
                Shape::from((rows, 2)),
            ))
        }
    );
}
