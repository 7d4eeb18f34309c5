//! The SiLU-gated product of a fused gate/up projection (HF `LlamaMLP`:
//! `act_fn(gate_proj(x)) * up_proj(x)`).

use candle_core::Tensor;

use crate::error::Result;

/// `[.., 2 * inter] -> [.., inter]`: `silu(gate) * up`, the gate's columns first, in one launch;
/// silu rounded to the dtype before the product, as candle's `silu` then `mul`. `None` where the
/// kernel does not apply (see the [module](super) docs).
pub fn swiglu(gate_up: &Tensor, inter: usize) -> Result<Option<Tensor>> {
    if !super::applies(gate_up)
        || !gate_up.is_contiguous()
        || gate_up.dims().last() != Some(&(2 * inter))
    {
        return Ok(None);
    }
    imp::run(gate_up, inter)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &Tensor, _: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{Map1, WrapErr};
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::*;
    use crate::cuda::with_last;

    pub fn run(gate_up: &Tensor, inter: usize) -> Result<Option<Tensor>> {
        Ok(Some(gate_up.apply_op1_no_bwd(&Swiglu { inter })?))
    }

    struct Swiglu {
        inter: usize,
    }

    impl Map1 for Swiglu {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            src: &CudaSlice<T>,
            dev: &CudaDevice,
            layout: &Layout,
        ) -> candle_core::Result<CudaSlice<T>> {
            let src = match layout.contiguous_offsets() {
                Some((a, b)) => src.slice(a..b),
                None => return Err(crate::cuda::cuda_only("swiglu (a contiguous input)")),
            };
            let rows = layout.shape().elem_count() / (2 * self.inter).max(1);
            let n = rows * self.inter;
            let out = unsafe { dev.alloc::<T>(n)? };
            let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_swiglu")?;
            let cfg = crate::cuda::elementwise(n);
            let mut b = stream.launch_builder(&func);
            let (rows, inter) = (rows as i32, self.inter as i32);
            b.arg(&src).arg(&out).arg(&rows).arg(&inter);
            unsafe { b.launch(cfg) }.w()?;
            Ok(out)
        }
    }

    cuda_op1!(Swiglu, "lmgen-swiglu", "swiglu", |op, s, l| {
        crate::cuda::mapped(op, s, l, with_last(l.shape(), op.inter))
    });
}
