//! KV memory and update time of each `cache_implementation` over a 4096-token generation with the
//! KV shape of Qwen2.5-0.5B (24 layers, 2 KV heads of 64, f32 as on CPU): a 128-token prompt,
//! then one token per step, random keys and values, the cache alone (no model).
//!
//! `cargo run -p lmgen --example kv_cache_memory` (add `--release` for optimised cache code)

use std::time::Instant;

use candle_core::{Device, Tensor};
use lmgen::cache::quantizer::Backend;
use lmgen::cache::{DynamicCache, KvCache, QuantizedCache, QuantizedCacheConfig, StaticCache};

const LAYERS: usize = 24;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const PROMPT: usize = 128;
const TOTAL: usize = 4096;

/// Feeds the generation to `cache`; returns (peak bytes held by the cache, largest full-precision
/// keys + values one update hands back, seconds in updates).
fn run<C: KvCache>(
    cache: &mut C,
    held: impl Fn(&C) -> usize,
) -> lmgen::Result<(usize, usize, f64)> {
    let kv = |t| Tensor::randn(0f32, 1.0, (1, KV_HEADS, t, HEAD_DIM), &Device::Cpu);
    let (prompt, step) = ((kv(PROMPT)?, kv(PROMPT)?), (kv(1)?, kv(1)?));
    let (mut peak, mut transient, mut secs) = (0, 0, 0.0);
    for t in PROMPT..=TOTAL {
        let (k, v) = [&prompt, &step][usize::from(t > PROMPT)];
        let start = Instant::now();
        for layer in 0..LAYERS {
            let (ks, vs) = cache.update(layer, k, v)?;
            transient = transient.max(2 * ks.elem_count().max(vs.elem_count()) * 4);
        }
        secs += start.elapsed().as_secs_f64();
        peak = peak.max(held(cache));
    }
    Ok((peak, transient, secs))
}

fn main() -> lmgen::Result<()> {
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "| cache | peak KV held (MiB) | largest update output (MiB) | ms per token in updates |"
    );
    println!("|---|---:|---:|---:|");
    let show = |name: &str, (peak, out, secs): (usize, usize, f64)| {
        let per_token = 1e3 * secs / (TOTAL - PROMPT + 1) as f64;
        println!(
            "| {name} | {:.1} | {:.2} | {per_token:.3} |",
            mib(peak),
            mib(out)
        );
    };
    show(
        "dynamic",
        run(&mut DynamicCache::new(), DynamicCache::allocated_bytes)?,
    );
    show(
        "static (4096)",
        run(&mut StaticCache::new(TOTAL), StaticCache::allocated_bytes)?,
    );
    for (name, backend, nbits) in [
        ("quantized, quanto int4", Backend::Quanto, 4),
        ("quantized, quanto int2", Backend::Quanto, 2),
        ("quantized, hqq int8", Backend::Hqq, 8),
        ("quantized, hqq int4", Backend::Hqq, 4),
    ] {
        let config = QuantizedCacheConfig {
            backend,
            nbits,
            ..QuantizedCacheConfig::default()
        };
        show(
            name,
            run(&mut QuantizedCache::new(config), QuantizedCache::bytes)?,
        );
    }
    Ok(())
}
