//! Weights quantized at load (`LoadOptions::quantize`) stay close to f32: logits on a prompt and
//! greedy continuations of the golden checkpoints. (The golden models' rows are too short for
//! Q4_K's 256-weight super-blocks, so they test Q8_0; Q4_K's agreement on real shapes is in
//! BENCHMARKS.md.)
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, LoadOptions, Quantization};
use lmgen::{generate, GenerateInput, GenerationConfig};

const PROMPT: [u32; 8] = [1, 56, 386, 225, 462, 340, 79, 297];

fn load(name: &str, quantize: Option<Quantization>) -> Box<dyn CausalLM> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/models")
        .join(name);
    let options = LoadOptions {
        quantize,
        ..LoadOptions::default()
    };
    load_model(&Checkpoint::open(&dir).unwrap(), &options).unwrap()
}

fn logits(model: &dyn CausalLM, tokens: &[u32]) -> Vec<Vec<f32>> {
    common::all_logits(model, tokens)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn argmax(r: &[f32]) -> usize {
    r.iter()
        .enumerate()
        .fold(0, |b, (i, &x)| if x > r[b] { i } else { b })
}

#[test]
fn q8_0_logits_and_greedy_tokens_stay_close_to_f32() {
    for name in ["llama", "qwen2"] {
        let exact = load(name, None);
        let quant = load(name, Some(Quantization::Q8_0));
        // f32's greedy continuation, then both models over it (teacher forcing): every position
        // is compared on the same prefix, so one near-tie does not derail the rest.
        let config = GenerationConfig {
            max_new_tokens: Some(24),
            ..GenerationConfig::default()
        };
        let input = GenerateInput::single(PROMPT.to_vec());
        let sequence = generate(exact.as_ref(), &input, &config).unwrap().sequences[0].clone();
        let (a, b) = (
            logits(exact.as_ref(), &sequence),
            logits(quant.as_ref(), &sequence),
        );
        // Relative RMS error of the logits.
        let (mut err, mut norm) = (0f64, 0f64);
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            err += f64::from(x - y).powi(2);
            norm += f64::from(*x).powi(2);
        }
        let rel = (err / norm).sqrt();
        let agree = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| argmax(x) == argmax(y))
            .count();
        eprintln!(
            "{name}: Q8_0 logits rel. RMS error {rel:.4}, argmax agrees at {agree}/{} positions",
            a.len()
        );
        // Q8_0 rounds each weight to 1/254 of its block's range and each activation likewise
        // (the product runs on Q8 x Q8 blocks): about 0.6% RMS error per product, a few percent
        // after the seven products per layer and the head (measured: 4.6% / 4.9%, argmax 28/32 and
        // 30/32). These random tiny models have near-flat logits, so the bounds are loose sanity
        // bounds (a broken quantization gives errors near 100% and chance agreement).
        assert!(
            rel < 0.1,
            "{name}: Q8_0 logits differ from f32 by {rel:.4} (relative RMS)"
        );
        assert!(
            agree * 4 >= a.len() * 3,
            "{name}: argmax agrees at {agree}/{}",
            a.len()
        );
    }
}
