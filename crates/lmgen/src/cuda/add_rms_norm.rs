//! Residual add fused with the RMSNorm that follows it (HF `LlamaDecoderLayer`:
//! `hidden = residual + attn_out; hidden = post_attention_layernorm(hidden)`).

use candle_core::Tensor;

use crate::error::Result;

/// `(x + h, rms_norm(x + h) * w)` for `x`, `h` `[.., dim]` and `w` `[dim]`, in one launch; the sum
/// is rounded to the dtype before the norm reads it, as candle's `add` then `rms_norm` do.
/// `None` where the kernel does not apply (see the [module](super) docs).
pub fn add_rms_norm(
    x: &Tensor,
    h: &Tensor,
    w: &Tensor,
    eps: f32,
) -> Result<Option<(Tensor, Tensor)>> {
    if !super::applies(x)
        || h.dtype() != x.dtype()
        || w.dtype() != x.dtype()
        || h.dims() != x.dims()
        || !x.is_contiguous()
        || !h.is_contiguous()
        || !w.is_contiguous()
    {
        return Ok(None);
    }
    imp::run(x, h, w, eps)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &Tensor, _: &Tensor, _: &Tensor, _: f32) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{Map3, WrapErr};
    use candle_core::{CudaDevice, Layout, Shape, WithDType};

    use super::*;
    use crate::cuda::launch::Launch;

    pub fn run(x: &Tensor, h: &Tensor, w: &Tensor, eps: f32) -> Result<Option<(Tensor, Tensor)>> {
        let both = x.apply_op3_no_bwd(h, w, &AddRmsNorm { eps })?; // [2, .., dim]
        Ok(Some((both.get(0)?, both.get(1)?)))
    }

    struct AddRmsNorm {
        eps: f32,
    }

    /// The fewest rows that take the warp-a-row kernel (`add_rms_norm_rows`).
    const ROWS_MIN: usize = 128;

    impl Map3 for AddRmsNorm {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            lx: &Layout,
            h: &CudaSlice<T>,
            lh: &Layout,
            w: &CudaSlice<T>,
            lw: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (x, h, w) = (part(x, lx)?, part(h, lh)?, part(w, lw)?);
            let el = lx.shape().elem_count();
            let dim = lx.shape().dims().last().copied().unwrap_or(1);
            let rows = el / dim.max(1);
            let out = unsafe { dev.alloc::<T>(2 * el)? };
            // 16-byte chunks of a row; every input's first element on a chunk boundary.
            let v = 16 / std::mem::size_of::<T>();
            let aligned = [lx, lh, lw].iter().all(|l| l.start_offset() % v == 0);
            let per_lane = (dim / v).div_ceil(32);
            let (name, cfg) = match rows >= ROWS_MIN && dim % v == 0 && aligned && per_lane <= 16 {
                // A prompt's rows: a warp each, eight a block.
                true => (
                    if per_lane <= 4 {
                        "lmgen_add_rms_norm_rows4"
                    } else {
                        "lmgen_add_rms_norm_rows16"
                    },
                    LaunchConfig {
                        grid_dim: (rows.div_ceil(8) as u32, 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    },
                ),
                // A decode step's few rows: a block each.
                false => (
                    "lmgen_add_rms_norm",
                    LaunchConfig {
                        grid_dim: (rows as u32, 1, 1),
                        block_dim: (dim.next_power_of_two().clamp(32, 1024) as u32, 1, 1),
                        shared_mem_bytes: 0,
                    },
                ),
            };
            let (stream, func) = crate::cuda::func::<T>(dev, name)?;
            let mut b = Launch::new(&stream, &func);
            b.arg(&x).arg(&h).arg(&w).arg(&out);
            let (rows, dim) = (rows as i32, dim as i32);
            b.arg(&rows).arg(&dim).arg(&self.eps);
            b.dependent();
            unsafe { b.launch(cfg) }.w()?;
            Ok(out)
        }
    }

    /// The elements of a contiguous input.
    fn part<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> candle_core::Result<CudaView<'a, T>> {
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(s.slice(a..b)),
            None => Err(crate::cuda::cuda_only("add_rms_norm (contiguous inputs)")),
        }
    }

    // [2, rows, dim]: the sum, then the normed sum.
    cuda_op3!(
        AddRmsNorm,
        "lmgen-add-rms-norm",
        "add_rms_norm",
        |_op, lx| {
            let mut dims = vec![2];
            dims.extend_from_slice(lx.shape().dims());
            Shape::from(dims)
        }
    );
}
