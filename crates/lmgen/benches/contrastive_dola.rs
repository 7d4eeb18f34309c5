//! Contrastive search and DoLa against greedy search on the same model and prompt.
//!
//! Contrastive search runs its `top_k` candidates as one batch every step and copies the KV cache
//! twice (repeat, then select), so its cost should be near a greedy batch of `top_k` rows. DoLa
//! adds one LM-head projection per candidate layer per step (and keeps every layer's hidden state).
//!
//! Run: `cargo bench -p lmgen --bench contrastive_dola` (writes the SmolLM2-135M-shaped checkpoint
//! once, as the kv_cache bench does). `LMGEN_BENCH_TOKENS=64` sets the new tokens.

use std::path::Path;
use std::time::Instant;

use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, DType, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig};
use serde_json::json;

fn median_secs(
    model: &dyn CausalLM,
    input: &GenerateInput,
    config: &GenerationConfig,
) -> anyhow::Result<(f64, usize)> {
    let mut runs = Vec::new();
    let mut steps = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let out = generate(model, input, config)?;
        runs.push(start.elapsed().as_secs_f64());
        steps = out.sequences[0].len() - out.prompt_len;
    }
    runs.sort_by(f64::total_cmp);
    Ok((runs[1], steps))
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
    let config = |extra: serde_json::Value| -> anyhow::Result<GenerationConfig> {
        let mut fields = json!({"max_new_tokens": n, "min_new_tokens": n});
        if let (Some(f), Some(e)) = (fields.as_object_mut(), extra.as_object()) {
            f.extend(e.clone());
        }
        Ok(GenerationConfig::from_json(
            &fields,
            lmgen::generation::config::UnknownFields::Reject,
        )?)
    };
    let one = GenerateInput::single(prompt.clone());
    let four = GenerateInput {
        input_ids: vec![prompt.clone(); 4],
        attention_mask: None,
    };
    generate(model.as_ref(), &one, &config(json!({"max_new_tokens": 4}))?)?; // warm-up
    println!(
        "model: SmolLM2-135M shape (30 layers, tied head), random weights, f32, CPU, prompt 16 tokens, \
         {n} new tokens, EOS ignored, median of 3"
    );
    println!(
        "{:<34} {:>9} {:>10} {:>12}",
        "run", "seconds", "steps/s", "x greedy"
    );
    let rows = [
        ("greedy, batch 1", &one, json!({})),
        ("greedy, batch 4", &four, json!({})),
        (
            "contrastive, top_k 4",
            &one,
            json!({"penalty_alpha": 0.6, "top_k": 4}),
        ),
        (
            "DoLa \"low\" (7 layers)",
            &one,
            json!({"dola_layers": "low"}),
        ),
        (
            "DoLa \"high\" (8 layers)",
            &one,
            json!({"dola_layers": "high"}),
        ),
        ("DoLa [16] (1 layer)", &one, json!({"dola_layers": [16]})),
    ];
    let mut greedy = None;
    for (name, input, extra) in rows {
        let (secs, steps) = median_secs(model.as_ref(), input, &config(extra)?)?;
        let base = *greedy.get_or_insert(secs);
        println!(
            "{name:<34} {secs:>9.2} {:>10.2} {:>12.2}",
            steps as f64 / secs,
            secs / base
        );
    }
    Ok(())
}
