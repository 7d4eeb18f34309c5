//! GGUF loading (`LoadOptions::gguf_file`, transformers' `from_pretrained(..., gguf_file=...)`).
//!
//! The fixtures in `tests/fixtures/gguf/` were written from the golden `llama` and `qwen2`
//! checkpoints by llama.cpp's own Python package (gguf-py) through `benches/peers/write_gguf.py`,
//! which permutes Llama's q and k rows as `convert_hf_to_gguf.py` does:
//!
//! ```text
//! python3 -m venv target/gguf-venv && target/gguf-venv/bin/pip install gguf numpy
//! for m in llama qwen2; do
//!   target/gguf-venv/bin/python benches/peers/write_gguf.py \
//!     crates/lmgen/tests/fixtures/golden/models/$m crates/lmgen/tests/fixtures/gguf/$m-f32.gguf f32
//!   target/gguf-venv/bin/python benches/peers/write_gguf.py \
//!     crates/lmgen/tests/fixtures/golden/models/$m crates/lmgen/tests/fixtures/gguf/$m-q8_0.gguf q8_0_py
//! done
//! ```
//!
//! (gguf 0.17.1, numpy 2.3.) `q8_0_py` quantizes every 2-D weight with gguf-py's Q8_0, which is
//! bit-exact with ggml's reference quantizer; norms and biases stay f32.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value as Meta};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use lmgen::generation::config::UnknownFields;
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, LoadOptions, Quantization};
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn golden_model(name: &str) -> PathBuf {
    fixtures().join("golden/models").join(name)
}

fn gguf(name: &str, kind: &str) -> PathBuf {
    fixtures().join("gguf").join(format!("{name}-{kind}.gguf"))
}

fn load_gguf(name: &str, kind: &str) -> Box<dyn CausalLM> {
    let checkpoint = Checkpoint::open_gguf(&golden_model(name), &gguf(name, kind)).unwrap();
    load_model(&checkpoint, &LoadOptions::default()).unwrap()
}

fn load_safetensors(name: &str, quantize: Option<Quantization>) -> Box<dyn CausalLM> {
    let options = LoadOptions {
        quantize,
        ..LoadOptions::default()
    };
    load_model(&Checkpoint::open(&golden_model(name)).unwrap(), &options).unwrap()
}

/// `[t, vocab]` logits of every position of `tokens`.
fn logits(model: &dyn CausalLM, tokens: &[u32]) -> Tensor {
    common::all_logits(model, tokens).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn f32_gguf_logits_match_transformers_and_safetensors() {
    let golden =
        candle_core::safetensors::load(fixtures().join("golden/forward.safetensors"), &Device::Cpu)
            .unwrap();
    for name in ["llama", "qwen2"] {
        let from_gguf = load_gguf(name, "f32");
        let from_safetensors = load_safetensors(name, None);
        let config = from_gguf.config();
        assert_eq!(config.vocab_size, 800, "{name}");
        assert_eq!(config.num_key_value_heads, 2, "{name}");
        assert_eq!(config.tie_word_embeddings, name == "qwen2", "{name}");
        for i in 0..2 {
            let ids: Vec<u32> = golden[&format!("{name}.{i}.input_ids")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = &golden[&format!("{name}.{i}.logits")]; // [T, vocab]
            let got = logits(from_gguf.as_ref(), &ids);
            let vs_transformers = max_abs_diff(&got, want);
            let vs_safetensors = max_abs_diff(&got, &logits(from_safetensors.as_ref(), &ids));
            eprintln!(
                "{name}.{i}: f32 GGUF max |diff| vs transformers {vs_transformers:e}, vs \
                 safetensors {vs_safetensors:e}"
            );
            // The same tolerance as golden_forward.rs.
            assert!(
                vs_transformers <= 1e-4,
                "{name}.{i}: max |logit difference| {vs_transformers} > 1e-4"
            );
            assert!(
                vs_safetensors <= 1e-5,
                "{name}.{i}: GGUF and safetensors differ by {vs_safetensors}"
            );
        }
    }
}

#[test]
fn golden_greedy_cases_pass_through_the_gguf_model() {
    let text = std::fs::read_to_string(fixtures().join("golden/generate.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut checked = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let model = case["model"].as_str().unwrap();
        if !name.starts_with("greedy") || !["llama", "qwen2"].contains(&model) {
            continue;
        }
        let pipe = pipes.entry(model.to_string()).or_insert_with(|| {
            let options = LoadOptions {
                gguf_file: Some(gguf(model, "f32")),
                ..LoadOptions::default()
            };
            Pipeline::load(golden_model(model).to_str().unwrap(), &options).unwrap()
        });
        let overrides =
            GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject).unwrap();
        let input = GenerateInput {
            input_ids: serde_json::from_value(case["input_ids"].clone()).unwrap(),
            attention_mask: Some(serde_json::from_value(case["attention_mask"].clone()).unwrap()),
        };
        let out = pipe.generate(&input, &overrides).unwrap();
        let want: Vec<Vec<u32>> =
            serde_json::from_value(case["expected"]["sequences"].clone()).unwrap();
        assert_eq!(out.sequences, want, "{model}/{name}");
        checked += 1;
    }
    assert_eq!(checked, 7, "expected 4 llama and 3 qwen2 greedy cases");
}

fn argmax(r: &[f32]) -> usize {
    r.iter()
        .enumerate()
        .fold(0, |b, (i, &x)| if x > r[b] { i } else { b })
}

/// Relative RMS error of `b` against `a`, and at how many positions their argmax agrees.
fn agreement(a: &Tensor, b: &Tensor) -> (f64, usize) {
    let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (a.to_vec2().unwrap(), b.to_vec2().unwrap());
    let (mut err, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        err += f64::from(x - y).powi(2);
        norm += f64::from(*x).powi(2);
    }
    let agree = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    ((err / norm).sqrt(), agree)
}

#[test]
fn q8_0_gguf_agrees_with_load_time_q8_0_and_with_f32() {
    const PROMPT: [u32; 8] = [1, 56, 386, 225, 462, 340, 79, 297];
    for name in ["llama", "qwen2"] {
        let exact = load_safetensors(name, None);
        let ours = load_safetensors(name, Some(Quantization::Q8_0));
        let file = load_gguf(name, "q8_0");
        // f32's greedy continuation, then every model over it (teacher forcing), as quantized.rs.
        let config = GenerationConfig {
            max_new_tokens: Some(24),
            ..GenerationConfig::default()
        };
        let input = GenerateInput::single(PROMPT.to_vec());
        let sequence = lmgen::generate(exact.as_ref(), &input, &config)
            .unwrap()
            .sequences[0]
            .clone();
        let (f32_logits, ours_logits, file_logits) = (
            logits(exact.as_ref(), &sequence),
            logits(ours.as_ref(), &sequence),
            logits(file.as_ref(), &sequence),
        );
        let n = sequence.len();
        let (rel_ours, agree_ours) = agreement(&ours_logits, &file_logits);
        let (rel_f32, agree_f32) = agreement(&f32_logits, &file_logits);
        eprintln!(
            "{name}: Q8_0 GGUF vs --quantize q8_0: rel. RMS {rel_ours:.2e}, argmax {agree_ours}/{n}; \
             vs f32: rel. RMS {rel_f32:.4}, argmax {agree_f32}/{n}"
        );
        // Every weight, the token table and the tied head included, is the same Q8_0 blocks
        // (`q8_0_gguf_weights_are_the_blocks_of_load_time_q8_0`), and both hold the table in
        // blocks as llama.cpp does: the logits are the same.
        assert_eq!(rel_ours, 0.0, "{name}: Q8_0 GGUF vs --quantize q8_0");
        assert_eq!(agree_ours, n, "{name}: Q8_0 GGUF vs --quantize q8_0");
        // The same bounds as quantized.rs for load-time Q8_0 against f32.
        assert!(rel_f32 < 0.1, "{name}: Q8_0 GGUF vs f32: {rel_f32}");
        assert!(agree_f32 * 4 >= n * 3, "{name}: argmax {agree_f32}/{n}");
    }
}

/// Every tensor of the Q8_0 fixtures is what lmgen's load-time Q8_0 makes of the safetensors
/// weight (bit for bit, after undoing llama.cpp's q/k row permutation on the blocks), or the f32
/// weight itself (norms, biases).
#[test]
fn q8_0_gguf_weights_are_the_blocks_of_load_time_q8_0() {
    for name in ["llama", "qwen2"] {
        let safetensors = Checkpoint::open(&golden_model(name)).unwrap().weights;
        let file = Checkpoint::open_gguf(&golden_model(name), &gguf(name, "q8_0"))
            .unwrap()
            .weights;
        let mut names: Vec<&str> = safetensors.names().collect();
        names.sort_unstable();
        assert_eq!(file.names().count(), names.len(), "{name}");
        let mut quantized = 0;
        for tensor in names {
            let shape = safetensors.shape(tensor).unwrap().to_vec();
            let dense = safetensors
                .get(tensor, &shape, DType::F32, &Device::Cpu)
                .unwrap();
            let (want, got) = match file.quantized(tensor, &shape).unwrap() {
                Some(blocks) => {
                    quantized += 1;
                    let ours = Quantization::Q8_0.quantize(&dense, tensor).unwrap();
                    (
                        ours.dequantize_all().unwrap(),
                        blocks.dequantize_all().unwrap(),
                    )
                }
                None => (
                    dense,
                    file.get(tensor, &shape, DType::F32, &Device::Cpu).unwrap(),
                ),
            };
            let (want, got): (Vec<f32>, Vec<f32>) = (
                want.flatten_all().unwrap().to_vec1().unwrap(),
                got.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(want == got, "{name}: `{tensor}` differs");
        }
        // 7 linear weights per layer, the embedding table, and llama's untied LM head.
        let want = 2 * 7 + 1 + usize::from(name == "llama");
        assert_eq!(quantized, want, "{name}: Q8_0 tensors");
    }
}

#[test]
fn q8_0_gguf_keeps_its_blocks() {
    // A Q8_0 file's linear weights load as Q8_0 blocks, not widened to f32: the quantized GGUF
    // model differs from the f32 one by the quantization error.
    let (f32_model, q8_model) = (load_gguf("llama", "f32"), load_gguf("llama", "q8_0"));
    let ids = [1u32, 56, 386, 225];
    let diff = max_abs_diff(
        &logits(f32_model.as_ref(), &ids),
        &logits(q8_model.as_ref(), &ids),
    );
    assert!(diff > 1e-4, "Q8_0 GGUF logits equal f32 ones ({diff})");
}

/// Rewrites the llama f32 fixture through `edit` (metadata and tensors) into a temporary file.
fn edited_gguf(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, Meta)>, &mut Vec<(String, QTensor)>),
) -> PathBuf {
    let src = gguf("llama", "f32");
    let mut file = File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut metadata: Vec<(String, Meta)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| {
            (
                n.clone(),
                content.tensor(&mut file, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    edit(&mut metadata, &mut tensors);
    let out = dir.join("edited.gguf");
    let mut w = File::create(&out).unwrap();
    let meta: Vec<(&str, &Meta)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &meta, &ts).unwrap();
    out
}

fn load_error(path: &Path) -> String {
    let loaded = Checkpoint::open_gguf(&golden_model("llama"), path)
        .and_then(|c| load_model(&c, &LoadOptions::default()));
    match loaded {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_gguf_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();

    let path = edited_gguf(tmp.path(), |meta, _| {
        for (k, v) in meta.iter_mut() {
            if k == "general.architecture" {
                *v = Meta::String("gemma3".into());
            }
        }
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("gemma3") && msg.contains("llama, qwen2"),
        "{msg}"
    );

    let path = edited_gguf(tmp.path(), |_, tensors| {
        tensors.retain(|(n, _)| n != "blk.1.ffn_up.weight");
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("`blk.1.ffn_up.weight`") && msg.contains("not found"),
        "{msg}"
    );

    let path = edited_gguf(tmp.path(), |_, tensors| {
        for (n, t) in tensors.iter_mut() {
            if n == "blk.0.attn_v.weight" {
                let wrong = Tensor::zeros((16, 64), DType::F32, &Device::Cpu).unwrap();
                *t = QTensor::quantize(&wrong, candle_core::quantized::GgmlDType::F32).unwrap();
            }
        }
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("`blk.0.attn_v.weight`")
            && msg.contains("[16, 64]")
            && msg.contains("[32, 64]"),
        "{msg}"
    );

    let path = edited_gguf(tmp.path(), |meta, _| {
        meta.retain(|(k, _)| k != "llama.block_count");
    });
    let msg = load_error(&path);
    assert!(msg.contains("`llama.block_count` is missing"), "{msg}");

    let path = edited_gguf(tmp.path(), |_, tensors| {
        let extra = Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap();
        let extra = QTensor::quantize(&extra, candle_core::quantized::GgmlDType::F32).unwrap();
        tensors.push(("blk.0.attn_q_norm.weight".into(), extra));
    });
    let msg = load_error(&path);
    assert!(msg.contains("`blk.0.attn_q_norm.weight`"), "{msg}");

    let path = tmp.path().join("not.gguf");
    std::fs::write(&path, b"GGUF but not really").unwrap();
    let msg = load_error(&path);
    assert!(msg.contains("not a valid GGUF file"), "{msg}");
}

#[test]
fn a_gguf_path_as_model_needs_a_tokenizer_beside_it() {
    // `--model file.gguf`: the fixtures directory has no tokenizer.json.
    let path = gguf("qwen2", "f32");
    let err = Pipeline::load(path.to_str().unwrap(), &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no tokenizer.json") && msg.contains("GGUF metadata"),
        "{msg}"
    );
    // The model itself loads from the bare path.
    let checkpoint = Checkpoint::from_pretrained(path.to_str().unwrap(), None).unwrap();
    assert_eq!(checkpoint.weights.gguf_path(), Some(path.as_path()));
    assert!(load_model(&checkpoint, &LoadOptions::default()).is_ok());
    // A GGUF file name that is not in the directory.
    let err = Checkpoint::from_pretrained(
        golden_model("qwen2").to_str().unwrap(),
        Some(Path::new("missing.gguf")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");
}
