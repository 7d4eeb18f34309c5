//! Weights pulled into the GPU's L2 cache before the products that read them (decode).
//!
//! A small model's decode step is a chain of short kernels, each bound by the latency of its
//! first loads from device memory more than by their bytes (BENCHMARKS.md: the Qwen2.5-0.5B shape
//! at a third of the copy rate, 8 kernels a layer); between the products the norms, the rotation
//! and the attention leave the memory idle. At the start of a layer one launch asks the copy
//! engine to bring the layer's MLP weights and the next layer's attention weights into L2
//! (sm_90's bulk prefetch, up to [`prefetch_budget`] bytes), so that by the time the products
//! run their rows are on chip. The launch is a programmatic dependent of the kernel before it
//! and lets its own dependent start at once ([`super::launch`]), so it adds no wait to the chain.
//!
//! Only for decode steps of up to [`MAX_ROWS`] rows on a GPU whose kernels were built for sm_90
//! or later, and off unless `LMGEN_CUDA_L2_PREFETCH` sets a budget: `1` three quarters of L2, a
//! larger number that many MiB (`0`: off).

use candle_core::Tensor;

use crate::error::Result;

/// The most activation rows a step may have for its weights to be prefetched (decode).
pub const MAX_ROWS: usize = 8;

/// Ranges the kernel takes in one launch (`lmgen_prefetch_l2` in `kernels/fused.cu`).
pub(super) const RANGES: usize = 8;

/// The bytes a layer may prefetch on a GPU with `l2` bytes of L2: `LMGEN_CUDA_L2_PREFETCH`'s
/// MiB where it is above 1, three quarters of L2 where it is 1 (what the step reads next must
/// not push out what it reads now), else 0.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn prefetch_budget(l2: usize) -> usize {
    budget_from(std::env::var("LMGEN_CUDA_L2_PREFETCH").ok().as_deref(), l2)
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn budget_from(setting: Option<&str>, l2: usize) -> usize {
    match setting.map(|s| s.trim().parse::<usize>()) {
        Some(Ok(1)) => l2 / 4 * 3,
        Some(Ok(mib)) if mib > 1 => mib << 20,
        _ => 0,
    }
}

/// Asks for `weights` (in order, up to the budget) to be brought into L2 ahead of a decode step's
/// products over `x` `[.., k]`. Returns whether a launch was queued: nothing on a CPU, for more
/// than [`MAX_ROWS`] rows, below sm_90, or with the budget at 0. The weights are only read.
pub fn prefetch_l2(x: &Tensor, weights: &[&Tensor]) -> Result<bool> {
    if !super::applies(x) || weights.is_empty() {
        return Ok(false);
    }
    let rows = x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1);
    if rows > MAX_ROWS {
        return Ok(false);
    }
    imp::run(x, weights)
}

/// The 16-byte aligned part of each `(start, bytes)` range, taken in order until `budget`
/// bytes: `(start, bytes)` pairs for the kernel (at most [`RANGES`]).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn clip(ranges: &[(u64, u64)], budget: u64) -> Vec<(u64, u64)> {
    let mut left = budget;
    let mut out = Vec::with_capacity(RANGES);
    for &(start, bytes) in ranges {
        if out.len() == RANGES || left < 16 {
            break;
        }
        let first = start.next_multiple_of(16);
        let end = (start + bytes) & !15;
        if end <= first {
            continue;
        }
        let n = (end - first).min(left) & !15;
        out.push((first, n));
        left -= n;
    }
    out
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &Tensor, _: &[&Tensor]) -> Result<bool> {
        Ok(false)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use std::sync::OnceLock;

    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{Device, Storage, WithDType};

    use super::*;
    use crate::cuda::launch::{dependent_launches, Launch};

    /// Threads a block; each issues prefetches of `PREFETCH_CHUNK` (16 KiB) bytes.
    const THREADS: usize = 128;
    const CHUNK: u64 = 16 << 10;

    pub fn run(x: &Tensor, weights: &[&Tensor]) -> Result<bool> {
        // The bulk prefetch and the dependent launch both need sm_90 kernels.
        if !dependent_launches() {
            return Ok(false);
        }
        let Device::Cuda(dev) = x.device() else {
            return Ok(false);
        };
        let budget = budget(dev)?;
        if budget == 0 {
            return Ok(false);
        }
        Ok(match x.dtype() {
            candle_core::DType::BF16 => launch::<half::bf16>(dev, weights, budget)?,
            candle_core::DType::F16 => launch::<half::f16>(dev, weights, budget)?,
            _ => launch::<f32>(dev, weights, budget)?,
        })
    }

    /// [`prefetch_budget`] of the device's L2, once a process (one GPU model per process).
    fn budget(dev: &candle_core::CudaDevice) -> Result<u64> {
        static BUDGET: OnceLock<u64> = OnceLock::new();
        if let Some(b) = BUDGET.get() {
            return Ok(*b);
        }
        let l2 = dev
            .cuda_stream()
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
            .w()?;
        Ok(*BUDGET.get_or_init(|| prefetch_budget(l2.max(0) as usize) as u64))
    }

    fn launch<T: WithDType>(
        dev: &candle_core::CudaDevice,
        weights: &[&Tensor],
        budget: u64,
    ) -> Result<bool> {
        let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_prefetch_l2")?;
        let mut ranges = Vec::with_capacity(weights.len());
        for w in weights {
            let (storage, layout) = w.storage_and_layout();
            let Storage::Cuda(c) = &*storage else {
                continue;
            };
            let Some((a, b)) = layout.contiguous_offsets() else {
                continue;
            };
            let size = w.dtype().size_in_bytes() as u64;
            // The weights are only read, and only by kernels on this stream: the pointer's
            // read record (cudarc's event tracking, off for lmgen's devices) is not needed.
            macro_rules! base {
                ($($v:ident),*) => {
                    match &c.slice {
                        $(CudaStorageSlice::$v(s) => s.device_ptr(&stream).0,)*
                        _ => continue,
                    }
                };
            }
            let base = base!(U8, U32, I16, I32, I64, BF16, F16, F32, F64);
            ranges.push((base + a as u64 * size, (b - a) as u64 * size));
        }
        let ranges = clip(&ranges, budget);
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        if total == 0 {
            return Ok(false);
        }
        let mut words = [0u64; 2 * RANGES];
        for (i, (p, n)) in ranges.iter().enumerate() {
            words[i] = *p;
            words[RANGES + i] = *n;
        }
        let sms = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .w()?;
        let blocks = (total.div_ceil(CHUNK) as usize)
            .div_ceil(THREADS)
            .clamp(1, sms.max(1) as usize);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut bld = Launch::new(&stream, &func);
        for w in &words {
            bld.arg(w);
        }
        bld.dependent();
        unsafe { bld.launch(cfg) }.w()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_aligned_and_cut_at_the_budget() {
        // Each range's 16-byte aligned inside, in order, until the budget is spent.
        let got = clip(
            &[(8, 100), (1024, 4096), (1 << 20, 1 << 20)],
            80 + 4096 + 1000,
        );
        assert_eq!(got, vec![(16, 80), (1024, 4096), (1 << 20, 992)]); // [16, 96), then 1000 rounded down
                                                                       // A range with no aligned 16 bytes is skipped; at most RANGES are kept.
        assert_eq!(clip(&[(1, 20)], 1 << 30), vec![]);
        let many: Vec<(u64, u64)> = (0..12).map(|i| (i * 4096, 4096)).collect();
        assert_eq!(clip(&many, u64::MAX).len(), RANGES);
    }

    #[test]
    fn the_budget_follows_the_setting() {
        let l2 = 50 << 20;
        assert_eq!(budget_from(None, l2), 0);
        assert_eq!(budget_from(Some("1"), l2), l2 / 4 * 3);
        assert_eq!(budget_from(Some("0"), l2), 0);
        assert_eq!(budget_from(Some("20"), l2), 20 << 20);
        assert_eq!(budget_from(Some("junk"), l2), 0);
    }
}
