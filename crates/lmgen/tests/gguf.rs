//! GGUF loading (`LoadOptions::gguf_file`, transformers' `from_pretrained(..., gguf_file=...)`).
//!
//! The fixtures in `tests/fixtures/gguf/` were written from the golden checkpoints by llama.cpp's
//! own Python package (gguf-py) through `benches/peers/write_gguf.py`: `llama` and `qwen2` from
//! `golden/models` (Llama's q and k rows permuted as `convert_hf_to_gguf.py` does; `q8_0_py`
//! quantizes every 2-D weight with gguf-py's Q8_0, bit-exact with ggml's reference quantizer, and
//! keeps norms and biases f32), and `qwen3`, `gemma3`, `phi3`, `olmo2` and `granite` from
//! `golden-arch/models` following the converter step by step. `tests/fixtures/gguf/README.md` has
//! the commands and what each file holds.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value as Meta};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use lmgen::generation::config::UnknownFields;
use lmgen::load::{Checkpoint, HubOptions};
use lmgen::models::config::LayerType;
use lmgen::models::{load_model, CausalLM, LoadOptions, ModelConfig, Quantization};
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn golden_model(name: &str) -> PathBuf {
    fixtures().join("golden/models").join(name)
}

fn golden_arch_model(name: &str) -> PathBuf {
    fixtures().join("golden-arch/models").join(name)
}

/// The architectures written by llama.cpp's converter: (GGUF fixture, golden-arch checkpoint).
const CONVERTED: [(&str, &str); 5] = [
    ("qwen3", "qwen3"),
    ("gemma3", "gemma3_text"),
    ("phi3", "phi3"),
    ("olmo2", "olmo2"),
    ("granite", "granite"),
];

fn gguf(name: &str, kind: &str) -> PathBuf {
    fixtures().join("gguf").join(format!("{name}-{kind}.gguf"))
}

fn load_gguf(name: &str, kind: &str) -> Box<dyn CausalLM> {
    load_gguf_from(&golden_model(name), name, kind)
}

fn load_gguf_from(dir: &Path, name: &str, kind: &str) -> Box<dyn CausalLM> {
    let checkpoint = Checkpoint::open_gguf(dir, &gguf(name, kind)).unwrap();
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

/// Runs every `greedy*` case of `{golden}/generate.json` whose model is in `models` (GGUF fixture,
/// checkpoint) through the fixture's f32 GGUF file, the tokenizer and generation config from the
/// checkpoint; returns how many ran.
fn greedy_cases_through_gguf(golden: &str, models: &[(&str, &str)]) -> usize {
    let text = std::fs::read_to_string(fixtures().join(golden).join("generate.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut checked = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let model = case["model"].as_str().unwrap();
        let Some((file, _)) = models.iter().find(|(_, m)| *m == model) else {
            continue;
        };
        if !name.starts_with("greedy") {
            continue;
        }
        let pipe = pipes.entry(model.to_string()).or_insert_with(|| {
            let options = LoadOptions {
                gguf_file: Some(gguf(file, "f32")),
                ..LoadOptions::default()
            };
            let dir = fixtures().join(golden).join("models").join(model);
            Pipeline::load(dir.to_str().unwrap(), &options).unwrap()
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
        assert_eq!(out.sequences, want, "{model}/{name} through {file}.gguf");
        checked += 1;
    }
    checked
}

#[test]
fn golden_greedy_cases_pass_through_the_gguf_model() {
    let checked = greedy_cases_through_gguf("golden", &[("llama", "llama"), ("qwen2", "qwen2")]);
    assert_eq!(checked, 7, "expected 4 llama and 3 qwen2 greedy cases");
}

#[test]
fn converted_gguf_logits_match_transformers_and_safetensors() {
    let golden = candle_core::safetensors::load(
        fixtures().join("golden-arch/forward.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (file, model) in CONVERTED {
        let dir = golden_arch_model(model);
        let checkpoint = Checkpoint::open_gguf(&dir, &gguf(file, "f32")).unwrap();
        let from_gguf = load_model(&checkpoint, &LoadOptions::default()).unwrap();
        let from_safetensors =
            load_model(&Checkpoint::open(&dir).unwrap(), &LoadOptions::default()).unwrap();
        // The metadata describes the checkpoint's model.
        let shape = |c: &lmgen::models::ModelConfig| {
            format!(
                "{:?}",
                (
                    (
                        c.architecture,
                        c.vocab_size,
                        c.num_hidden_layers,
                        c.head_dim
                    ),
                    (c.num_key_value_heads, c.tie_word_embeddings, c.qkv_bias),
                    (c.norm, c.norm_placement, c.qk_norm, c.projections),
                    (c.hidden_act, &c.layer_types, c.sliding_window),
                )
            )
        };
        let config = from_gguf.config();
        assert_eq!(shape(config), shape(from_safetensors.config()), "{file}");
        for i in 0..2 {
            let ids: Vec<u32> = golden[&format!("{model}.{i}.input_ids")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = &golden[&format!("{model}.{i}.logits")]; // [T, vocab]
            let got = logits(from_gguf.as_ref(), &ids);
            let vs_transformers = max_abs_diff(&got, want);
            let vs_safetensors = max_abs_diff(&got, &logits(from_safetensors.as_ref(), &ids));
            eprintln!(
                "{file}.{i}: f32 GGUF max |diff| vs transformers {vs_transformers:e}, vs \
                 safetensors {vs_safetensors:e}"
            );
            // The same tolerances as for llama and qwen2.
            assert!(
                vs_transformers <= 1e-4,
                "{file}.{i}: max |logit difference| {vs_transformers} > 1e-4"
            );
            assert!(
                vs_safetensors <= 1e-5,
                "{file}.{i}: GGUF and safetensors differ by {vs_safetensors}"
            );
        }
    }
}

#[test]
fn golden_arch_greedy_cases_pass_through_the_converted_gguf_models() {
    let checked = greedy_cases_through_gguf("golden-arch", &CONVERTED);
    assert_eq!(checked, 4 * CONVERTED.len(), "four greedy cases per model");
}

/// A prompt for the quantized comparisons.
const PROMPT: [u32; 8] = [1, 56, 386, 225, 462, 340, 79, 297];

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

/// `qwen3-q8_0` is the converter's `--outtype q8_0`: Q8_0 where a row is whole 32-value blocks
/// (`attn_output`, `ffn_down`: rows of 96), F16 for the 48-wide rows (which lmgen's load-time Q8_0
/// cannot quantize), norms F32. So it is compared with the f32 fixture tensor by tensor (Q8_0
/// blocks bit for bit those of load-time Q8_0, F16 the f32 weight rounded), and by its logits
/// within quantized.rs' bounds.
#[test]
fn converter_q8_0_gguf_is_load_time_q8_0_and_f16_of_the_f32_file() {
    let dir = golden_arch_model("qwen3");
    let f32_file = Checkpoint::open_gguf(&dir, &gguf("qwen3", "f32"))
        .unwrap()
        .weights;
    let q8_file = Checkpoint::open_gguf(&dir, &gguf("qwen3", "q8_0"))
        .unwrap()
        .weights;
    let mut names: Vec<&str> = f32_file.names().collect();
    names.sort_unstable();
    assert_eq!(q8_file.names().count(), names.len());
    let (mut blocks, mut halves) = (0, 0);
    for tensor in names {
        let shape = f32_file.shape(tensor).unwrap().to_vec();
        let dense = f32_file
            .get(tensor, &shape, DType::F32, &Device::Cpu)
            .unwrap();
        let stored = q8_file.quantized(tensor, &shape).unwrap();
        let (want, got) = match stored {
            Some(stored) => {
                blocks += 1;
                let ours = Quantization::Q8_0.quantize(&dense, tensor).unwrap();
                (
                    ours.dequantize_all().unwrap(),
                    stored.dequantize_all().unwrap(),
                )
            }
            None => {
                let got = q8_file
                    .get(tensor, &shape, DType::F32, &Device::Cpu)
                    .unwrap();
                if q8_file.disk_dtype(tensor) == Some(DType::F16) {
                    halves += 1;
                    (
                        dense
                            .to_dtype(DType::F16)
                            .unwrap()
                            .to_dtype(DType::F32)
                            .unwrap(),
                        got,
                    )
                } else {
                    (dense, got)
                }
            }
        };
        let (want, got): (Vec<f32>, Vec<f32>) = (
            want.flatten_all().unwrap().to_vec1().unwrap(),
            got.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(want == got, "`{tensor}` differs");
    }
    // Per layer (3): attn_output and ffn_down in blocks; q, k, v, gate and up F16, as are the
    // embedding table and the LM head.
    assert_eq!((blocks, halves), (3 * 2, 3 * 5 + 2));

    let exact = load_gguf_from(&dir, "qwen3", "f32");
    let file = load_gguf_from(&dir, "qwen3", "q8_0");
    let config = GenerationConfig {
        max_new_tokens: Some(24),
        ..GenerationConfig::default()
    };
    let input = GenerateInput::single(PROMPT.to_vec());
    let sequence = lmgen::generate(exact.as_ref(), &input, &config)
        .unwrap()
        .sequences[0]
        .clone();
    let n = sequence.len();
    let (rel, agree) = agreement(
        &logits(exact.as_ref(), &sequence),
        &logits(file.as_ref(), &sequence),
    );
    eprintln!("qwen3: converter Q8_0 GGUF vs f32 GGUF: rel. RMS {rel:.4}, argmax {agree}/{n}");
    assert!(rel > 0.0, "the Q8_0 blocks were widened to f32");
    assert!(rel < 0.1, "Q8_0 GGUF vs f32: {rel}");
    assert!(agree * 4 >= n * 3, "argmax {agree}/{n}");
}

/// The layer types of `gemma3-f32.gguf` after `edit`.
fn gemma3_layer_types(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, Meta)>),
) -> lmgen::Result<Vec<LayerType>> {
    let path = edited_copy(&gguf("gemma3", "f32"), dir, |meta, _| edit(meta));
    let checkpoint = Checkpoint::open_gguf(&golden_arch_model("gemma3_text"), &path)?;
    Ok(ModelConfig::from_checkpoint(&checkpoint)?.layer_types)
}

#[test]
fn gemma3_sliding_layers_are_read_as_llama_cpp_reads_them() {
    use LayerType::{FullAttention as F, SlidingAttention as S};
    const PATTERN: &str = "gemma3.attention.sliding_window_pattern";
    let tmp = tempfile::tempdir().unwrap();
    let set = |key: &'static str, value: Option<Meta>| {
        move |meta: &mut Vec<(String, Meta)>| {
            meta.retain(|(k, _)| k != key);
            if let Some(v) = value {
                meta.push((key.to_string(), v));
            }
        }
    };
    // The fixture's per-layer flags: the checkpoint's `layer_types`.
    let types = gemma3_layer_types(tmp.path(), |_| {}).unwrap();
    assert_eq!(types, [S, S, S, F]);
    // The converter's own file has no pattern: llama.cpp's period of 6 makes all four slide.
    let types = gemma3_layer_types(tmp.path(), set(PATTERN, None)).unwrap();
    assert_eq!(types, [S, S, S, S]);
    let types = gemma3_layer_types(tmp.path(), set(PATTERN, Some(Meta::U32(2)))).unwrap();
    assert_eq!(types, [S, F, S, F]);
    // A period of 0: every layer slides (llama.cpp's `set_swa_pattern`).
    let types = gemma3_layer_types(tmp.path(), set(PATTERN, Some(Meta::U32(0)))).unwrap();
    assert_eq!(types, [S, S, S, S]);
    // No window: no sliding layer.
    let no_window = set("gemma3.attention.sliding_window", None);
    let types = gemma3_layer_types(tmp.path(), no_window).unwrap();
    assert_eq!(types, [F, F, F, F]);
    let short = Meta::Array(vec![Meta::Bool(true); 3]);
    let err = gemma3_layer_types(tmp.path(), set(PATTERN, Some(short))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(PATTERN)
            && msg.contains("3 entries")
            && msg.contains("`gemma3.block_count` is 4"),
        "{msg}"
    );
}

/// Rewrites the llama f32 fixture through `edit` (metadata and tensors) into a temporary file.
fn edited_gguf(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, Meta)>, &mut Vec<(String, QTensor)>),
) -> PathBuf {
    edited_copy(&gguf("llama", "f32"), dir, edit)
}

/// Rewrites `src` through `edit` into `dir/edited.gguf`.
fn edited_copy(
    src: &Path,
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, Meta)>, &mut Vec<(String, QTensor)>),
) -> PathBuf {
    let mut file = File::open(src).unwrap();
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
                *v = Meta::String("mamba".into());
            }
        }
    });
    let msg = load_error(&path);
    assert!(
        msg.contains("`mamba`")
            && msg.contains(&path.display().to_string())
            && msg.contains("llama, qwen2, qwen3, gemma3, phi3, olmo2, granite"),
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
    let checkpoint =
        Checkpoint::from_pretrained(path.to_str().unwrap(), None, &HubOptions::default()).unwrap();
    assert_eq!(checkpoint.weights.gguf_path(), Some(path.as_path()));
    assert!(load_model(&checkpoint, &LoadOptions::default()).is_ok());
    // A GGUF file name that is not in the directory.
    let err = Checkpoint::from_pretrained(
        golden_model("qwen2").to_str().unwrap(),
        Some(Path::new("missing.gguf")),
        &HubOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");
}
