//! The memory-bandwidth probe of `lmgen bench`: a streaming read of a buffer much larger than the
//! caches, on every thread of the pool, as a decode step reads its weights. The best of several
//! passes is the bandwidth the bound is computed with (the bound is what the machine can do, so
//! noise must not lower it).

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;
use lmgen::models::{DType, Device};
use rayon::prelude::*;

const PASSES: usize = 7;
/// Elements per rayon task.
const CHUNK: usize = 1 << 18;
const LANES: usize = 16;

/// Measured read bandwidth in bytes per second, streaming a buffer of `bytes` (far beyond the
/// last-level cache).
pub fn measure(bytes: usize) -> f64 {
    let n = (bytes / 4).max(CHUNK);
    // Distinct values, so the pages are really backed by memory.
    let buf: Vec<f32> = (0..n).map(|i| (i % 1024) as f32).collect();
    let mut best = 0f64;
    for _ in 0..PASSES {
        let start = Instant::now();
        let sum: f32 = buf.par_chunks(CHUNK).map(sum_lanes).sum();
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((4 * n) as f64 / secs);
    }
    best
}

/// A sum in `LANES` independent partial sums (vectorises; one add chain would be latency-bound).
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The bandwidth of a GPU: device-to-device copies of a `bytes` buffer into a preallocated one,
/// counting the bytes read and written (the figure `tools/gpu_compare.py` measures with torch's
/// `copy_`), best of several passes.
pub fn measure_device(device: &Device, bytes: usize) -> Result<f64> {
    let n = bytes / 4;
    let src = Tensor::ones(n, DType::F32, device)?;
    let dst = Tensor::zeros(n, DType::F32, device)?;
    let mut best = 0f64;
    for _ in 0..=PASSES {
        device.synchronize()?;
        let start = Instant::now();
        dst.slice_set(&src, 0, 0)?;
        device.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        best = best.max((2 * 4 * n) as f64 / secs);
    }
    Ok(best)
}
