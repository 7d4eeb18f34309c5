//! A step's fused q/k/v projection into attention's heads in one launch (`kernels/fused.cu`
//! `qkv_heads`): the projection's bias added, each query and key head's RMSNorm (Qwen3's
//! `q_norm` / `k_norm`) and rotation (RoPE), and the `[b, t, heads * d] -> [b, heads, t, d]`
//! layout. It replaces a broadcast bias add, three strided copies, up to two norms and two
//! rotations of a layer's prompt (the bias add and the copies were 7.5% and 11% of the kernel
//! time of a 64 x 1024-token prefill on an H100, BENCHMARKS.md).

use candle_core::Tensor;

use super::rope_kv_write::like;
use super::FusedQkv;
use crate::error::Result;

/// Queries `[b, nh, t, d]`, keys and values `[b, nkv, t, d]` of `fused` (its `qkv` with `bias`
/// `[(nh + 2 nkv) d]` not yet added, or `None`): the values of candle's bias add, split, norms
/// and `rope`, in one launch. The three are views of one `[b, nh + 2 nkv, t, d]` buffer
/// (contiguous for `b = 1`). `None` where it does not apply (a CPU tensor, a dtype other than
/// f32 / f16 / bf16, mixed dtypes, a layout other than the documented ones, a head over 512
/// features, the step fusions off: see [`super::set_fuse_steps`]; `LMGEN_CUDA_QKV_HEADS=0`
/// turns this launch alone off, for measuring it).
pub fn qkv_heads(
    fused: &FusedQkv<'_>,
    bias: Option<&Tensor>,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let (nh, nkv, d) = (fused.num_heads, fused.num_kv_heads, fused.head_dim);
    let qkv = fused.qkv;
    if !super::applies(qkv) || !super::fuse_steps() || !enabled() {
        return Ok(None);
    }
    let Some((b, t)) = fused.fitting(512).filter(|&(_, t)| t > 0) else {
        return Ok(None);
    };
    let fits = b * t * (nh + 2 * nkv) <= i32::MAX as usize
        && bias.is_none_or(|x| x.dims() == [(nh + 2 * nkv) * d] && like(qkv, x));
    if !fits {
        return Ok(None);
    }
    let heads = imp::run(fused, bias)?; // [b, nh + 2 nkv, t, d]
    Ok(Some((
        heads.narrow(1, 0, nh)?,
        heads.narrow(1, nh, nkv)?,
        heads.narrow(1, nh + nkv, nkv)?,
    )))
}

/// Off with `LMGEN_CUDA_QKV_HEADS=0` (read once).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LMGEN_CUDA_QKV_HEADS").map_or(true, |v| v != "0"))
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &FusedQkv<'_>, _: Option<&Tensor>) -> Result<Tensor> {
        Err(crate::error::Error::unsupported(
            "qkv_heads needs a build with the `cuda` feature",
        ))
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaDevice, Layout, Shape, WithDType};

    use super::*;
    use crate::cuda::hold;

    pub fn run(fused: &FusedQkv<'_>, bias: Option<&Tensor>) -> Result<Tensor> {
        let op = QkvHeads {
            heads: (fused.num_heads, fused.num_kv_heads, fused.head_dim),
            bias: bias.cloned(),
            rope: fused.rope.map(|(c, s)| (c.clone(), s.clone())),
            norms: fused.norms.map(|(q, k, eps)| (q.clone(), k.clone(), eps)),
        };
        Ok(fused.qkv.apply_op1_no_bwd(&op)?)
    }

    /// The tensors the launch reads besides `qkv`, held by the op.
    struct QkvHeads {
        heads: (usize, usize, usize),
        bias: Option<Tensor>,
        rope: Option<(Tensor, Tensor)>,
        norms: Option<(Tensor, Tensor, f32)>,
    }

    /// For errors: what the launch needs of the tensors it holds.
    const WHAT: &str = "qkv_heads (CUDA tensors)";

    /// Warps a block (a head of a token each, at a time).
    const WARPS: usize = 8;

    impl QkvHeads {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            qkv: &CudaSlice<T>,
            lqkv: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<(CudaSlice<T>, Shape)> {
            let (nh, nkv, d) = self.heads;
            let (b, t) = (lqkv.dims()[0], lqkv.dims()[1]);
            let heads = nh + 2 * nkv;
            let qkv = qkv.slice(lqkv.start_offset()..);
            let out = unsafe { dev.alloc::<T>(b * heads * t * d)? };
            let bias = self.bias.as_ref().map(hold);
            let rope = self.rope.as_ref().map(|(c, s)| (hold(c), hold(s)));
            let norms = self
                .norms
                .as_ref()
                .map(|(q, k, eps)| (hold(q), hold(k), *eps));
            let r = self.rope.as_ref().map_or(0, |(c, _)| 2 * c.dims()[2]);
            let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_qkv_heads")?;
            // A warp for each (token, head) item.
            let items = b * t * heads;
            let cfg = LaunchConfig {
                grid_dim: (
                    items.div_ceil(WARPS).clamp(1, i32::MAX as usize) as u32,
                    1,
                    1,
                ),
                block_dim: ((32 * WARPS) as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let bias = match &bias {
                Some(x) => Some(x.view::<T>(WHAT)?),
                None => None,
            };
            let rope = match &rope {
                Some((c, s)) => Some((c.view::<T>(WHAT)?, s.view::<T>(WHAT)?)),
                None => None,
            };
            let eps = norms.as_ref().map_or(0.0, |n| n.2);
            let norms = match &norms {
                Some((q, k, _)) => Some((q.view::<T>(WHAT)?, k.view::<T>(WHAT)?)),
                None => None,
            };
            let ints = [b * t, t, nh, nkv, d, r].map(|n| n as i32);
            let mut bld = stream.launch_builder(&func);
            bld.arg(&qkv);
            match &bias {
                Some(x) => bld.arg(x),
                None => bld.arg(&0u64), // null pointer: no bias
            };
            match &rope {
                Some((c, s)) => bld.arg(c).arg(s),
                None => bld.arg(&0u64).arg(&0u64), // null pointers: no rotation
            };
            match &norms {
                Some((q, k)) => bld.arg(q).arg(k),
                None => bld.arg(&0u64).arg(&0u64), // null pointers: no norm
            };
            bld.arg(&eps).arg(&out);
            for n in &ints {
                bld.arg(n);
            }
            unsafe { bld.launch(cfg) }.w()?;
            Ok((out, Shape::from((b, heads, t, d))))
        }
    }

    cuda_op1!(QkvHeads, "lmgen-qkv-heads", "qkv_heads", launch);
}
