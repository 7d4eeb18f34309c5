//! Assisted decoding against plain greedy decoding on a SmolLM2-135M-shaped checkpoint (random
//! weights): wall-clock speedup and acceptance for
//! (a) the model as its own draft (every candidate accepted: the acceptance ceiling, paying a full
//!     forward per drafted token),
//! (b) prompt lookup on a prompt whose continuation repeats it,
//! (c) early exit (the first layers as the draft) at a few depths.
//!
//! Every run generates the same tokens as greedy (checked). Medians of `LMGEN_BENCH_RUNS` (5) runs
//! after a warm-up, interleaved. The confidence threshold is off (random weights give every token a
//! tiny probability, which would stop every draft after one token).
//!
//! Run: `cargo bench -p lmgen --bench assisted` (`LMGEN_BENCH_TOKENS=32`, `LMGEN_BENCH_RUNS=5`).

use std::path::Path;
use std::time::Instant;

use lmgen::generation::candidates::AssistedStats;
use lmgen::generation::{generate_with, GenerateOptions};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, DType, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

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

/// One configuration of the comparison.
struct Run {
    name: String,
    config: GenerationConfig,
    self_draft: bool,
    secs: Vec<f64>,
    stats: Option<AssistedStats>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("target/bench-checkpoints/smollm2-135m-f32");
    if !dir.join("model.safetensors").is_file() {
        let text = std::fs::read_to_string(root.join("benches/configs/smollm2-135m.json"))?;
        lmgen::init::init_random(&serde_json::from_str(&text)?, DType::F32, &dir, 0)?;
    }
    let model = load_model(&Checkpoint::open(&dir)?, &LoadOptions::default())?;
    let model: &dyn CausalLM = model.as_ref();
    let n = env("LMGEN_BENCH_TOKENS", 32);
    let runs = env("LMGEN_BENCH_RUNS", 5);
    let layers = model.config().num_hidden_layers;

    // A prompt whose continuation repeats it: greedy output of a seed prompt, cut in the middle. The
    // greedy continuation of that prefix is the rest of the output, which prompt lookup finds when it
    // repeats n-grams of the prompt.
    let seed: Vec<u32> = (0..16).map(|i| 100 + 37 * i).collect();
    let fixed = |tokens: usize, extra: serde_json::Value| -> anyhow::Result<GenerationConfig> {
        let mut fields = json!({"max_new_tokens": tokens, "min_new_tokens": tokens,
                                "assistant_confidence_threshold": 0.0});
        fields
            .as_object_mut()
            .unwrap_or(&mut serde_json::Map::new())
            .extend(extra.as_object().cloned().unwrap_or_default());
        Ok(GenerationConfig::from_json(
            &fields,
            lmgen::generation::config::UnknownFields::Reject,
        )?)
    };
    let lead = generate(
        model,
        &GenerateInput::single(seed.clone()),
        &fixed(48, json!({}))?,
    )?;
    let prompt: Vec<u32> = lead.sequences[0].clone();
    let input = GenerateInput::single(prompt.clone());

    let mut table = vec![Run {
        name: "greedy".into(),
        config: fixed(n, json!({}))?,
        self_draft: false,
        secs: Vec::new(),
        stats: None,
    }];
    let mut add = |name: String, extra, self_draft| -> anyhow::Result<()> {
        table.push(Run {
            name,
            config: fixed(n, extra)?,
            self_draft,
            secs: Vec::new(),
            stats: None,
        });
        Ok(())
    };
    add(
        "(a) self-draft, 8 tokens".into(),
        json!({"num_assistant_tokens": 8}),
        true,
    )?;
    add(
        "(b) prompt lookup, 10 tokens".into(),
        json!({"prompt_lookup_num_tokens": 10}),
        false,
    )?;
    for k in [layers / 4, layers / 2, layers] {
        add(
            format!("(c) early exit {k}/{layers}, 8 tokens"),
            json!({"assistant_early_exit": k, "num_assistant_tokens": 8}),
            false,
        )?;
    }

    let expected = generate(model, &input, &table[0].config)?.sequences;
    for round in 0..=runs {
        for run in &mut table {
            let options = GenerateOptions {
                assistant_model: run.self_draft.then_some(model),
                ..GenerateOptions::default()
            };
            let start = Instant::now();
            let out = generate_with(model, &input, &run.config, options)?;
            let secs = start.elapsed().as_secs_f64();
            anyhow::ensure!(
                out.sequences == expected,
                "{}: not greedy's output",
                run.name
            );
            if round > 0 {
                run.secs.push(secs); // round 0 warms up
            }
            run.stats = out.assisted;
        }
    }

    println!(
        "model: SmolLM2-135M shape ({layers} layers), random weights, f32, CPU, batch 1, prompt {} tokens, \
         {n} new tokens (EOS ignored), median of {runs}",
        prompt.len()
    );
    println!(
        "{:<32} {:>8} {:>9} {:>8} {:>8} {:>9} {:>11}",
        "run", "seconds", "tokens/s", "speedup", "drafted", "accepted", "acceptance"
    );
    let base = median(&table[0].secs);
    for run in &table {
        let secs = median(&run.secs);
        let (drafted, accepted, rate) = match &run.stats {
            Some(s) => (
                s.drafted.to_string(),
                s.accepted.to_string(),
                format!("{:.1}%", 100.0 * s.acceptance_rate()),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<32} {secs:>8.2} {:>9.2} {:>7.2}x {drafted:>8} {accepted:>9} {rate:>11}",
            run.name,
            n as f64 / secs,
            base / secs
        );
    }
    println!("peak RSS: {:.0} MiB", peak_rss_mib());
    Ok(())
}
