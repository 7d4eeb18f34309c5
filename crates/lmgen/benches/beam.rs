//! Beam search cost: `num_beams` 4 against greedy at batch 1 and a greedy batch of 4 on the same
//! model. Beams run as one batch of 4 rows, so their cost should be near the batch of 4, not 4
//! separate runs.
//!
//! Run: `cargo bench -p lmgen --bench beam` (writes the SmolLM2-135M-shaped checkpoint once, as
//! the kv_cache bench does). `LMGEN_BENCH_TOKENS=64` sets the new tokens.

use std::path::Path;
use std::time::Instant;

use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, DType, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig};

fn time(
    model: &dyn CausalLM,
    input: &GenerateInput,
    config: &GenerationConfig,
) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let out = generate(model, input, config)?;
    let secs = start.elapsed().as_secs_f64();
    Ok((secs, out.sequences[0].len() - out.prompt_len))
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
    let n: usize = std::env::var("LMGEN_BENCH_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let prompt: Vec<u32> = (0..16).map(|i| 100 + 37 * i).collect();
    let config = |beams: usize| GenerationConfig {
        max_new_tokens: Some(n),
        min_new_tokens: Some(n),
        num_beams: Some(beams),
        ..GenerationConfig::default()
    };
    let one = GenerateInput::single(prompt.clone());
    let four = GenerateInput {
        input_ids: vec![prompt.clone(); 4],
        attention_mask: None,
    };
    generate(
        model.as_ref(),
        &one,
        &GenerationConfig {
            max_new_tokens: Some(4),
            ..GenerationConfig::default()
        },
    )?;
    println!("model: SmolLM2-135M shape, random weights, f32, CPU, prompt 16 tokens, {n} new tokens, EOS ignored");
    println!(
        "{:<24} {:>9} {:>14} {:>16}",
        "run", "seconds", "steps/s", "row-tokens/s"
    );
    let rows = [
        ("greedy, batch 1", &one, 1, 1),
        ("greedy, batch 4", &four, 1, 4),
        ("beam search, 4 beams", &one, 4, 4),
    ];
    for (name, input, beams, width) in rows {
        let (secs, steps) = time(model.as_ref(), input, &config(beams))?;
        println!(
            "{name:<24} {secs:>9.2} {:>14.2} {:>16.2}",
            steps as f64 / secs,
            (steps * width) as f64 / secs
        );
    }
    Ok(())
}
