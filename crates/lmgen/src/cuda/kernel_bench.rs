//! Timings of lmgen's decode kernels on a GPU beside what they replace, for tuning them
//! (`generate_speed --bench-kernels --device cuda`, `tools/device_run.sh bench-kernels`): the
//! decode product against cuBLAS (candle's matmul) on the weight shapes of the models the GPU
//! benchmarks use, the decode attention kernel over growing caches, and the prompt (flash)
//! attention under both of its bodies. Each line gives the microseconds of one launch (the
//! median of 7 rounds of 50 launches, the launch included) and the bytes it reads, or for the
//! prompt the multiply-adds it does, over that time.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// `(name, out, in)` of the bf16 weights whose products a decode step runs: the Qwen2.5-0.5B
/// and Llama-3.1-8B shapes (fused q/k/v and gate/up as lmgen loads them) and their LM heads.
const PRODUCTS: &[(&str, usize, usize)] = &[
    ("0.5b qkv", 1152, 896),
    ("0.5b o", 896, 896),
    ("0.5b gate_up", 9728, 896),
    ("0.5b down", 896, 4864),
    ("0.5b lm_head", 151_936, 896),
    ("4b qkv", 6144, 2560),
    ("4b gate_up", 19_456, 2560),
    ("4b down", 2560, 9728),
    ("8b qkv", 6144, 4096),
    ("8b o", 4096, 4096),
    ("8b gate_up", 28_672, 4096),
    ("8b down", 4096, 14_336),
    ("8b lm_head", 128_256, 4096),
];

/// `(nh, nkv, d)` of the attention benchmarked at each cache length of [`KEYS`].
const HEADS: &[(usize, usize, usize)] = &[(14, 2, 64), (32, 8, 128)];
const KEYS: &[usize] = &[128, 512, 2048, 8192, 32_768];

/// The median microseconds of one call of `f` (7 rounds of 50 calls, synchronized).
fn time(device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..50 {
            f()?;
        }
        device.synchronize()?;
        rounds.push(t.elapsed().as_secs_f64() * 1e6 / 50.0);
    }
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[3])
}

/// One line per product and row count (lmgen's kernel and cuBLAS), then per attention shape.
pub fn run(device: &Device) -> Result<Vec<String>> {
    let mut report = Vec::new();
    let before = super::set_gemv_max_rows(super::GEMV_MAX_ROWS);
    let products = products(device, &mut report);
    super::set_gemv_max_rows(before);
    products?;
    for &(nh, nkv, d) in HEADS {
        for &s in KEYS {
            let q = Tensor::randn(0f32, 1.0, (1, nh, 1, d), device)?.to_dtype(DType::BF16)?;
            let k = Tensor::randn(0f32, 1.0, (1, nkv, s, d), device)?.to_dtype(DType::BF16)?;
            let v = Tensor::randn(0f32, 1.0, (1, nkv, s, d), device)?.to_dtype(DType::BF16)?;
            let us = time(device, || {
                super::decode_attention(&q, &k, &v, 0.125)?;
                Ok(())
            })?;
            let bytes = 2.0 * (2 * nkv * s * d) as f64;
            report.push(format!(
                "attention bf16 nh {nh} nkv {nkv} d {d} keys {s}: {us:.1} us, {:.0} GB/s",
                bytes / us / 1e3
            ));
        }
    }
    prompt_attention(device, &mut report)?;
    Ok(report)
}

/// `(nh, nkv, d)` of the prompt attention benchmarked at each prompt length of [`PROMPTS`]
/// (Qwen2.5-0.5B, Llama-3.1-8B, Phi-3).
const PROMPT_HEADS: &[(usize, usize, usize)] = &[(14, 2, 64), (32, 8, 128), (32, 32, 96)];
const PROMPTS: &[usize] = &[1024, 4096];

/// A causal bf16 prompt with no cached keys through [`super::flash_attention`], with the
/// tensor-core body and with the shared-memory one; TFLOP/s counts the two products over the
/// keys each query sees.
fn prompt_attention(device: &Device, report: &mut Vec<String>) -> Result<()> {
    use crate::models::layers::attention::Scores;
    for &(nh, nkv, d) in PROMPT_HEADS {
        for &t in PROMPTS {
            let q = Tensor::randn(0f32, 1.0, (1, nh, t, d), device)?.to_dtype(DType::BF16)?;
            let k = Tensor::randn(0f32, 1.0, (1, nkv, t, d), device)?.to_dtype(DType::BF16)?;
            let v = Tensor::randn(0f32, 1.0, (1, nkv, t, d), device)?.to_dtype(DType::BF16)?;
            let scores = Scores {
                scale: (d as f64).powf(-0.5),
                softcap: None,
                sinks: None,
            };
            let mut line = format!("prompt attention bf16 nh {nh} nkv {nkv} d {d} tokens {t}:");
            for mma in [true, false] {
                let before = super::set_flash_mma(mma);
                let us = time(device, || {
                    super::flash_attention(&q, &k, &v, None, scores)?;
                    Ok(())
                });
                super::set_flash_mma(before);
                let us = us?;
                let flops = 4.0 * (nh * d) as f64 * (t * (t + 1) / 2) as f64;
                let body = if mma { "tensor-core" } else { "shared-memory" };
                line += &format!(" {body} {us:.1} us ({:.1} TFLOP/s)", flops / us / 1e6);
            }
            report.push(line);
        }
    }
    Ok(())
}

fn products(device: &Device, report: &mut Vec<String>) -> Result<()> {
    for &(name, n, k) in PRODUCTS {
        let w = Tensor::randn(0f32, 0.02, (n, k), device)?.to_dtype(DType::BF16)?;
        for rows in 1..=super::GEMV_MAX_ROWS {
            let x = Tensor::randn(0f32, 1.0, (1, rows, k), device)?.to_dtype(DType::BF16)?;
            let ours = time(device, || {
                super::gemv(&x, &w, None)?;
                Ok(())
            })?;
            let cublas = time(device, || {
                x.broadcast_matmul(&w.t()?)?;
                Ok(())
            })?;
            let gb = |us: f64| (2 * n * k) as f64 / us / 1e3;
            report.push(format!(
                "gemv bf16 {name} [{rows}, {k}] x [{n}, {k}]^T: lmgen {ours:.1} us ({:.0} GB/s), \
                 cuBLAS {cublas:.1} us ({:.0} GB/s), {:.2}x",
                gb(ours),
                gb(cublas),
                cublas / ours
            ));
        }
    }
    Ok(())
}
