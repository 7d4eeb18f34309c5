//! Continuous batching throughput: aggregate tokens/s with 1, 8 and 32 concurrent clients on the
//! engine, against the same requests run one after another through static `generate()`.
//!
//! Each client is a thread that submits a streaming request, reads it to the end, then submits
//! the next (closed loop); every request has a distinct 32-token prompt and generates exactly
//! `LMGEN_BENCH_TOKENS` (default 32) tokens (EOS masked by `min_new_tokens`). Reported: aggregate
//! generated tokens/s, mean time to first token, median inter-token latency, peak RSS.
//!
//! Run: `cargo bench -p lmgen --bench continuous_batching` (writes the SmolLM2-135M-shaped
//! checkpoint under target/ once, as the kv_cache bench does). `LMGEN_BENCH_CLIENTS=32` (a
//! comma-separated list) runs only those engine rows and no sequential one, e.g. under a profiler;
//! `LMGEN_BENCH_DTYPE=bf16` loads the weights in bf16 (default f32), `LMGEN_BENCH_QUANTIZE=q8_0`
//! (or `q4_k`) quantizes them at load; `LMGEN_LOG=lmgen::engine=debug` logs each engine step's
//! forward and sampling times.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lmgen::cache::paged::PagedCacheConfig;
use lmgen::engine::{ContinuousBatchingManager, EngineConfig, Request};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, DType, LoadOptions, Quantization};
use lmgen::{generate, GenerateInput, GenerationConfig, TokenId};

/// Tokens of every request's prompt.
const PROMPT_LEN: usize = 32;
/// Tokens a block of the engine's paged pool holds.
const BLOCK: usize = 16;

fn prompt(i: usize) -> Vec<TokenId> {
    (0..PROMPT_LEN)
        .map(|j| (100 + 37 * j + 1009 * i) as TokenId % 49_000 + 3)
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct RunStats {
    secs: f64,
    tokens: usize,
    ttft: Vec<f64>,
    itl: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn engine_run(
    model: Arc<dyn CausalLM>,
    config: &GenerationConfig,
    clients: usize,
    requests: usize,
) -> anyhow::Result<RunStats> {
    // Room for every client's prompt and all its new tokens at once, plus a block each for a
    // partly filled last one (with 128 slots a client, 128 new tokens after a 32-token prompt ran
    // out of blocks and preempted sequences).
    let new_tokens = config
        .max_new_tokens
        .ok_or_else(|| anyhow::anyhow!("the bench's config sets max_new_tokens"))?;
    let slots_per_client = PROMPT_LEN + new_tokens + BLOCK;
    let engine = EngineConfig {
        cache: PagedCacheConfig::from_tokens(clients * slots_per_client + 256, BLOCK)?,
        max_running: clients.max(1),
        max_batch_tokens: 512,
        ..EngineConfig::default()
    };
    let dtype = model.dtype();
    let manager = Arc::new(ContinuousBatchingManager::new(model, engine, dtype, None)?);
    manager.start()?;
    let start = Instant::now();
    let per_client = requests / clients;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let manager = manager.clone();
            let config = config.clone();
            std::thread::spawn(move || -> anyhow::Result<(usize, Vec<f64>, Vec<f64>)> {
                let (mut tokens, mut ttft, mut itl) = (0, Vec::new(), Vec::new());
                for r in 0..per_client {
                    let sent = Instant::now();
                    let id = manager.add_streaming_request(Request::new(
                        prompt(c * per_client + r),
                        config.clone(),
                    ))?;
                    let mut last: Option<Instant> = None;
                    for u in manager.request_id_iter(&id)? {
                        if u.new_tokens.is_empty() {
                            continue;
                        }
                        tokens += u.new_tokens.len();
                        match last {
                            None => ttft.push(u.at.duration_since(sent).as_secs_f64()),
                            Some(prev) => itl.push(u.at.duration_since(prev).as_secs_f64()),
                        }
                        last = Some(u.at);
                    }
                }
                Ok((tokens, ttft, itl))
            })
        })
        .collect();
    let mut stats = RunStats {
        secs: 0.0,
        tokens: 0,
        ttft: Vec::new(),
        itl: Vec::new(),
    };
    for h in handles {
        let (tokens, ttft, itl) = h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        stats.tokens += tokens;
        stats.ttft.extend(ttft);
        stats.itl.extend(itl);
    }
    stats.secs = start.elapsed().as_secs_f64();
    manager.stop(true, Some(Duration::from_secs(10)));
    Ok(stats)
}

fn main() -> anyhow::Result<()> {
    // `LMGEN_LOG=lmgen::engine=debug`: the engine's time per step, on stderr.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("LMGEN_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("target/bench-checkpoints/smollm2-135m-f32");
    if !dir.join("model.safetensors").is_file() {
        let text = std::fs::read_to_string(root.join("benches/configs/smollm2-135m.json"))?;
        lmgen::init::init_random(&serde_json::from_str(&text)?, DType::F32, &dir, 0)?;
    }
    // LMGEN_BENCH_DTYPE=bf16 (or f16): the weights in that dtype (activations stay f32 on the
    // CPU, see `models::layers::compute_dtype`).
    let dtype = match std::env::var("LMGEN_BENCH_DTYPE").as_deref() {
        Ok("bf16") => DType::BF16,
        Ok("f16") => DType::F16,
        Ok("f32") | Err(_) => DType::F32,
        Ok(other) => anyhow::bail!("LMGEN_BENCH_DTYPE: {other:?} is not f32, f16 or bf16"),
    };
    // LMGEN_BENCH_QUANTIZE=q8_0 (or q4_k): the linear weights quantized at load.
    let quantize = match std::env::var("LMGEN_BENCH_QUANTIZE") {
        Ok(name) => Some(Quantization::parse(&name)?),
        Err(_) => None,
    };
    let model: Arc<dyn CausalLM> = Arc::from(load_model(
        &Checkpoint::open(&dir)?,
        &LoadOptions {
            dtype: Some(dtype),
            quantize,
            ..LoadOptions::default()
        },
    )?);
    lmgen::allocator::reuse_freed_memory();
    let n: usize = std::env::var("LMGEN_BENCH_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let config = GenerationConfig {
        max_new_tokens: Some(n),
        min_new_tokens: Some(n),
        do_sample: Some(false),
        ..GenerationConfig::default()
    };
    // Warm-up.
    generate(
        model.as_ref(),
        &GenerateInput::single(prompt(999)),
        &GenerationConfig {
            max_new_tokens: Some(2),
            ..config.clone()
        },
    )?;
    println!("model: SmolLM2-135M shape, random weights, {dtype:?} weights (quantized at load: {quantize:?}), CPU; prompts 32 tokens, {n} new tokens each, greedy, EOS masked");
    println!(
        "{:<34} {:>9} {:>7} {:>9} {:>10} {:>12} {:>10}",
        "run", "requests", "tokens", "seconds", "tokens/s", "mean TTFT s", "p50 ITL ms"
    );
    let clients: Option<Vec<usize>> = std::env::var("LMGEN_BENCH_CLIENTS")
        .ok()
        .map(|s| s.split(',').map(|c| c.trim().parse()).collect())
        .transpose()
        .map_err(|e| anyhow::anyhow!("LMGEN_BENCH_CLIENTS: {e} (expected e.g. 1,8,32)"))?;
    let sequential = if clients.is_some() { 0 } else { 8 };
    let start = Instant::now();
    let mut tokens = 0;
    for i in 0..sequential {
        let out = generate(model.as_ref(), &GenerateInput::single(prompt(i)), &config)?;
        tokens += out.generated(0).len();
    }
    let secs = start.elapsed().as_secs_f64();
    if sequential > 0 {
        println!(
            "{:<34} {:>9} {:>7} {:>9.2} {:>10.2} {:>12} {:>10}",
            "static generate(), sequential",
            sequential,
            tokens,
            secs,
            tokens as f64 / secs,
            "-",
            "-"
        );
    }
    for clients in clients.unwrap_or_else(|| vec![1, 8, 32]) {
        let requests = clients.max(8);
        let s = engine_run(model.clone(), &config, clients, requests)?;
        let mean_ttft = s.ttft.iter().sum::<f64>() / s.ttft.len().max(1) as f64;
        println!(
            "{:<34} {:>9} {:>7} {:>9.2} {:>10.2} {:>12.3} {:>10.1}",
            format!("engine, {clients} concurrent clients"),
            requests,
            s.tokens,
            s.secs,
            s.tokens as f64 / s.secs,
            mean_ttft,
            median(s.itl) * 1e3
        );
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib());
    Ok(())
}
