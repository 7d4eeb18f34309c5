//! `lmgen bench`: prefill and decode speed, time to first token, peak memory and the fraction of
//! the memory-bandwidth bound (DESIGN.md section 5), printed as a table and written as JSON.
//!
//! Everything runs through `generate()` (greedy, no processors, EOS ignored) on fixed token ids:
//! row `r`, position `i` holds `(7 + 31 i + 101 r) % vocab`. Each configuration runs `--warmup`
//! times untimed, then `--reps` times; the median is reported.
//! - prefill P: one prompt of P tokens, one new token; TTFT = wall time of that call,
//!   prefill tok/s = P / TTFT.
//! - decode B: B prompts of `--prompt-len` tokens, `--new-tokens` N new tokens each; the time of
//!   every step is taken as it ends, decode tok/s = B (N - 1) / (t_N - t_1).
//! - bound: a step must read the weights and the cache, `(W + B C kv) / BW`, with C the mean
//!   context of the run and BW the read bandwidth the probe measures first, in the same process.
//!
//! Peak RSS is read twice: after load and batch-1 decode (compare with weights + KV), and at the
//! end (largest batch and prompt included).
//!
//! With `--device cuda`, the bandwidth is that of device-to-device copies (bytes read + written,
//! as `tools/gpu_compare.py` measures it with torch) and the GPU memory in use above the start (an upper estimate: the allocator's pool counts) is
//! reported next to the host RSS. Step times are taken when each token reaches the host, so they
//! include the GPU's work.

mod bandwidth;
mod footprint;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use lmgen::generation::{FinishReason, GenerateOptions, StoppingCriterion};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, ModelConfig};
use lmgen::{GenerateInput, GenerationConfig, TokenId};
use lmgen_server::ModelArgs;
use serde_json::{json, Value};

use footprint::Footprint;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Threads for the matrix products (default: candle's choice, the physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Prompt lengths of the prefill runs (comma separated; empty, `--prefill=`, for none).
    #[arg(long, value_parser = sizes, default_value = "128,512")]
    pub prefill: Sizes,
    /// Batch sizes of the decode runs (comma separated; empty, `--batch=`, for none).
    #[arg(long, value_parser = sizes, default_value = "1,8,32")]
    pub batch: Sizes,
    /// Prompt length of the decode runs.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// New tokens per decode run (at least 2).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed runs per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Size of the buffer the bandwidth probe reads (it must be well beyond the last-level cache).
    #[arg(long, default_value_t = 512)]
    pub bandwidth_mib: usize,
    /// Also write the results as JSON to FILE (`-`: JSON on stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Generation config fields for every run, as a JSON object or a file holding one, e.g.
    /// `'{"cache_implementation": "quantized", "cache_config": {"nbits": 4}}'` to measure a cache
    /// kind. `max_new_tokens` is the bench's; fields that change the decoding (sampling, beams)
    /// change what is measured.
    #[arg(long, value_name = "JSON|FILE")]
    pub generation_config: Option<String>,
}

/// `--generation-config`: inline JSON (starting with `{`) or a file's.
fn generation_config(arg: Option<&str>) -> Result<GenerationConfig> {
    let Some(arg) = arg else {
        return Ok(GenerationConfig::default());
    };
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg)
            .with_context(|| format!("cannot read `--generation-config` file `{arg}`"))?
    };
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("`--generation-config` is not JSON: {text}"))?;
    GenerationConfig::from_json(&value, lmgen::generation::config::UnknownFields::Reject)
        .context("`--generation-config`")
}

/// Records the time each step ends (the first time it sees a longer sequence).
struct StepClock<'a> {
    times: &'a mut Vec<Instant>,
    len: usize,
}

impl StoppingCriterion for StepClock<'_> {
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        if tokens.len() != self.len {
            self.len = tokens.len();
            self.times.push(Instant::now());
        }
        None
    }
}

/// A comma-separated list of positive sizes; empty for none.
#[derive(Debug, Clone)]
pub struct Sizes(pub Vec<usize>);

fn sizes(s: &str) -> std::result::Result<Sizes, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("`{p}` is not a positive integer")),
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Sizes)
}

/// One timed `generate()`: the start and the end time of every step.
fn timed_generate(
    model: &dyn CausalLM,
    base: &GenerationConfig,
    input: &GenerateInput,
    new_tokens: usize,
) -> Result<(Instant, Vec<Instant>)> {
    let config = GenerationConfig {
        max_new_tokens: Some(new_tokens),
        ..base.clone()
    };
    let mut times = Vec::with_capacity(new_tokens);
    let clock = StepClock {
        times: &mut times,
        len: 0,
    };
    let options = GenerateOptions {
        stopping_criteria: vec![Box::new(clock)],
        ..GenerateOptions::default()
    };
    let start = Instant::now();
    let out = lmgen::generation::generate_with(model, input, &config, options)?;
    if out.generated(0).len() != new_tokens || times.len() != new_tokens {
        bail!(
            "expected {new_tokens} steps, got {} (EOS must be ignored)",
            times.len()
        );
    }
    Ok((start, times))
}

fn ids(batch: usize, len: usize, vocab: usize) -> GenerateInput {
    let rows = (0..batch)
        .map(|r| {
            (0..len)
                .map(|i| ((7 + 31 * i + 101 * r) % vocab) as TokenId)
                .collect()
        })
        .collect();
    GenerateInput {
        input_ids: rows,
        attention_mask: None,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `f` `warmup` times untimed, then `reps` times, collecting its measurements.
fn repeat<T>(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<Vec<T>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..reps).map(|_| f()).collect()
}

struct Bench<'a> {
    args: &'a BenchArgs,
    model: &'a dyn CausalLM,
    config: &'a ModelConfig,
    footprint: Footprint,
    bandwidth: f64,
    /// `--generation-config`.
    generation: GenerationConfig,
}

fn prefill(ctx: &Bench<'_>, len: usize) -> Result<Value> {
    let input = ids(1, len, ctx.config.vocab_size);
    let ttfts = repeat(ctx.args.warmup, ctx.args.reps, || {
        let (start, times) = timed_generate(ctx.model, &ctx.generation, &input, 1)?;
        Ok((times[0] - start).as_secs_f64())
    })?;
    let ttft = median(ttfts);
    Ok(json!({"prompt_len": len, "ttft_s": ttft, "tok_s": len as f64 / ttft}))
}

fn decode(ctx: &Bench<'_>, batch: usize) -> Result<Value> {
    let (p, n) = (ctx.args.prompt_len, ctx.args.new_tokens);
    let input = ids(batch, p, ctx.config.vocab_size);
    let runs = repeat(ctx.args.warmup, ctx.args.reps, || {
        let (start, times) = timed_generate(ctx.model, &ctx.generation, &input, n)?;
        let ttft = (times[0] - start).as_secs_f64();
        let decode = (times[n - 1] - times[0]).as_secs_f64();
        let steps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        Ok((ttft, decode, median(steps)))
    })?;
    let ttft = median(runs.iter().map(|r| r.0).collect());
    let secs = median(runs.iter().map(|r| r.1).collect());
    let itl = median(runs.iter().map(|r| r.2).collect());
    let tok_s = (batch * (n - 1)) as f64 / secs;
    // Mean context over the decode steps: prompt, first token, then one more per step.
    let context = p as f64 + 1.0 + (n - 1) as f64 / 2.0;
    let step_bytes = ctx.footprint.read_per_step as f64
        + batch as f64 * context * ctx.footprint.kv_per_token as f64;
    let bound_tok_s = batch as f64 * ctx.bandwidth / step_bytes;
    Ok(json!({
        "batch": batch,
        "tok_s": tok_s,
        "ttft_s": ttft,
        "ms_per_step": 1e3 * secs / (n - 1) as f64,
        "p50_step_ms": 1e3 * itl,
        "bytes_per_step": step_bytes,
        "bound_tok_s": bound_tok_s,
        "fraction_of_bound": tok_s / bound_tok_s,
    }))
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.new_tokens < 2 || args.reps == 0 {
        bail!("`--new-tokens` must be at least 2 and `--reps` at least 1");
    }
    if let Some(n) = args.threads {
        // candle's matmul reads the same variable as rayon; set both before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the thread pool")?;
    }
    let threads = rayon::current_num_threads();
    let generation = generation_config(args.generation_config.as_deref())?;
    let options = args.model.load_options()?;
    let gpu = !options.device.is_cpu();
    // On a GPU: the memory the driver reports in use before anything of ours (the probe's buffer
    // included, which the allocator's pool may keep), and a read of a device buffer.
    let gpu_memory = GpuMemory::new(&options.device);
    let bandwidth = if gpu {
        bandwidth::measure_device(&options.device, args.bandwidth_mib << 20)?
    } else {
        bandwidth::measure(args.bandwidth_mib << 20)
    };

    footprint::reset_peak();
    let start = Instant::now();
    let checkpoint = Checkpoint::from_pretrained(
        &args.model.model_or_default(),
        options.gguf_file.as_deref(),
        &options.hub,
    )?;
    let dir = checkpoint
        .weights
        .gguf_path()
        .map_or_else(|| checkpoint.dir.clone(), std::path::Path::to_path_buf);
    let model = load_model(&checkpoint, &options)?;
    lmgen::allocator::reuse_freed_memory();
    let load_s = start.elapsed().as_secs_f64();
    let config = model.config().clone();
    let dtype = options.dtype.unwrap_or(lmgen::models::DType::F32);
    let fp = Footprint::new(
        &checkpoint,
        &config,
        [dtype, model.dtype()],
        options.quantize,
    );
    drop(checkpoint);
    let ctx = Bench {
        args: &args,
        model: model.as_ref(),
        config: &config,
        footprint: fp,
        bandwidth,
        generation,
    };

    let mut decodes = Vec::new();
    let mut peak_after_b1 = None;
    let mut batches = args.batch.0.clone();
    batches.sort_unstable();
    let mut gpu_after_b1 = None;
    for &b in &batches {
        decodes.push(decode(&ctx, b)?);
        gpu_memory.sample();
        if b == 1 {
            peak_after_b1 = footprint::rss().1;
            gpu_after_b1 = gpu_memory.used();
        }
    }
    let prefills = args
        .prefill
        .0
        .iter()
        .map(|&p| {
            let r = prefill(&ctx, p);
            gpu_memory.sample();
            r
        })
        .collect::<Result<Vec<_>>>()?;
    let kv_b1 = (args.prompt_len + args.new_tokens) * fp.kv_per_token;
    let report = json!({
        "model": dir.display().to_string(),
        "model_type": config.architecture.model_type(),
        "device": lmgen::device::name(&options.device),
        "bandwidth_kind": if gpu { "device copy, read + written" } else { "host read" },
        "gpu_memory_bytes_batch1": gpu_after_b1,
        "gpu_memory_bytes": gpu_memory.used(),
        "dtype": format!("{dtype:?}").to_lowercase(),
        "quantize": options.quantize.map(|q| format!("{q:?}").to_lowercase()),
        "threads": threads,
        "bandwidth_gb_s": bandwidth / 1e9,
        "weight_bytes_read_per_step": fp.read_per_step,
        "weight_bytes_resident": fp.resident,
        "kv_bytes_per_token": fp.kv_per_token,
        "load_s": load_s,
        "peak_rss_bytes_batch1": peak_after_b1,
        "weights_plus_kv_batch1_bytes": fp.resident + kv_b1,
        "peak_rss_bytes": footprint::rss().1,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "reps": args.reps,
        "generation_config": args.generation_config,
        "prefill": prefills,
        "decode": decodes,
    });
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{}", serde_json::to_string_pretty(&report)?),
        Some(p) => {
            std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("cannot write `{}`", p.display()))?;
            print_table(&report);
        }
        None => print_table(&report),
    }
    Ok(())
}

/// The GPU memory in use (total - free, as the driver reports it) above what was in use before the
/// model loaded: an upper estimate of this process's footprint (other processes' growth and the
/// allocator's pool count too); sampled after each run, the largest kept.
struct GpuMemory {
    device: lmgen::models::Device,
    baseline: Option<usize>,
    peak: std::cell::Cell<usize>,
}

impl GpuMemory {
    fn new(device: &lmgen::models::Device) -> Self {
        let used = lmgen::device::memory_info(device).map(|(free, total)| total - free);
        Self {
            device: device.clone(),
            baseline: used,
            peak: std::cell::Cell::new(used.unwrap_or(0)),
        }
    }

    fn sample(&self) {
        if let Some((free, total)) = lmgen::device::memory_info(&self.device) {
            self.peak.set(self.peak.get().max(total - free));
        }
    }

    /// The peak so far above the baseline; `None` on the CPU.
    fn used(&self) -> Option<usize> {
        self.baseline.map(|b| self.peak.get().saturating_sub(b))
    }
}

fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mib = |v: &Value| f(v) / (1 << 20) as f64;
    println!(
        "model {} ({}), {}{}, on {}, {} threads; bandwidth ({}) {:.1} GB/s; weights read per step {:.1} MiB",
        r["model"].as_str().unwrap_or("?"),
        r["model_type"].as_str().unwrap_or("?"),
        r["dtype"].as_str().unwrap_or("?"),
        r["quantize"].as_str().map(|q| format!(" quantized {q}")).unwrap_or_default(),
        r["device"].as_str().unwrap_or("?"),
        r["threads"],
        r["bandwidth_kind"].as_str().unwrap_or("?"),
        f(&r["bandwidth_gb_s"]),
        mib(&r["weight_bytes_read_per_step"]),
    );
    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>10}",
        "run", "tok/s", "TTFT ms", "bound tok/s", "% bound"
    );
    for p in r["prefill"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>12} {:>10}",
            format!("prefill {}", p["prompt_len"]),
            f(&p["tok_s"]),
            1e3 * f(&p["ttft_s"]),
            "-",
            "-"
        );
    }
    for d in r["decode"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>12.1} {:>9.0}%",
            format!("decode batch {}", d["batch"]),
            f(&d["tok_s"]),
            1e3 * f(&d["ttft_s"]),
            f(&d["bound_tok_s"]),
            100.0 * f(&d["fraction_of_bound"]),
        );
    }
    if r["peak_rss_bytes_batch1"].is_number() {
        println!(
            "peak RSS {:.0} MiB after load + batch-1 decode (weights + KV {:.0} MiB: {:.2}x); {:.0} MiB at the end",
            mib(&r["peak_rss_bytes_batch1"]),
            mib(&r["weights_plus_kv_batch1_bytes"]),
            f(&r["peak_rss_bytes_batch1"]) / f(&r["weights_plus_kv_batch1_bytes"]),
            mib(&r["peak_rss_bytes"]),
        );
    } else {
        println!(
            "peak RSS {:.0} MiB at the end (no batch-1 decode run to compare with weights + KV)",
            mib(&r["peak_rss_bytes"]),
        );
    }
    if r["gpu_memory_bytes"].is_number() {
        println!(
            "GPU memory in use above the start: {:.0} MiB after batch-1 decode, {:.0} MiB at the peak",
            mib(&r["gpu_memory_bytes_batch1"]),
            mib(&r["gpu_memory_bytes"]),
        );
    }
}
