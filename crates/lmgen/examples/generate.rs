//! The one-call path: a checkpoint folder (or a model id in the HF cache) in, text out.
//!
//! `cargo run -p lmgen --example generate -- [MODEL] [PROMPT]`
//! (defaults: the small model trained on Jane Austen's novels shipped in the repo,
//! `models/tiny-austen`, and "Once upon a time").

use lmgen::{GenerationConfig, Pipeline};

fn main() -> lmgen::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny-austen").to_string()
    });
    let prompt = args
        .next()
        .unwrap_or_else(|| "Once upon a time".to_string());

    let pipe = Pipeline::from_pretrained(&model)?;
    // Caller fields override the checkpoint's generation_config.json, as in transformers.
    // tiny-austen samples (temperature 0.8, top-p 0.9); this asks for greedy decoding instead.
    let overrides = GenerationConfig {
        max_new_tokens: Some(40),
        do_sample: Some(false),
        repetition_penalty: Some(1.1),
        ..GenerationConfig::default()
    };
    let text = pipe.generate_text(&prompt, &overrides)?;
    println!("{prompt}{text}");
    Ok(())
}
