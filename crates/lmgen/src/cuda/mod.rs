//! lmgen's own CUDA kernels for decode (`kernels/fused.cu`): each replaces a sequence of candle
//! ops, one launch each, by one launch.
//!
//! - [`add_rms_norm`]: the residual add and the next RMSNorm (2 launches -> 1);
//! - [`swiglu`]: `silu(gate) * up` over the fused gate/up projection (2 -> 1);
//! - [`decode_attention`]: one query per head over the cached keys, grouped-query heads
//!   (`q k^T`, scale, softmax with its casts, `p v`: 6 -> 1), long caches split across blocks
//!   and combined in one more launch; [`decode_attention_at`] reads the number of keys from
//!   device memory;
//! - [`gemv`]: a linear layer's product for one activation row (decode; built for up to four),
//!   streaming the weights, the bias added in the same launch (cuBLAS's kernels, then the bias
//!   add);
//! - [`DeviceQ8`]: Q8_0 weights on the GPU (quants and scales split at load), their product for
//!   one activation row in one launch;
//! - [`gemv_swiglu`]: the same product over a fused gate/up weight with SwiGLU on its output
//!   (the product and [`swiglu`], 2 -> 1);
//! - [`kv_write`]: a decode token's keys or values written at a slot held in device memory;
//! - [`rope_kv_write`]: a decode token from the fused q/k/v projection into the cache, its
//!   queries and keys normed per head and rotated on the way (up to 6 -> 1);
//! - [`paged_decode_attention`]: the paged engine's decode tokens, written into the KV store and
//!   attending over their slots in place (a gather and ~10 launches per sequence -> 2 per layer).
//!
//! - [`flash_attention`] (`kernels/flash.cu`): causal attention over a prompt's queries without
//!   materialising the scores (sliding windows, softcapping, sinks, grouped-query heads);
//!   [`paged_flash_attention`] the same over the paged store's slots for a packed step with
//!   prompt chunks, every new token's keys and values written at its slot first.
//!
//! - [`decode_layer`] (`kernels/decode_layer.cu`): a whole decoder layer of a batch-1 decode
//!   step of Llama's shape in one launch, its phases separated by grid-wide barriers (~9 -> 1).
//!
//! - [`greedy_logprob`]: each row's greedy id and its log-probability from the raw logits, so
//!   that greedy rows read back two numbers instead of the row (the engine, `generate()`).
//!
//! [`offload`] keeps the offloaded cache's keys and values in page-locked host memory and copies
//! each layer's past to the device on a second stream while the layer before it runs.
//!
//! The decode kernels are launched as programmatic dependents of the kernel before them on
//! Hopper and later ([`launch`]), so each starts while its predecessor drains.
//!
//! [`graph`] captures a whole decode step as one CUDA graph and replays it.
//!
//! Each returns `Ok(None)` where it does not apply (a CPU tensor, a dtype other than f32, f16 or
//! bf16, a layout it does not take, or a build without the `cuda` feature): the caller then runs
//! the candle ops. [`self_test`] checks each against those ops on a GPU; [`kernel_bench`] times
//! the product and the attention beside what they replace.

/// candle's `CustomOp3` for an op of this module that runs on CUDA only, through its `Map3`:
/// `$name` is candle's name for it, `$what` names it in the CPU error, and `$shape` (of the op
/// `$op` and the first operand's layout `$layout`) is the output's shape.
#[cfg(feature = "cuda")]
macro_rules! cuda_op3 {
    ($ty:ty, $name:literal, $what:literal, |$op:ident, $layout:ident| $shape:expr) => {
        impl candle_core::CustomOp3 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                Err($crate::cuda::cuda_only($what))
            }

            fn cuda_fwd(
                &self,
                a: &candle_core::CudaStorage,
                la: &candle_core::Layout,
                b: &candle_core::CudaStorage,
                lb: &candle_core::Layout,
                c: &candle_core::CudaStorage,
                lc: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
                use candle_core::backend::BackendStorage;
                use candle_core::cuda_backend::Map3;
                let dev = a.device();
                let slice = self.map(&a.slice, la, &b.slice, lb, &c.slice, lc, dev)?;
                let ($op, $layout) = (self, la);
                Ok($crate::cuda::output(slice, dev, $shape))
            }
        }
    };
}

/// candle's `CustomOp1` for an op of this module that runs on CUDA only: `$name` is candle's name
/// for it, `$what` names it in the CPU error, and `$fwd` (of the op `$op`, the operand's storage
/// `$s` and layout `$l`) is its CUDA forward, `(storage, shape)`.
/// With `launch` in place of `$fwd`: the op's generic `launch(slice, layout, device) ->
/// (slice, shape)` on an f32, f16 or bf16 operand.
#[cfg(feature = "cuda")]
macro_rules! cuda_op1 {
    ($ty:ty, $name:literal, $what:literal, launch) => {
        cuda_op1!($ty, $name, $what, |op, x, l| {
            use candle_core::backend::BackendStorage;
            use candle_core::cuda_backend::CudaStorageSlice;
            let dev = x.device();
            let (slice, shape) = match &x.slice {
                CudaStorageSlice::F32(s) => {
                    let (out, shape) = op.launch(s, l, dev)?;
                    (CudaStorageSlice::F32(out), shape)
                }
                CudaStorageSlice::F16(s) => {
                    let (out, shape) = op.launch(s, l, dev)?;
                    (CudaStorageSlice::F16(out), shape)
                }
                CudaStorageSlice::BF16(s) => {
                    let (out, shape) = op.launch(s, l, dev)?;
                    (CudaStorageSlice::BF16(out), shape)
                }
                _ => {
                    return Err($crate::cuda::cuda_only(concat!(
                        $what,
                        " (f32, f16 or bf16)"
                    )))
                }
            };
            Ok($crate::cuda::output(slice, dev, shape))
        });
    };
    ($ty:ty, $name:literal, $what:literal, |$op:ident, $s:ident, $l:ident| $fwd:expr) => {
        impl candle_core::CustomOp1 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                Err($crate::cuda::cuda_only($what))
            }

            fn cuda_fwd(
                &self,
                $s: &candle_core::CudaStorage,
                $l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
                let $op = self;
                $fwd
            }
        }
    };
}

/// candle's `InplaceOp3` for a write of this module that runs on CUDA only: the second operand's
/// rows into the first (of one dtype: f32, f16 or bf16) at places the third (u32) holds, by
/// `$write(op, dst, dst_layout, src, src_layout, index, device)`; `$what` names it in errors.
#[cfg(feature = "cuda")]
macro_rules! cuda_write_op3 {
    ($ty:ty, $name:literal, $what:literal, $write:ident) => {
        impl candle_core::InplaceOp3 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                _: &mut candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<()> {
                Err($crate::cuda::cuda_only($what))
            }

            fn cuda_fwd(
                &self,
                dst: &mut candle_core::CudaStorage,
                ld: &candle_core::Layout,
                src: &candle_core::CudaStorage,
                ls: &candle_core::Layout,
                index: &candle_core::CudaStorage,
                li: &candle_core::Layout,
            ) -> candle_core::Result<()> {
                use candle_core::cuda_backend::CudaStorageSlice as S;
                let dev = dst.device.clone();
                let index = $crate::cuda::view_of::<u32>(index, li)?;
                match (&mut dst.slice, &src.slice) {
                    (S::F32(d), S::F32(s)) => $write(self, d, ld, s, ls, &index, &dev),
                    (S::BF16(d), S::BF16(s)) => $write(self, d, ld, s, ls, &index, &dev),
                    (S::F16(d), S::F16(s)) => $write(self, d, ld, s, ls, &index, &dev),
                    _ => Err($crate::cuda::cuda_only(concat!(
                        $what,
                        " (a destination and source of one dtype: f32, f16 or bf16)"
                    ))),
                }
            }
        }
    };
}

mod add_rms_norm;
mod decode_attention;
mod decode_layer;
mod flash_attention;
mod gemv;
mod gemv_q8;
pub(crate) mod graph;
mod greedy;
pub mod kernel_bench;
mod kv_write;
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod launch;
pub(crate) mod offload;
mod paged_attention;
mod paged_flash;
mod qkv_heads;
mod rope_kv_write;
pub mod self_test;
mod swiglu;
pub(crate) mod upload;

pub use add_rms_norm::add_rms_norm;
pub use decode_attention::{
    decode_attention, decode_attention_at, set_grouped, Grouped, GROUPED_MIN_ROWS,
    MAX_KEYS as DECODE_MAX_KEYS,
};
pub use decode_layer::{
    barriers as layer_barriers, decode_layer, layer_applies, layer_mode, layer_wanted,
    set_layer_mode, LayerMode, LayerStep, LayerWeights,
};
pub use flash_attention::{flash_applies, flash_attention, set_flash_mma};
pub use gemv::{gemv, gemv_swiglu, set_max_rows as set_gemv_max_rows, MAX_ROWS as GEMV_MAX_ROWS};
pub use gemv_q8::{DeviceQ8, MAX_ROWS as Q8_MAX_ROWS};
pub use greedy::greedy_logprob;
pub use kv_write::kv_write;
pub use paged_attention::{paged_decode_attention, PagedIndex, MAX_KEYS as PAGED_DECODE_MAX_KEYS};
pub use paged_flash::{paged_flash_attention, PagedStep};
pub use qkv_heads::qkv_heads;
pub use rope_kv_write::{rope_kv_write, FusedQkv};
pub use swiglu::swiglu;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use candle_core::{DType, Tensor};

/// Whether the fast paths are on: on unless `LMGEN_CUDA_KERNELS=candle` is set or
/// [`set_enabled`] turns them off. A GPU run showed transformers' tokens on every golden case
/// with them, and measured their speed (BENCHMARKS.md); `candle` keeps candle's ops only, to rule
/// them out.
fn flag() -> &'static AtomicBool {
    static ENABLED: OnceLock<AtomicBool> = OnceLock::new();
    ENABLED.get_or_init(|| {
        AtomicBool::new(std::env::var("LMGEN_CUDA_KERNELS").map_or(true, |v| v != "candle"))
    })
}

/// Turns lmgen's CUDA fast paths on (or off) for the whole process, so one build can be
/// measured both ways on the same machine (`generate_speed --fused` / `--no-fused`): the fused
/// kernels (off: every op is candle's), and for devices opened afterwards, the event tracking
/// that [`crate::device::parse`] turns off.
pub fn set_enabled(on: bool) {
    flag().store(on, Ordering::Relaxed);
}

/// Whether lmgen's CUDA fast paths are on ([`set_enabled`], `LMGEN_CUDA_KERNELS=candle` turns them off).
pub fn enabled() -> bool {
    flag().load(Ordering::Relaxed)
}

/// Whether the launches that fuse across a layer's steps are on ([`gemv_swiglu`],
/// [`rope_kv_write`]): on unless `LMGEN_CUDA_FUSE_STEPS=0` or [`set_fuse_steps`]. On by default
/// since a GPU run (H100, 2026-12-06) passed their kernel checks and f32 conformance on every old
/// and golden-arch model with them, and took batch-1 bf16 decode 1.04-1.11x faster
/// (BENCHMARKS.md).
fn fuse_flag() -> &'static AtomicBool {
    static ON: OnceLock<AtomicBool> = OnceLock::new();
    ON.get_or_init(|| {
        AtomicBool::new(std::env::var("LMGEN_CUDA_FUSE_STEPS").map_or(true, |v| v != "0"))
    })
}

fn fuse_steps() -> bool {
    fuse_flag().load(Ordering::Relaxed)
}

/// Turns the step-fusing launches ([`gemv_swiglu`], [`rope_kv_write`]) on or off for the whole
/// process; returns the previous setting.
pub fn set_fuse_steps(on: bool) -> bool {
    fuse_flag().swap(on, Ordering::Relaxed)
}

/// Whether `t` is a CUDA tensor of a dtype the kernels are built for, and they are enabled.
fn applies(t: &Tensor) -> bool {
    enabled() && t.device().is_cuda() && matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16)
}

/// One of lmgen's kernel sources, compiled to PTX by `build.rs`.
#[cfg(feature = "cuda")]
#[derive(Debug, Clone, Copy)]
enum Module {
    /// `kernels/fused.cu`: the decode kernels.
    Fused,
    /// `kernels/flash.cu`: attention over many queries.
    Flash,
    /// `kernels/decode_layer.cu`: a whole decoder layer of a batch-1 decode step.
    Layer,
}

#[cfg(feature = "cuda")]
impl Module {
    /// The PTX and the name candle caches the module under.
    fn ptx(self) -> (&'static str, &'static str) {
        match self {
            Self::Fused => (
                include_str!(concat!(env!("OUT_DIR"), "/fused.ptx")),
                "lmgen_fused",
            ),
            Self::Flash => (
                include_str!(concat!(env!("OUT_DIR"), "/flash.ptx")),
                "lmgen_flash",
            ),
            Self::Layer => (
                include_str!(concat!(env!("OUT_DIR"), "/decode_layer.ptx")),
                "lmgen_decode_layer",
            ),
        }
    }
}

/// The error for the CPU path of a CUDA-only op (never taken: callers check [`applies`]).
#[cfg(feature = "cuda")]
fn cuda_only(name: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{name} runs on CUDA only"))
}

/// A launch of 256-thread blocks over `n` elements (the kernels loop past 65535 blocks).
#[cfg(feature = "cuda")]
fn elementwise(n: usize) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A kernel's output as candle's storage, with its `shape`.
#[cfg(feature = "cuda")]
fn output(
    slice: candle_core::cuda_backend::CudaStorageSlice,
    dev: &candle_core::CudaDevice,
    shape: candle_core::Shape,
) -> (candle_core::CudaStorage, candle_core::Shape) {
    let storage = candle_core::CudaStorage {
        slice,
        device: dev.clone(),
    };
    (storage, shape)
}

/// A `Map1` op's output over `s` (laid out as `l`), of `shape`: the forward of a
/// [`cuda_op1`] op whose output has the operand's dtype.
#[cfg(feature = "cuda")]
fn mapped<M: candle_core::cuda_backend::Map1>(
    op: &M,
    s: &candle_core::CudaStorage,
    l: &candle_core::Layout,
    shape: candle_core::Shape,
) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
    use candle_core::backend::BackendStorage;
    let dev = s.device();
    let slice = op.map(&s.slice, dev, l)?;
    Ok(output(slice, dev, shape))
}

/// `storage`'s data as `T` from `layout`'s start.
#[cfg(feature = "cuda")]
fn view_of<'a, T: candle_core::cuda_backend::CudaDType>(
    storage: &'a candle_core::CudaStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    Ok(storage.as_cuda_slice::<T>()?.slice(layout.start_offset()..))
}

/// A tensor's storage, read-locked while a launch uses it (a tensor a kernel takes besides a
/// custom op's operands).
#[cfg(feature = "cuda")]
struct Held<'a>(candle_core::StorageRef<'a>, &'a candle_core::Layout);

#[cfg(feature = "cuda")]
fn hold(t: &Tensor) -> Held<'_> {
    let (guard, layout) = t.storage_and_layout();
    Held(guard, layout)
}

#[cfg(feature = "cuda")]
impl Held<'_> {
    /// The tensor's data as `T` from its layout's start; an error naming `what` for a tensor
    /// that is not on the GPU.
    fn view<T: candle_core::cuda_backend::CudaDType>(
        &self,
        what: &str,
    ) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>> {
        match &*self.0 {
            candle_core::Storage::Cuda(c) => view_of(c, self.1),
            _ => Err(cuda_only(what)),
        }
    }
}

/// `shape` with its last dimension replaced by `last`.
#[cfg(feature = "cuda")]
fn with_last(shape: &candle_core::Shape, last: usize) -> candle_core::Shape {
    let mut dims = shape.dims().to_vec();
    if let Some(l) = dims.last_mut() {
        *l = last;
    }
    candle_core::Shape::from(dims)
}

/// The device's stream and a kernel it launches (`stream.launch_builder(&func)`).
#[cfg(feature = "cuda")]
type Launcher = (
    std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>,
    candle_core::cuda_backend::cudarc::driver::CudaFunction,
);

/// Loads (once) the kernel `{root}_{dtype}` of `kernels/fused.cu`.
#[cfg(feature = "cuda")]
fn func<T: candle_core::WithDType>(
    dev: &candle_core::CudaDevice,
    root: &str,
) -> candle_core::Result<Launcher> {
    func_in::<T>(dev, root, Module::Fused)
}

/// Loads (once) the kernel `{root}_{dtype}` of `module`.
#[cfg(feature = "cuda")]
fn func_in<T: candle_core::WithDType>(
    dev: &candle_core::CudaDevice,
    root: &str,
    module: Module,
) -> candle_core::Result<Launcher> {
    let name = candle_core::cuda_backend::kernel_name::<T>(root);
    let (ptx, module) = module.ptx();
    let func = dev.get_or_load_custom_func(&name, module, ptx)?;
    Ok((dev.cuda_stream(), func.into_cuda_function()))
}
