//! Structured output's cost per generated token: the same model and prompt decoded freely and
//! under a JSON schema, and the grammar's own time per step (computing the token mask and
//! applying it), measured inside the processor.
//!
//! The model is any checkpoint directory (`LMGEN_BENCH_MODEL`; the mask's cost grows with the
//! vocabulary, so use one with a real-sized tokenizer, e.g. a random-weight Qwen2.5-0.5B made by
//! `lmgen init-random` beside a 151k-token tokenizer). The free run generates exactly
//! `LMGEN_BENCH_TOKENS` tokens (`min_new_tokens`); the constrained one at most that many (the
//! schema, an array of free strings, lets the model continue long but also close it), and its
//! time is divided by the tokens it made. Medians of `LMGEN_BENCH_RUNS` runs after a warm-up,
//! interleaved.
//!
//! Run: `LMGEN_BENCH_MODEL=DIR cargo bench -p lmgen --bench structured`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lmgen::generation::logits::{LogitsProcessor, Scores};
use lmgen::generation::structured::{Grammar, GrammarLogitsProcessor};
use lmgen::generation::GenerateOptions;
use lmgen::{GenerationConfig, Pipeline, TokenId};
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

/// The grammar processor, timed.
struct Timed {
    inner: GrammarLogitsProcessor,
    spent: Arc<Mutex<(Duration, usize)>>,
}

impl LogitsProcessor for Timed {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> lmgen::Result<()> {
        let t = Instant::now();
        let r = self.inner.process(input_ids, scores);
        let mut s = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        s.0 += t.elapsed();
        s.1 += 1;
        r
    }
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::var("LMGEN_BENCH_MODEL")
        .unwrap_or_else(|_| "crates/lmgen/tests/fixtures/golden/models/llama".into());
    let tokens = env("LMGEN_BENCH_TOKENS", 64);
    let runs = env("LMGEN_BENCH_RUNS", 5);
    let pipe = Pipeline::from_pretrained(&dir)?;
    let t = Instant::now();
    let compiler = pipe.structured_output(&GenerationConfig::default())?;
    let index_ms = t.elapsed().as_secs_f64() * 1e3;
    let grammar = Grammar::JsonSchema(json!({
        "type": "array",
        "items": {"type": "string"},
    }));
    let t = Instant::now();
    let compiled = compiler.processor(&grammar)?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let input = pipe.encode_prompts(
        &["Here is a list of names in JSON:".to_string()],
        &GenerationConfig::default(),
    )?;
    let config = GenerationConfig {
        max_new_tokens: Some(tokens),
        min_new_tokens: Some(tokens),
        do_sample: Some(false),
        ..GenerationConfig::default()
    };
    let constrained_config = GenerationConfig {
        min_new_tokens: None,
        ..config.clone()
    };
    let mut free = Vec::new();
    let mut constrained = Vec::new();
    let mut mask = Vec::new();
    let mut made_tokens = Vec::new();
    for run in 0..=runs {
        let t = Instant::now();
        let out = pipe.generate(&input, &config)?;
        let f = t.elapsed().as_secs_f64();
        assert_eq!(out.generated(0).len(), tokens);
        let spent = Arc::new(Mutex::new((Duration::ZERO, 0)));
        let options = GenerateOptions {
            logits_processors: vec![Box::new(Timed {
                inner: compiled.restart(),
                spent: spent.clone(),
            })],
            ..GenerateOptions::default()
        };
        let t = Instant::now();
        let out = pipe.generate_with(&input, &constrained_config, options)?;
        let c = t.elapsed().as_secs_f64();
        let made = out.generated(0).len();
        let text = pipe.tokenizer.decode(out.generated(0), true)?;
        let (spent, steps) = *spent.lock().unwrap_or_else(|p| p.into_inner());
        if run == 0 {
            println!(
                "constrained output: {}",
                text.chars().take(120).collect::<String>()
            );
            continue;
        }
        free.push(f / tokens as f64 * 1e3);
        constrained.push(c / made as f64 * 1e3);
        made_tokens.push(made as f64);
        mask.push(spent.as_secs_f64() / steps.max(1) as f64 * 1e3);
    }
    println!(
        "model {dir}: vocabulary {}, {tokens} tokens, {runs} runs (medians)",
        pipe.tokenizer.vocab_size()
    );
    println!("index the vocabulary once: {index_ms:.1} ms; compile the schema: {compile_ms:.2} ms");
    let (f, c, m) = (median(&free), median(&constrained), median(&mask));
    println!("| run | ms/token | tokens/s |");
    println!("|---|---|---|");
    println!("| free | {f:.2} | {:.1} |", 1e3 / f);
    println!(
        "| JSON schema ({} tokens) | {c:.2} | {:.1} |",
        median(&made_tokens),
        1e3 / c
    );
    println!(
        "grammar per step: {m:.3} ms ({:.1}% of a constrained step); overhead {:.1}%",
        100.0 * m / c,
        100.0 * (c / f - 1.0)
    );
    Ok(())
}
