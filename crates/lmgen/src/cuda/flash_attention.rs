//! Causal attention over many queries on the GPU without materialising the scores
//! (`kernels/flash.cu`): a prompt of a dense batch, and the prompt chunks of the paged engine's
//! packed steps. What [`crate::models::layers::attention::attend`] computes with a causal mask
//! (and a sliding window), softcapping and sinks, the softmax in f32; the scores never leave
//! shared memory, so a 32k-token prompt needs no `[b, nh, t, s]` block and no mask tensor.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::models::layers::attention::Scores;

/// Queries per block (`flash::BM`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) const BLOCK_QUERIES: usize = 64;
/// Keys per step (`flash::BN`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const BLOCK_KEYS: usize = 64;

/// Sets whether f16 and bf16 heads of 64, 96 and 128 take the tensor-core body of the flash
/// kernels (`flash2` in `flash.cu`: scores, probabilities and output in registers) for the whole
/// process; `LMGEN_CUDA_FLASH_MMA=0` turns it off at start (the shared-memory body, `flash`, then
/// runs every head). Returns the previous setting.
pub fn set_flash_mma(on: bool) -> bool {
    flash_mma().swap(on, std::sync::atomic::Ordering::Relaxed)
}

fn flash_mma() -> &'static std::sync::atomic::AtomicBool {
    static ON: std::sync::OnceLock<std::sync::atomic::AtomicBool> = std::sync::OnceLock::new();
    ON.get_or_init(|| {
        let off = std::env::var("LMGEN_CUDA_FLASH_MMA").is_ok_and(|v| v == "0");
        std::sync::atomic::AtomicBool::new(!off)
    })
}

/// Which body of the flash kernels a launch runs, and the dynamic shared memory it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) struct FlashBody {
    /// The tensor-core body (the kernels' `mma` argument).
    pub mma: bool,
    pub shared_bytes: usize,
}

impl FlashBody {
    /// For head size `d` and `elem`-byte values: the tensor-core body for 2-byte heads of 64, 96
    /// and 128 where [`set_flash_mma`] leaves it on, holding the queries, one tile of keys and one
    /// of values, each row padded by 16 bytes; otherwise the shared-memory body, holding the
    /// output, scores, running maximum and sum in f32, the queries, one tile of keys or values
    /// and the probabilities in the dtype, each row padded (halves: 8 elements so tensor-core
    /// fragments stay aligned; f32: one, against bank conflicts).
    pub fn new(d: usize, elem: usize) -> Self {
        let (bm, bn) = (BLOCK_QUERIES, BLOCK_KEYS);
        let mma = elem == 2
            && matches!(d, 64 | 96 | 128)
            && flash_mma().load(std::sync::atomic::Ordering::Relaxed);
        let shared_bytes = if mma {
            elem * (bm + 2 * bn) * (d + 8)
        } else {
            let (kv, f) = if elem == 4 { (1, 1) } else { (8, 4) };
            4 * (bm * (d + f) + bm * (bn + f) + 4 * bm)
                + elem * (bm * (d + kv) + bn * (d + kv) + bm * (bn + kv))
        };
        Self { mma, shared_bytes }
    }
}

/// Whether head size `d` in `dtype` fits the kernel: f16 and bf16 multiply 16x16 tiles on tensor
/// cores, so their heads are a multiple of 16; f32 takes any size. The shared memory is checked
/// against the device at launch.
pub(super) fn head_fits(d: usize, dtype: DType) -> bool {
    d > 0 && (dtype == DType::F32 || d.is_multiple_of(16))
}

/// What the flash kernels take of a layer's scores and window, as their launch arguments.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) struct FlashScores {
    /// 0: no sliding window.
    pub window: i32,
    pub scale: f32,
    /// 0: no softcap.
    pub softcap: f32,
    /// `[nh]` f32 sink logits.
    pub sinks: Option<Tensor>,
}

impl FlashScores {
    /// `None` where the kernels do not take them: a window of 0 or past `i32`, sinks that are
    /// not `[nh]` f32 on `q`'s device.
    pub fn new(window: Option<usize>, scores: Scores<'_>, nh: usize, q: &Tensor) -> Option<Self> {
        let fits = window.is_none_or(|w| w > 0 && w <= i32::MAX as usize)
            && scores.sinks.is_none_or(|x| {
                x.dtype() == DType::F32
                    && x.elem_count() == nh
                    && x.device().same_device(q.device())
            });
        fits.then(|| Self {
            window: window.map_or(0, |w| w as i32),
            scale: scores.scale as f32,
            softcap: scores.softcap.map_or(0.0, |c| c as f32),
            sinks: scores.sinks.cloned(),
        })
    }
}

/// Whether [`flash_attention`] runs a prompt of a model with heads of `head_dim` in `dtype` on
/// `device` (a memory estimate then counts no scores).
pub fn flash_applies(device: &candle_core::Device, dtype: DType, head_dim: usize) -> bool {
    let on_gpu = super::enabled()
        && device.is_cuda()
        && matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && head_fits(head_dim, dtype);
    #[cfg(feature = "cuda")]
    let on_gpu = on_gpu
        && device.as_cuda_device().is_ok_and(|dev| {
            imp::max_shared(dev).is_ok_and(|max| {
                FlashBody::new(head_dim, dtype.size_in_bytes()).shared_bytes <= max
            })
        });
    on_gpu
}

/// `softmax(q k^T * scale (+ softcap), causal (+ window) (+ sinks)) v`: `q` `[b, nh, t, d]`,
/// `k`, `v` `[b, nkv, s, d]` (any strides with the last dim contiguous: the cache's views), the
/// query `i` at position `s - t + i` seeing the keys at positions up to its own and, with a
/// `window`, fewer than `window` behind it -> `[b, nh, t, d]`, a view of `[b, t, nh, d]` memory
/// (the output projection's layout: transposed back, it is contiguous). `None` where the kernel
/// does not apply (not CUDA or the fast paths off, another dtype, a head size it does not take,
/// more shared memory than the device has): the caller runs the candle ops.
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Option<usize>,
    scores: Scores<'_>,
) -> Result<Option<Tensor>> {
    let (Ok((b, nh, t, d)), Ok((kb, nkv, s, kd))) = (q.dims4(), k.dims4()) else {
        return Ok(None);
    };
    let fits = super::applies(q)
        && kb == b
        && kd == d
        && t >= 1
        && s >= t
        && s <= i32::MAX as usize
        && nkv > 0
        && nh % nkv == 0
        && head_fits(d, q.dtype())
        && v.dims() == k.dims()
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype()
        && k.stride()[3] == 1
        && v.stride()[3] == 1;
    match FlashScores::new(window, scores, nh, q) {
        Some(scores) if fits => imp::run(q, k, v, scores),
        _ => Ok(None),
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &Tensor, _: &Tensor, _: &Tensor, _: FlashScores) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
pub(super) mod imp {
    use candle_core::cuda_backend::cudarc::driver::sys::{
        CUdevice_attribute_enum, CUfunction_attribute_enum,
    };
    use candle_core::cuda_backend::cudarc::driver::{
        CudaFunction, CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{Map3, WrapErr};
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::*;

    pub fn run(q: &Tensor, k: &Tensor, v: &Tensor, scores: FlashScores) -> Result<Option<Tensor>> {
        let d = q.dim(3)?;
        let body = FlashBody::new(d, q.dtype().size_in_bytes());
        let Some(dev) = q.device().as_cuda_device().ok() else {
            return Ok(None);
        };
        if body.shared_bytes > max_shared(dev)? {
            return Ok(None);
        }
        let op = FlashAttention { scores, body };
        // Each head's rows contiguous, whatever the strides of the batch and the heads.
        let q = match q.stride()[2..] == [d, 1] {
            true => q.clone(),
            false => q.contiguous()?,
        };
        // [b, t, nh, d] -> [b, nh, t, d]: a view whose transpose back is contiguous.
        Ok(Some(q.apply_op3_no_bwd(k, v, &op)?.transpose(1, 2)?))
    }

    /// The most dynamic shared memory one block may opt into on `dev`.
    pub(in crate::cuda) fn max_shared(dev: &CudaDevice) -> Result<usize> {
        let attr = CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
        let n = dev.cuda_stream().context().attribute(attr).w()?;
        Ok(n.max(0) as usize)
    }

    /// Lets `func` launch with `bytes` of dynamic shared memory (past the 48 KiB default).
    pub(in crate::cuda) fn allow_shared(func: &CudaFunction, bytes: usize) -> Result<()> {
        let attr = CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        func.set_attribute(attr, bytes as i32).w()?;
        Ok(())
    }

    /// The sinks' data held for a launch, or `None` without sinks (the kernel then gets the null
    /// pointer).
    pub(in crate::cuda) fn hold_sinks(scores: &FlashScores) -> Option<crate::cuda::Held<'_>> {
        scores.sinks.as_ref().map(crate::cuda::hold)
    }

    struct FlashAttention {
        scores: FlashScores,
        body: FlashBody,
    }

    impl Map3 for FlashAttention {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            q: &CudaSlice<T>,
            lq: &Layout,
            k: &CudaSlice<T>,
            lk: &Layout,
            v: &CudaSlice<T>,
            lv: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let q = q.slice(lq.start_offset()..);
            let (k, v) = (k.slice(lk.start_offset()..), v.slice(lv.start_offset()..));
            let [b, nh, t, d] = <[usize; 4]>::try_from(lq.dims())
                .map_err(|_| crate::cuda::cuda_only("flash_attention (q of rank 4)"))?;
            let (nkv, s) = (lk.dims()[1], lk.dims()[2]);
            let out = unsafe { dev.alloc::<T>(b * nh * t * d)? };
            let (stream, func) = crate::cuda::func_in::<T>(
                dev,
                "lmgen_flash_attention",
                crate::cuda::Module::Flash,
            )?;
            let bytes = self.body.shared_bytes;
            allow_shared(&func, bytes).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let cfg = LaunchConfig {
                grid_dim: (t.div_ceil(BLOCK_QUERIES) as u32, nh as u32, b as u32),
                block_dim: (128, 1, 1),
                shared_mem_bytes: bytes as u32,
            };
            let (qs, ks, vs) = (lq.stride(), lk.stride(), lv.stride());
            let ints = [nh, nkv, t, s, d].map(|n| n as i32);
            let strides =
                [qs[0], qs[1], ks[0], ks[1], ks[2], vs[0], vs[1], vs[2]].map(|n| n as i64);
            let sinks = hold_sinks(&self.scores);
            let sinks = match &sinks {
                Some(held) => Some(held.view::<f32>("flash_attention (CUDA sinks)")?),
                None => None,
            };
            let mut bld = stream.launch_builder(&func);
            bld.arg(&q).arg(&k).arg(&v).arg(&out);
            match &sinks {
                Some(s) => bld.arg(s),
                None => bld.arg(&0u64), // no sinks
            };
            for n in &ints {
                bld.arg(n);
            }
            for n in &strides {
                bld.arg(n);
            }
            let sc = &self.scores;
            let mma = i32::from(self.body.mma);
            bld.arg(&sc.window)
                .arg(&sc.scale)
                .arg(&sc.softcap)
                .arg(&mma);
            unsafe { bld.launch(cfg) }.w()?;
            Ok(out)
        }
    }

    cuda_op3!(
        FlashAttention,
        "lmgen-flash-attention",
        "flash_attention",
        |_op, lq| {
            let &[b, nh, t, d] = lq.dims() else {
                return Err(crate::cuda::cuda_only("flash_attention (q of rank 4)"));
            };
            candle_core::Shape::from((b, t, nh, d))
        }
    );
}
