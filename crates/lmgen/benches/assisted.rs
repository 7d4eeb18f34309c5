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
//! Then the shipped pair (`models/tiny-austen` with `models/tiny-austen-draft`, trained weights):
//! greedy against assisted decoding with the real draft, and prompt lookup, over a few English
//! prompts, where acceptance is what a trained draft actually achieves.
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
    lmgen::allocator::reuse_freed_memory();
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
    shipped_pair(&root, runs)
}

/// Greedy, draft-assisted and prompt-lookup decoding of the shipped tiny-austen pair over a few
/// prompts (64 new tokens each, EOS ignored, transformers' default draft settings: 20 tokens,
/// "constant" schedule, confidence threshold 0.4), summed over the prompts.
fn shipped_pair(root: &Path, runs: usize) -> anyhow::Result<()> {
    let main_dir = root.join("models/tiny-austen");
    let draft_dir = root.join("models/tiny-austen-draft");
    let target = load_model(&Checkpoint::open(&main_dir)?, &LoadOptions::default())?;
    let draft = load_model(&Checkpoint::open(&draft_dir)?, &LoadOptions::default())?;
    let tokenizer = lmgen::tokenizer::Tokenizer::from_dir(&main_dir)?;
    let prompts = [
        "It is a truth universally acknowledged, that",
        "Mrs. Bennet was quite",
        "\"My dear Emma,\" said Mr. Knightley,",
        "The next morning Elizabeth",
    ];
    let inputs: Vec<GenerateInput> = prompts
        .iter()
        .map(|p| Ok(GenerateInput::single(tokenizer.encode(p)?)))
        .collect::<anyhow::Result<_>>()?;
    let n = 64;
    let config = |extra: serde_json::Value| -> anyhow::Result<GenerationConfig> {
        let mut fields = json!({"do_sample": false, "max_new_tokens": n, "min_new_tokens": n});
        if let (Some(f), Some(e)) = (fields.as_object_mut(), extra.as_object()) {
            f.extend(e.clone());
        }
        Ok(GenerationConfig::from_json(
            &fields,
            lmgen::generation::config::UnknownFields::Reject,
        )?)
    };
    // (name, config, use the draft model)
    let rows = [
        ("greedy", config(json!({}))?, false),
        ("draft model (defaults)", config(json!({}))?, true),
        (
            "draft model, constant 4",
            config(
                json!({"num_assistant_tokens": 4, "num_assistant_tokens_schedule": "constant"}),
            )?,
            true,
        ),
        (
            "prompt lookup, 10 tokens",
            config(json!({"prompt_lookup_num_tokens": 10}))?,
            false,
        ),
    ];
    let expected: Vec<_> = inputs
        .iter()
        .map(|i| Ok(generate(target.as_ref(), i, &rows[0].1)?.sequences))
        .collect::<anyhow::Result<_>>()?;
    let mut secs = vec![Vec::new(); rows.len()];
    let mut stats = vec![(0usize, 0usize); rows.len()];
    for round in 0..=runs {
        for (r, (name, cfg, use_draft)) in rows.iter().enumerate() {
            let start = Instant::now();
            let mut totals = (0, 0);
            for (input, want) in inputs.iter().zip(&expected) {
                let options = GenerateOptions {
                    assistant_model: use_draft.then_some(draft.as_ref()),
                    ..GenerateOptions::default()
                };
                let out = generate_with(target.as_ref(), input, cfg, options)?;
                anyhow::ensure!(&out.sequences == want, "{name}: not greedy's output");
                if let Some(s) = out.assisted {
                    totals.0 += s.drafted;
                    totals.1 += s.accepted;
                }
            }
            if round > 0 {
                secs[r].push(start.elapsed().as_secs_f64());
            }
            stats[r] = totals;
        }
    }
    let tokens = n * prompts.len();
    println!(
        "\nmodel: models/tiny-austen (14.2M, bf16 weights, f32 compute) with models/tiny-austen-draft \
         (0.9M), CPU, batch 1, {} prompts x {n} new tokens (EOS ignored), median of {runs}",
        prompts.len()
    );
    println!(
        "{:<32} {:>8} {:>9} {:>8} {:>8} {:>9} {:>11}",
        "run", "seconds", "tokens/s", "speedup", "drafted", "accepted", "acceptance"
    );
    let base = median(&secs[0]);
    for (r, (name, _, _)) in rows.iter().enumerate() {
        let t = median(&secs[r]);
        let (drafted, accepted) = stats[r];
        let (d, a, rate) = if r == 0 {
            ("-".into(), "-".into(), "-".into())
        } else {
            (
                drafted.to_string(),
                accepted.to_string(),
                format!("{:.1}%", 100.0 * accepted as f64 / drafted.max(1) as f64),
            )
        };
        println!(
            "{name:<32} {t:>8.2} {:>9.2} {:>7.2}x {d:>8} {a:>9} {rate:>11}",
            tokens as f64 / t,
            base / t
        );
    }
    Ok(())
}
