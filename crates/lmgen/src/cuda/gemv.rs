//! A linear layer's product for the few activation rows of decode (`x W^T + b`, weight
//! `[out, in]`), one launch: one warp per output column streaming its weight row in 16-byte
//! loads. cuBLAS's kernels for one to four rows leave much of the copy rate unused on the
//! small matrices of a decode step (BENCHMARKS.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use candle_core::Tensor;

use crate::error::Result;

/// The most activation rows the kernel is built for (one accumulator each per lane).
pub const MAX_ROWS: usize = 4;

/// The most rows products take the kernel for ([`set_max_rows`]; `LMGEN_CUDA_GEMV=N` sets it,
/// 0 leaves every product to cuBLAS). Default 1: at 4 rows cuBLAS was faster on the H100
/// (BENCHMARKS.md).
fn max_rows() -> &'static AtomicUsize {
    static ROWS: OnceLock<AtomicUsize> = OnceLock::new();
    ROWS.get_or_init(|| {
        let rows = std::env::var("LMGEN_CUDA_GEMV")
            .ok()
            .and_then(|v| v.parse().ok());
        AtomicUsize::new(rows.unwrap_or(1).min(MAX_ROWS))
    })
}

/// Products of up to `rows` activation rows (at most [`MAX_ROWS`]) take lmgen's kernel, more
/// take cuBLAS; 0: all take cuBLAS. For measuring one against the other in one process.
/// Returns the previous setting.
pub fn set_max_rows(rows: usize) -> usize {
    max_rows().swap(rows.min(MAX_ROWS), Ordering::Relaxed)
}

/// `x [.., k] W^T (+ bias)` -> `[.., n]` for `w` `[n, k]` (contiguous) and `bias` `[n]`, in one
/// launch. Sums in f32, rounded once (after the bias). `None` where it does not apply: see the
/// [module](super) docs, more rows than [`set_max_rows`] allows, rows whose bytes are not a
/// multiple of 16, or a view not aligned to 16 bytes.
pub fn gemv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    product(x, w, bias, false)
}

/// The gated MLP's first half for one activation row `x` `[.., k]` (every leading dimension 1):
/// `silu(g) * u` -> `[.., n / 2]`, with `g`, `u` the two halves of `x W^T (+ bias)` for the
/// fused gate/up weight `w` `[n, k]` (the gate's rows first), each rounded to the dtype: the
/// values of [`gemv`] then [`super::swiglu`], in one launch that never stores `g` and `u`. `None`
/// where [`gemv`] would not apply to one row, or `n` is odd.
pub fn gemv_swiglu(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !super::fuse_steps()
        || x.elem_count() != x.dims().last().copied().unwrap_or(0)
        || w.dim(0)? % 2 != 0
    {
        return Ok(None);
    }
    product(x, w, bias, true)
}

/// [`gemv`], or with `swiglu` [`gemv_swiglu`].
fn product(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, swiglu: bool) -> Result<Option<Tensor>> {
    // Every CPU product passes here first (`Linear::forward`): out at the first check.
    if !super::applies(x) {
        return Ok(None);
    }
    let Ok((n, k)) = w.dims2() else {
        return Ok(None);
    };
    let size = x.dtype().size_in_bytes();
    let aligned = |t: &Tensor| (t.layout().start_offset() * size).is_multiple_of(16);
    let rows = x.elem_count() / k.max(1);
    let fits = k > 0
        && x.dims().last() == Some(&k)
        && (1..=max_rows().load(Ordering::Relaxed)).contains(&rows)
        && (k * size).is_multiple_of(16)
        && w.dtype() == x.dtype()
        && x.is_contiguous()
        && w.is_contiguous()
        && aligned(x)
        && aligned(w)
        && w.device().same_device(x.device())
        && bias.is_none_or(|b| {
            b.dims1().ok() == Some(n)
                && b.dtype() == x.dtype()
                && b.is_contiguous()
                && b.device().same_device(x.device())
        });
    if !fits {
        return Ok(None);
    }
    imp::run(x, w, bias, rows, n, k, swiglu)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
        _: usize,
        _: usize,
        _: usize,
        _: bool,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{CudaStorage, Map2, Map3, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, Layout, Shape, WithDType};

    use super::*;
    use crate::cuda::launch::Launch;
    use crate::cuda::with_last;

    /// Warps (output columns) per block.
    const WARPS: usize = 8;

    /// The kernel for 1..=[`MAX_ROWS`] rows (`lmgen_gemv{R}_{dtype}` in `kernels/fused.cu`).
    const ROOTS: [&str; MAX_ROWS] = ["lmgen_gemv1", "lmgen_gemv2", "lmgen_gemv3", "lmgen_gemv4"];

    pub fn run(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        rows: usize,
        n: usize,
        k: usize,
        swiglu: bool,
    ) -> Result<Option<Tensor>> {
        let op = Gemv { rows, n, k, swiglu };
        Ok(Some(match bias {
            Some(b) => x.apply_op3_no_bwd(w, b, &op)?,
            None => x.apply_op2_no_bwd(w, &op)?,
        }))
    }

    struct Gemv {
        rows: usize,
        n: usize,
        k: usize,
        /// `lmgen_gemv_swiglu`: one row, `n / 2` outputs.
        swiglu: bool,
    }

    impl Gemv {
        /// Output columns.
        fn outputs(&self) -> usize {
            if self.swiglu {
                self.n / 2
            } else {
                self.n
            }
        }

        fn launch<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            (x, lx): (&CudaSlice<T>, &Layout),
            (w, lw): (&CudaSlice<T>, &Layout),
            bias: Option<(&CudaSlice<T>, &Layout)>,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let x = x.slice(lx.start_offset()..);
            let w = w.slice(lw.start_offset()..);
            let bias = bias.map(|(b, lb)| b.slice(lb.start_offset()..));
            let outputs = self.outputs();
            let out = unsafe { dev.alloc::<T>(self.rows * outputs)? };
            let blocks = outputs.div_ceil(WARPS);
            let root = match self.swiglu {
                true => "lmgen_gemv_swiglu",
                false if self.rows == 1 && wider_waves::<T>(dev, blocks)? => "lmgen_gemv1s",
                false => ROOTS[self.rows - 1],
            };
            let (stream, func) = crate::cuda::func::<T>(dev, root)?;
            let cfg = LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (32 * WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let (n, k) = (outputs as i32, self.k as i32);
            let mut b = Launch::new(&stream, &func);
            b.arg(&x).arg(&w);
            match &bias {
                Some(bias) => b.arg(bias),
                None => b.arg(&0u64), // the null pointer: no bias
            };
            b.arg(&out).arg(&n).arg(&k);
            b.dependent();
            unsafe { b.launch(cfg) }.w()?;
            Ok(out)
        }
    }

    /// Whether a one-row product of `blocks` blocks runs better on the kernel that keeps 4 loads
    /// in flight a lane (`lmgen_gemv1s`) than on the one that keeps 8 (`lmgen_gemv1`): the 8-load
    /// kernel streams ~15% faster a block (0.5B lm_head 87 against 100 us on the H100) but
    /// needs more registers, so fewer blocks fit at once; a grid a little larger than one wave of
    /// it runs a second, nearly empty wave (Qwen3-4B's 6144-column qkv: 768 blocks, 528 fit on
    /// an H100). The 4-load kernel is taken where its last wave is fuller by more than that
    /// (`LMGEN_CUDA_GEMV_WAVES=0`: never, for measuring).
    fn wider_waves<T: WithDType>(dev: &CudaDevice, blocks: usize) -> candle_core::Result<bool> {
        static ON: OnceLock<bool> = OnceLock::new();
        if !*ON.get_or_init(|| std::env::var("LMGEN_CUDA_GEMV_WAVES").map_or(true, |v| v != "0")) {
            return Ok(false);
        }
        let fill = |root: &'static str| -> candle_core::Result<f64> {
            let wave = resident::<T>(dev, root)?;
            Ok(blocks as f64 / (blocks.div_ceil(wave) * wave) as f64)
        };
        Ok(fill("lmgen_gemv1s")? > 1.15 * fill("lmgen_gemv1")?)
    }

    /// Blocks of `{root}_{dtype}` the whole GPU holds at once (SMs times blocks an SM holds),
    /// asked of the driver once a kernel and dtype (kept under the root's name, so a launch
    /// allocates nothing to look it up).
    fn resident<T: WithDType>(dev: &CudaDevice, root: &'static str) -> candle_core::Result<usize> {
        use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
        use std::collections::HashMap;
        use std::sync::Mutex;
        static WAVES: OnceLock<Mutex<HashMap<(&'static str, candle_core::DType), usize>>> =
            OnceLock::new();
        let name = (root, T::DTYPE);
        let waves = WAVES.get_or_init(Default::default);
        if let Some(n) = waves.lock().ok().and_then(|w| w.get(&name).copied()) {
            return Ok(n);
        }
        let (stream, func) = crate::cuda::func::<T>(dev, root)?;
        let per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(32 * WARPS as u32, 0, None)
            .w()?;
        let sms = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .w()?;
        let n = (per_sm as usize * sms.max(1) as usize).max(1);
        if let Ok(mut w) = waves.lock() {
            w.insert(name, n);
        }
        Ok(n)
    }

    impl Map2 for Gemv {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            lx: &Layout,
            w: &CudaSlice<T>,
            lw: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            self.launch((x, lx), (w, lw), None, dev)
        }
    }

    impl Map3 for Gemv {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            lx: &Layout,
            w: &CudaSlice<T>,
            lw: &Layout,
            b: &CudaSlice<T>,
            lb: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            self.launch((x, lx), (w, lw), Some((b, lb)), dev)
        }
    }

    impl candle_core::CustomOp2 for Gemv {
        fn name(&self) -> &'static str {
            "lmgen-gemv"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(crate::cuda::cuda_only("gemv"))
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            lx: &Layout,
            w: &CudaStorage,
            lw: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = x.device();
            let slice = Map2::map(self, &x.slice, lx, &w.slice, lw, dev)?;
            Ok(crate::cuda::output(
                slice,
                dev,
                with_last(lx.shape(), self.outputs()),
            ))
        }
    }

    impl candle_core::CustomOp3 for Gemv {
        fn name(&self) -> &'static str {
            "lmgen-gemv-bias"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Err(crate::cuda::cuda_only("gemv"))
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            lx: &Layout,
            w: &CudaStorage,
            lw: &Layout,
            b: &CudaStorage,
            lb: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = x.device();
            let slice = Map3::map(self, &x.slice, lx, &w.slice, lw, &b.slice, lb, dev)?;
            Ok(crate::cuda::output(
                slice,
                dev,
                with_last(lx.shape(), self.outputs()),
            ))
        }
    }
}
