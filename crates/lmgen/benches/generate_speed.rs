//! Generation speed on any device: time to first token and prefill over a long prompt, batch-1
//! decode (tokens/s and inter-token latency), and batched greedy throughput. Prints one JSON
//! object per measurement, so a driver (tools/gpu_compare.py on the device machine) can put it
//! next to transformers on the same ids.
//!
//! ```text
//! cargo bench -p lmgen --bench generate_speed -- --model DIR [--device cuda] [--dtype bf16]
//!     [--ids ids.json] [--prompt 128] [--new 128] [--prefill 512] [--batches 1,8,32,64] [--reps 3]
//! generate_speed --check-kernels --device cuda   # lmgen's fused kernels against candle's ops
//! generate_speed --bench-kernels --device cuda   # their timings beside what they replace
//! generate_speed --fused ...                      # with them (the default)
//! generate_speed --no-fused ...                   # without them (candle's ops only)
//! ```
//!
//! `ids.json` (optional): `{"prompts": [[...], ...], "long": [...]}`: batch rows of `--prompt`
//! tokens and one prompt of `--prefill` tokens. Without it the ids are a fixed pseudo-random
//! sequence below the vocabulary size. EOS is ignored (no `eos_token_id`): every row generates
//! exactly `--new` tokens, as transformers with `min_new_tokens == max_new_tokens`.
//!
//! Definitions (the same in the driver's transformers runs):
//! - `ttft_s`: a `generate` call with `max_new_tokens = 1` on the long prompt; `prefill_tok_s =
//!   prefill / ttft_s`.
//! - `decode_tok_s`: batch 1, `(new - 1) / (t_last - t_first)` from the times each token reaches
//!   the host (a streamer).
//! - `throughput_tok_s`: batch B, `B * new / wall time of the whole call` (prefill included).

use std::time::Instant;

use lmgen::device;
use lmgen::generation::streamer::TokenStreamer;
use lmgen::generation::{generate_with, GenerateOptions};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, DType, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig, TokenId};
use serde_json::json;

/// Command-line settings.
#[derive(Debug)]
struct Args {
    model: String,
    device: String,
    dtype: DType,
    ids: Option<String>,
    prompt: usize,
    new: usize,
    prefill: usize,
    batches: Vec<usize>,
    reps: usize,
    /// `--check-kernels`: run lmgen's fused-kernel checks on the device and exit.
    check_kernels: bool,
    /// `--bench-kernels`: time lmgen's decode kernels beside what they replace, and exit.
    bench_kernels: bool,
    /// `--fused` / `--no-fused`: with or without lmgen's CUDA fast paths (fused kernels, no
    /// event tracking), an A/B of one build; without either, `LMGEN_CUDA_KERNELS` decides (on
    /// unless it is `candle`).
    fused: Option<bool>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        model: String::new(),
        device: "cpu".into(),
        dtype: DType::F32,
        ids: None,
        prompt: 128,
        new: 128,
        prefill: 512,
        batches: vec![1, 8, 32, 64],
        reps: 3,
        check_kernels: false,
        bench_kernels: false,
        fused: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue; // cargo bench passes it
        }
        match flag.as_str() {
            "--check-kernels" | "--bench-kernels" => {
                a.check_kernels = flag == "--check-kernels";
                a.bench_kernels = flag == "--bench-kernels";
                a.fused = Some(true);
                continue;
            }
            "--fused" | "--no-fused" => {
                a.fused = Some(flag == "--fused");
                continue;
            }
            _ => {}
        }
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("`{flag}` needs a value"))
        };
        match flag.as_str() {
            "--model" => a.model = value()?,
            "--device" => a.device = value()?,
            "--dtype" => {
                a.dtype = match value()?.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    other => anyhow::bail!("`--dtype {other}`: use f32, f16 or bf16"),
                }
            }
            "--ids" => a.ids = Some(value()?),
            "--prompt" => a.prompt = value()?.parse()?,
            "--new" => a.new = value()?.parse()?,
            "--prefill" => a.prefill = value()?.parse()?,
            "--reps" => a.reps = value()?.parse()?,
            "--batches" => {
                a.batches = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => anyhow::bail!("unknown argument `{other}`"),
        }
    }
    anyhow::ensure!(
        a.check_kernels || a.bench_kernels || !a.model.is_empty(),
        "`--model DIR` is required"
    );
    Ok(a)
}

/// Records when each step's tokens reach the host.
#[derive(Default)]
struct Clock {
    times: Vec<Instant>,
}

impl TokenStreamer for Clock {
    fn put(&mut self, _tokens: &[TokenId]) -> lmgen::Result<()> {
        self.times.push(Instant::now());
        Ok(())
    }
    fn end(&mut self) -> lmgen::Result<()> {
        Ok(())
    }
}

fn config(new: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: Some(new),
        do_sample: Some(false),
        ..GenerationConfig::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pseudo-random ids below `vocab` (a fixed LCG: the same on every run).
fn fixed_ids(n: usize, vocab: usize, salt: u64) -> Vec<TokenId> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) % vocab as u64) as TokenId
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(on) = args.fused {
        lmgen::cuda::set_enabled(on); // before the device opens
    }
    let dev = device::parse(&args.device)?;
    if args.check_kernels {
        // lmgen's fused kernels against the candle ops they replace (GPU only).
        for line in lmgen::cuda::self_test::run(&dev)? {
            println!("{line}");
        }
        return Ok(());
    }
    if args.bench_kernels {
        for line in lmgen::cuda::kernel_bench::run(&dev)? {
            println!("{line}");
        }
        return Ok(());
    }
    let t0 = Instant::now();
    let options = LoadOptions {
        dtype: Some(args.dtype),
        device: dev.clone(),
        ..LoadOptions::default()
    };
    let model = load_model(
        &Checkpoint::open(std::path::Path::new(&args.model))?,
        &options,
    )?;
    lmgen::allocator::reuse_freed_memory();
    let model: &dyn CausalLM = model.as_ref();
    let vocab = model.config().vocab_size;
    let load_s = t0.elapsed().as_secs_f64();
    let (prompts, long): (Vec<Vec<TokenId>>, Vec<TokenId>) = match &args.ids {
        Some(path) => {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
            (
                serde_json::from_value(v["prompts"].clone())?,
                serde_json::from_value(v["long"].clone())?,
            )
        }
        None => {
            let max_b = args.batches.iter().copied().max().unwrap_or(1);
            (
                (0..max_b)
                    .map(|i| fixed_ids(args.prompt, vocab, i as u64))
                    .collect(),
                fixed_ids(args.prefill, vocab, 1 << 20),
            )
        }
    };
    let dtype = format!("{:?}", args.dtype).to_lowercase();
    let base = json!({"engine": "lmgen", "model": args.model, "device": device::name(&dev), "dtype": dtype});
    let emit = |metric: &str, fields: serde_json::Value| {
        let mut o = base.clone();
        o["metric"] = json!(metric);
        if let (Some(o), Some(f)) = (o.as_object_mut(), fields.as_object()) {
            o.extend(f.clone());
        }
        println!("{o}");
    };
    emit("load", json!({"seconds": load_s}));

    // Warm-up: kernels loaded, cuBLAS handles and workspaces made, allocator primed.
    let one = GenerateInput::single(prompts[0].clone());
    generate(model, &one, &config(8))?;
    generate(model, &GenerateInput::single(long.clone()), &config(1))?;

    // Prefill: time to first token on the long prompt.
    let long_in = GenerateInput::single(long.clone());
    let ttft: Vec<f64> = (0..args.reps)
        .map(|_| {
            let t = Instant::now();
            generate(model, &long_in, &config(1)).map(|_| t.elapsed().as_secs_f64())
        })
        .collect::<lmgen::Result<_>>()?;
    let ttft = median(ttft);
    emit(
        "prefill",
        json!({"prompt": long.len(), "ttft_s": ttft, "prefill_tok_s": long.len() as f64 / ttft}),
    );

    // Batch-1 decode, timed token by token.
    let mut decode = Vec::new();
    let mut gaps_all = Vec::new();
    let mut ttft1 = Vec::new();
    for _ in 0..args.reps {
        let mut clock = Clock::default();
        let start = Instant::now();
        generate_with(
            model,
            &one,
            &config(args.new),
            GenerateOptions {
                streamer: Some(&mut clock),
                ..GenerateOptions::default()
            },
        )?;
        // times[0] is the prompt (before prefill), then one entry per new token.
        let tok = &clock.times[1..];
        ttft1.push((tok[0] - start).as_secs_f64());
        decode.push((tok.len() - 1) as f64 / (tok[tok.len() - 1] - tok[0]).as_secs_f64());
        gaps_all.extend(tok.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()));
    }
    gaps_all.sort_by(f64::total_cmp);
    let pct = |p: f64| gaps_all[((gaps_all.len() - 1) as f64 * p).round() as usize];
    emit(
        "decode_b1",
        json!({"prompt": args.prompt, "new": args.new, "decode_tok_s": median(decode),
               "ttft_s": median(ttft1), "itl_p50_ms": pct(0.5) * 1e3, "itl_p99_ms": pct(0.99) * 1e3}),
    );

    // Batched throughput.
    for &b in &args.batches {
        anyhow::ensure!(
            b <= prompts.len(),
            "batch {b} needs {b} prompts in the ids file"
        );
        let input = GenerateInput {
            input_ids: prompts[..b].to_vec(),
            attention_mask: None,
        };
        let mut walls = Vec::new();
        for _ in 0..args.reps.min(2) {
            let t = Instant::now();
            let out = generate(model, &input, &config(args.new))?;
            let wall = t.elapsed().as_secs_f64();
            anyhow::ensure!(out
                .sequences
                .iter()
                .all(|s| s.len() == args.prompt + args.new));
            walls.push(wall);
        }
        let wall = median(walls);
        emit(
            "batch",
            json!({"batch": b, "prompt": args.prompt, "new": args.new, "wall_s": wall,
                   "throughput_tok_s": (b * args.new) as f64 / wall}),
        );
    }
    // Greedy tokens of the batch-1 run, for the correctness check against the peer.
    let out = generate(model, &one, &config(32))?;
    emit("tokens", json!({"generated": out.generated(0)}));
    Ok(())
}
