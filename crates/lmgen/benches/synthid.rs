//! SynthID watermarking's cost per generated token: the processor alone on one row of random
//! scores for several vocabulary sizes and depths (its work is `vocab * depth` hashes and the
//! tournament), and greedy `generate()` on a checkpoint with and without it.
//!
//! The model is any checkpoint directory (`LMGEN_BENCH_MODEL`, default the golden llama, vocab 800).
//! Medians of `LMGEN_BENCH_RUNS` runs after a warm-up, interleaved.
//!
//! Run: `cargo bench -p lmgen --bench synthid` (or `--profile dev` for a quick check).

use std::time::Instant;

use lmgen::generation::config::UnknownFields;
use lmgen::generation::logits::{
    LogitsProcessor, Scores, SynthIDTextWatermarkLogitsProcessor, SynthIDTextWatermarkingConfig,
};
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let runs = env("LMGEN_BENCH_RUNS", 5);
    let tokens = env("LMGEN_BENCH_TOKENS", 32);
    println!("processor alone, one row, per call (median of {runs}):");
    for vocab in [800usize, 32_000, 151_936, 262_144] {
        for depth in [4usize, 30] {
            let keys: Vec<i64> = (0..depth as i64).map(|k| 100 + 37 * k).collect();
            let config = SynthIDTextWatermarkingConfig::from_json(
                &json!({"ngram_len": 5, "keys": keys, "context_history_size": 0}),
            )?;
            let p = SynthIDTextWatermarkLogitsProcessor::new(config)?;
            let row: Vec<f32> = (0..vocab)
                .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
                .collect();
            let ids = vec![vec![1u32, 2, 3]];
            let mut times = Vec::new();
            for r in 0..=runs {
                let mut s = Scores::new(row.clone(), 1, vocab);
                let t = Instant::now();
                p.process(&ids, &mut s)?;
                if r > 0 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            println!(
                "  vocab {vocab:>7} depth {depth:>2}: {:8.3} ms",
                median(&times)
            );
        }
    }
    let dir = std::env::var("LMGEN_BENCH_MODEL").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/models/llama"
        )
        .into()
    });
    let pipe = Pipeline::from_pretrained(&dir)?;
    let input = GenerateInput::single(vec![1, 15, 27, 300, 42]);
    let base = json!({"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": false});
    let mut marked = base.clone();
    marked["watermarking_config"] =
        json!({"ngram_len": 5, "keys": [654, 400, 836, 123, 340, 443, 597, 160, 57]});
    let plain = GenerationConfig::from_json(&base, UnknownFields::Reject)?;
    let marked = GenerationConfig::from_json(&marked, UnknownFields::Reject)?;
    let (mut t_plain, mut t_marked) = (Vec::new(), Vec::new());
    for r in 0..=runs {
        for (config, times) in [(&plain, &mut t_plain), (&marked, &mut t_marked)] {
            let t = Instant::now();
            let out = pipe.generate(&input, config)?;
            assert_eq!(out.generated(0).len(), tokens);
            if r > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3 / tokens as f64);
            }
        }
    }
    println!(
        "greedy generate on {dir} (vocab {}), per token: plain {:.3} ms, SynthID (depth 9) {:.3} ms",
        pipe.model.config().vocab_size,
        median(&t_plain),
        median(&t_marked)
    );
    Ok(())
}
