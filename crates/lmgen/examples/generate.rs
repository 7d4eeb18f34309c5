//! The one-call path: a checkpoint folder (or a model id in the HF cache) in, text out.
//!
//! `cargo run -p lmgen --example generate -- [MODEL] [PROMPT]`
//! (defaults: the tiny golden Llama shipped in the repo, "Hello").

use lmgen::{GenerationConfig, Pipeline};

fn main() -> lmgen::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/models/llama"
        )
        .to_string()
    });
    let prompt = args.next().unwrap_or_else(|| "Hello".to_string());

    let pipe = Pipeline::from_pretrained(&model)?;
    // Caller fields override the checkpoint's generation_config.json, as in transformers.
    let overrides = GenerationConfig {
        max_new_tokens: Some(16),
        repetition_penalty: Some(1.1),
        ..GenerationConfig::default()
    };
    let text = pipe.generate_text(&prompt, &overrides)?;
    println!("{prompt}{text}");
    Ok(())
}
