//! Host values written into a device buffer that stays where it is: the inputs of a captured
//! CUDA graph (its token ids, positions and cache slots), which every replay reads at the
//! addresses the capture saw.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Writes `host` over the first `host.len()` elements of `buf`, a contiguous u32 tensor, in
/// place (before a step, never while capturing). Works on any device.
pub(crate) fn write_u32(buf: &Tensor, host: &[u32]) -> Result<()> {
    if buf.dtype() != DType::U32 || !buf.is_contiguous() || host.len() > buf.elem_count() {
        return Err(Error::input(format!(
            "an upload of {} u32 values needs a contiguous u32 buffer of at least that many \
             elements, got {:?} {:?}",
            host.len(),
            buf.dtype(),
            buf.dims()
        )));
    }
    Ok(buf.inplace_op1(&Upload(host))?)
}

struct Upload<'a>(&'a [u32]);

impl candle_core::InplaceOp1 for Upload<'_> {
    fn name(&self) -> &'static str {
        "lmgen-upload"
    }

    fn cpu_fwd(
        &self,
        s: &mut candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        match s {
            candle_core::CpuStorage::U32(data) => {
                let start = l.start_offset();
                data[start..start + self.0.len()].copy_from_slice(self.0);
                Ok(())
            }
            _ => Err(candle_core::Error::Msg("upload takes a u32 tensor".into())),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &mut candle_core::CudaStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use candle_core::cuda_backend::WrapErr;
        if self.0.is_empty() {
            return Ok(());
        }
        let stream = s.device.cuda_stream();
        let start = l.start_offset();
        let dst = s.as_cuda_slice_mut::<u32>()?;
        let mut view = dst.slice_mut(start..start + self.0.len());
        stream.memcpy_htod(self.0, &mut view).w()
    }
}
