//! Decoding with the KV cache: time per generated token must stay flat as the output grows.
//!
//! Writes a random-weight checkpoint of SmolLM2-135M's shape (`benches/configs/smollm2-135m.json`)
//! once, then times greedy generation of 32, 256 and 1024 new tokens (EOS ignored) after a
//! 16-token prompt, and prints tokens/s for each. Without a cache each step would re-run the whole
//! sequence and tokens/s would fall with length.
//!
//! Run: `cargo bench -p lmgen --bench kv_cache` (`LMGEN_BENCH_TOKENS=32,256` to shorten).

use std::path::Path;
use std::time::Instant;

use lmgen::load::Checkpoint;
use lmgen::models::{load_model, DType, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config_path = root.join("benches/configs/smollm2-135m.json");
    let dir = root.join("target/bench-checkpoints/smollm2-135m-f32");
    if !dir.join("model.safetensors").is_file() {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
        let params = lmgen::init::init_random(&config, DType::F32, &dir, 0)?;
        eprintln!(
            "wrote {} ({:.1}M parameters)",
            dir.display(),
            params as f64 / 1e6
        );
    }
    let checkpoint = Checkpoint::open(&dir)?;
    let model = load_model(&checkpoint, &LoadOptions::default())?;
    lmgen::allocator::reuse_freed_memory();
    let prompt: Vec<u32> = (0..16).map(|i| 100 + 37 * i).collect();
    let lengths: Vec<usize> = std::env::var("LMGEN_BENCH_TOKENS")
        .unwrap_or_else(|_| "32,256,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "model: SmolLM2-135M shape, random weights, f32, CPU, greedy, batch 1, prompt 16 tokens"
    );
    println!(
        "{:>10} {:>10} {:>12} {:>12}",
        "new tokens", "seconds", "tokens/s", "ms/token"
    );
    // Warm-up.
    let warm_up = GenerationConfig {
        max_new_tokens: Some(8),
        ..GenerationConfig::default()
    };
    generate(
        model.as_ref(),
        &GenerateInput::single(prompt.clone()),
        &warm_up,
    )?;
    for n in lengths {
        let config = GenerationConfig {
            max_new_tokens: Some(n),
            ..GenerationConfig::default()
        };
        let start = Instant::now();
        let out = generate(
            model.as_ref(),
            &GenerateInput::single(prompt.clone()),
            &config,
        )?;
        let secs = start.elapsed().as_secs_f64();
        let generated = out.generated(0).len();
        assert_eq!(
            generated, n,
            "EOS is not set, so every run generates exactly n tokens"
        );
        println!(
            "{generated:>10} {secs:>10.2} {:>12.2} {:>12.2}",
            generated as f64 / secs,
            1e3 * secs / generated as f64
        );
    }
    println!("peak RSS: {:.0} MiB", peak_rss_mib());
    Ok(())
}
