//! Reading a step's f32 results (logits) back to the host. From a GPU, the copy goes through a
//! page-locked staging buffer kept per thread and grown as needed: the driver copies pageable
//! memory through its own small bounce buffers, and the engine's 64 x 152k logits of a decode
//! step took 33-42 ms that way on the H100's host against 1 ms page-locked (BENCHMARKS.md), most
//! of a step.

use candle_core::Tensor;

use crate::error::Result;

/// Hands `f` the elements of the f32 tensor `t` (row-major, flattened) on the host: a
/// contiguous CPU tensor's own data (no copy), a GPU tensor's through the staging buffer.
pub fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    #[cfg(feature = "cuda")]
    if t.device().is_cuda() {
        return pinned::read(t, f);
    }
    let (storage, layout) = t.storage_and_layout();
    if let (candle_core::Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets())
    {
        if let Ok(data) = cpu.as_slice::<f32>() {
            return Ok(f(&data[a..b]));
        }
    }
    drop(storage);
    let host = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&host))
}

/// The elements of the f32 tensor `t` as a host vector: one copy from the CPU, one page-locked
/// transfer and one copy from a GPU.
pub fn to_host_f32(t: &Tensor) -> Result<Vec<f32>> {
    if t.device().is_cuda() {
        return with_host_f32(t, <[f32]>::to_vec);
    }
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod pinned {
    use std::cell::RefCell;
    use std::sync::Arc;

    use candle_core::cuda_backend::cudarc::driver::PinnedHostSlice;
    use candle_core::{DType, Storage, Tensor};

    use crate::error::Result;

    thread_local! {
        /// This thread's staging buffer, for the device whose context allocated it.
        static STAGING: RefCell<Option<PinnedHostSlice<f32>>> = const { RefCell::new(None) };
    }

    /// `f` over the elements of `t` (on a GPU) through the staging buffer.
    pub fn read<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        let cuda = match t.device() {
            candle_core::Device::Cuda(dev) if t.dtype() == DType::F32 => dev.clone(),
            _ => {
                let host = t.flatten_all()?.to_vec1::<f32>()?;
                return Ok(f(&host));
            }
        };
        let t = t.contiguous()?;
        let n = t.elem_count();
        let stream = cuda.cuda_stream();
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(storage) = &*storage else {
            let host = t.flatten_all()?.to_vec1::<f32>()?;
            return Ok(f(&host));
        };
        let start = layout.start_offset();
        let view = storage.as_cuda_slice::<f32>()?.slice(start..start + n);
        STAGING.with(|cell| {
            let mut staging = cell.borrow_mut();
            let fits = staging
                .as_ref()
                .is_some_and(|s| s.len() >= n && Arc::ptr_eq(s.context(), stream.context()));
            if !fits {
                // Cached (not write-combined) memory: the host reads it.
                let buf = unsafe { stream.context().alloc_pinned_with_flags::<f32>(n.max(1), 0) }
                    .map_err(candle_core::Error::wrap)?;
                *staging = Some(buf);
            }
            let buf = staging.as_mut().expect("allocated above");
            // Exactly `n` elements: the copy's size is its destination's (a whole staging buffer
            // left larger by an earlier step would read past the logits).
            let host = &mut buf.as_mut_slice().map_err(candle_core::Error::wrap)?[..n];
            stream
                .memcpy_dtoh(&view, host)
                .map_err(candle_core::Error::wrap)?;
            // A plain slice destination: the copy is queued, not awaited.
            stream.synchronize().map_err(candle_core::Error::wrap)?;
            Ok(f(host))
        })
    }
}
