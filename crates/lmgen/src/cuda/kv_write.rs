//! One decode token's keys or values written into a cache buffer at slots held in device memory:
//! what `buffer.slice_set(new, 2, len)` does, with `len` read by the kernel instead of baked into
//! the launch, so that a captured decode graph ([`super::graph`]) appends at a new slot on every
//! replay.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Writes `new` `[b, nkv, 1, d]` into `buffer` `[b, nkv, cap, d]` (both contiguous, same dtype:
/// f32, f16 or bf16) at slot `slots[row]` (`[b]` u32) of each row, in place. Slots at or past
/// `cap` are skipped (the caller checks them on the host first).
pub fn kv_write(buffer: &Tensor, new: &Tensor, slots: &Tensor) -> Result<()> {
    let (b, nkv, _, d) = buffer.dims4()?;
    let fits = new.dims4()? == (b, nkv, 1, d)
        && slots.dims1()? == b
        && slots.dtype() == candle_core::DType::U32
        && new.dtype() == buffer.dtype()
        && buffer.is_contiguous()
        && new.is_contiguous()
        && super::applies(buffer);
    if !fits {
        return Err(Error::unsupported(format!(
            "kv_write takes a contiguous CUDA f32/f16/bf16 buffer [b, nkv, cap, d] and a token \
             [b, nkv, 1, d] of its dtype with u32 slots [b]; got {:?} {:?}, {:?} {:?}, slots {:?} {:?}",
            buffer.dims(),
            buffer.dtype(),
            new.dims(),
            new.dtype(),
            slots.dims(),
            slots.dtype()
        )));
    }
    imp::run(buffer, new, slots)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &Tensor, _: &Tensor, _: &Tensor) -> Result<()> {
        Err(Error::unsupported(
            "kv_write needs a build with the `cuda` feature",
        ))
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::*;
    use crate::cuda::launch::Launch;

    pub fn run(buffer: &Tensor, new: &Tensor, slots: &Tensor) -> Result<()> {
        Ok(buffer.inplace_op3(new, slots, &KvWrite)?)
    }

    struct KvWrite;

    fn launch<T: DeviceRepr + WithDType>(
        _: &KvWrite,
        dst: &mut CudaSlice<T>,
        ld: &Layout,
        src: &CudaSlice<T>,
        ls: &Layout,
        slots: &CudaView<'_, u32>,
        dev: &CudaDevice,
    ) -> candle_core::Result<()> {
        let [b, nkv, cap, d] = <[usize; 4]>::try_from(ld.dims())
            .map_err(|_| crate::cuda::cuda_only("kv_write (a buffer of rank 4)"))?;
        let dst = dst.slice_mut(ld.start_offset()..);
        let src = src.slice(ls.start_offset()..);
        let n = b * nkv * d;
        let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_kv_write")?;
        let cfg = crate::cuda::elementwise(n);
        let ints = [b, nkv, cap, d].map(|n| n as i32);
        let mut bld = Launch::new(&stream, &func);
        bld.arg(&src).arg(&dst).arg(slots);
        for n in &ints {
            bld.arg(n);
        }
        bld.dependent();
        unsafe { bld.launch(cfg) }.w()?;
        Ok(())
    }

    cuda_write_op3!(KvWrite, "lmgen-kv-write", "kv_write", launch);
}
