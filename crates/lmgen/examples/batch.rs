//! The full path: checkpoint -> model -> left-padded batch -> generate() with scores.
//!
//! `cargo run -p lmgen --example batch`

use lmgen::generation::config::UnknownFields;
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, LoadOptions};
use lmgen::{generate, GenerationConfig, Tokenizer};

fn main() -> lmgen::Result<()> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    let checkpoint = Checkpoint::open(&dir)?;
    let model = load_model(&checkpoint, &LoadOptions::default())?;
    let tokenizer = Tokenizer::from_dir(&dir)?;

    // Checkpoint defaults < caller overrides (here given as JSON, the way a request would).
    let mut config = GenerationConfig::from_pretrained(&dir)?;
    let overrides = serde_json::json!({"max_new_tokens": 6, "output_scores": true, "return_dict_in_generate": true});
    config.update(&GenerationConfig::from_json(
        &overrides,
        UnknownFields::Reject,
    )?);

    let prompts = ["The quick brown fox", "Hi"];
    let rows = prompts
        .iter()
        .map(|p| tokenizer.encode(p))
        .collect::<lmgen::Result<Vec<_>>>()?;
    // No pad token in this tokenizer: pad with the first EOS id, as transformers does.
    let pad = config.pad_token_id_or_eos().unwrap_or(0);
    let input = lmgen::GenerateInput::left_padded(rows, pad);

    let out = generate(model.as_ref(), &input, &config)?;
    let transition = out.compute_transition_scores(true)?;
    for (i, prompt) in prompts.iter().enumerate() {
        let text = tokenizer.decode(out.generated(i), true)?;
        println!("{prompt:?} -> {text:?} ({:?})", out.finish_reasons[i]);
        println!("  log-probs of the chosen tokens: {:?}", transition[i]);
    }
    Ok(())
}
