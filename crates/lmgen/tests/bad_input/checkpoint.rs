//! A checkpoint broken on disk: config.json, the safetensors weights, the tokenizer files.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, LoadOptions};
use lmgen::{generate, GenerateInput, GenerationConfig};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Map, Value};

use crate::{assert_mentions, copy_checkpoint, edit_json, error, golden, load, load_low_level};

/// The error of loading `model` after `edit` of its config.json.
fn config_error(model: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> Result<String> {
    let tmp = copy_checkpoint(model)?;
    edit_json(tmp.path(), "config.json", edit)?;
    Ok(error(load(tmp.path())))
}

#[test]
fn config_json_missing_or_not_json() -> Result<()> {
    let tmp = copy_checkpoint("llama")?;
    let config = tmp.path().join("config.json");
    fs::write(&config, "{\"model_type\": \"llama\",")?;
    let msg = error(load(tmp.path()));
    assert_mentions(&msg, &[&config.display().to_string(), "is not valid"]);
    let msg = error(Checkpoint::open(tmp.path()));
    assert_mentions(&msg, &["config.json", "is not valid"]);

    fs::remove_file(&config)?;
    let msg = error(load(tmp.path()));
    assert_mentions(&msg, &[&config.display().to_string(), "needs config.json"]);
    let msg = error(Checkpoint::open(tmp.path()));
    assert_mentions(&msg, &["config.json"]);
    Ok(())
}

#[test]
fn config_json_bad_fields_name_the_field() -> Result<()> {
    let msg = config_error("llama", |c| {
        c.insert("model_type".into(), json!("mamba"));
    })?;
    assert_mentions(
        &msg,
        &[
            "unknown model_type `mamba`",
            "config.json",
            "supported: gpt2, llama, mistral, qwen2, gemma2, qwen3, gemma3_text, phi3, smollm3, \
             olmo2, granite, ministral3, qwen3_moe, mixtral, gpt_oss, qwen3_5_text, \
             qwen3_5_moe_text, qwen3_next, lfm2, gemma4_text, t5, mt5, bart, mbart, marian, whisper, gemma3, qwen3_5, qwen3_5_moe, \
             gemma4, mistral3",
        ],
    );
    let msg = config_error("llama", |c| {
        c.remove("model_type");
    })?;
    assert_mentions(&msg, &["config.json", "`model_type` is missing"]);
    let msg = config_error("llama", |c| {
        c.remove("hidden_size");
    })?;
    assert_mentions(&msg, &["config.json", "`hidden_size` is missing"]);
    let msg = config_error("qwen2", |c| {
        c.insert("hidden_size".into(), json!("big"));
    })?;
    assert_mentions(
        &msg,
        &[
            "config.json",
            "`hidden_size` must be a non-negative integer, got \"big\"",
        ],
    );
    let msg = config_error("gpt2", |c| {
        c.insert("n_layer".into(), json!(-2));
    })?;
    assert_mentions(&msg, &["`n_layer` must be a non-negative integer, got -2"]);
    let msg = config_error("mistral", |c| {
        c.insert("num_key_value_heads".into(), json!(3));
    })?;
    assert_mentions(
        &msg,
        &["`num_attention_heads` (4) must be a multiple of `num_key_value_heads` (3)"],
    );
    let msg = config_error("llama", |c| {
        c.insert(
            "rope_scaling".into(),
            json!({"rope_type": "mrope", "factor": 4.0}),
        );
    })?;
    assert_mentions(
        &msg,
        &[
            "config.json",
            "`rope_scaling.rope_type` = \"mrope\" is not supported",
            "supported: default, linear, dynamic, llama3, yarn, longrope, proportional",
        ],
    );
    let msg = config_error("llama3", |c| {
        if let Some(rope) = c.get_mut("rope_parameters").and_then(Value::as_object_mut) {
            rope.remove("low_freq_factor");
        }
    })?;
    assert_mentions(&msg, &["`rope_parameters.low_freq_factor` is missing"]);
    let msg = config_error("gemma2", |c| {
        c.insert("hidden_activation".into(), json!("relu2"));
    })?;
    assert_mentions(&msg, &["`hidden_activation` = \"relu2\" is not supported"]);
    Ok(())
}

#[test]
fn gpt2_heads_must_divide_the_hidden_size() -> Result<()> {
    // transformers' GPT2Attention refuses this too; without the check the reshape in attention fails.
    let msg = config_error("gpt2", |c| {
        c.insert("n_head".into(), json!(5));
    })?;
    assert_mentions(
        &msg,
        &[
            "config.json",
            "`n_embd` (64) must be divisible by `n_head` (5)",
        ],
    );
    Ok(())
}

#[test]
fn tensor_shape_not_matching_config_names_tensor_and_shapes() -> Result<()> {
    let msg = config_error("llama", |c| {
        c.insert("intermediate_size".into(), json!(170));
    })?;
    assert_mentions(
        &msg,
        &[
            "model.safetensors",
            "tensor `model.layers.0.mlp.gate_proj.weight` has shape [160, 64]",
            "config.json implies [170, 64]",
        ],
    );
    // Through the lower-level path too, and for GPT-2's own field names.
    let tmp = copy_checkpoint("gpt2")?;
    edit_json(tmp.path(), "config.json", |c| {
        c.insert("vocab_size".into(), json!(900));
    })?;
    let checkpoint = Checkpoint::open(tmp.path())?;
    let msg = error(load_model(&checkpoint, &LoadOptions::default()));
    assert_mentions(
        &msg,
        &[
            "tensor `transformer.wte.weight` has shape [800, 64]",
            "[900, 64]",
        ],
    );
    Ok(())
}

/// One tensor as stored: dtype, shape, raw little-endian bytes.
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Rewrites `dir/model.safetensors`, passing every tensor through `edit` (`None` drops it).
fn rewrite_weights(dir: &Path, edit: impl Fn(&str, Stored) -> Option<Stored>) -> Result<()> {
    let path = dir.join("model.safetensors");
    let bytes = fs::read(&path)?;
    let mut tensors = Vec::new();
    for (name, view) in SafeTensors::deserialize(&bytes)?.tensors() {
        let stored = Stored {
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        };
        if let Some(stored) = edit(&name, stored) {
            tensors.push((name, stored));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, s)| {
            Ok((
                name.as_str(),
                TensorView::new(s.dtype, s.shape.clone(), &s.data)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = [("format".to_string(), "pt".to_string())].into();
    fs::write(&path, safetensors::serialize(views, Some(metadata))?)?;
    Ok(())
}

#[test]
fn integer_weights_are_refused_naming_the_tensor() -> Result<()> {
    let tmp = copy_checkpoint("llama")?;
    let norm = "model.layers.1.input_layernorm.weight";
    rewrite_weights(tmp.path(), |name, s| {
        Some(if name == norm {
            // Same shape, stored as I64 (as a careless conversion script might write it).
            Stored {
                dtype: Dtype::I64,
                data: vec![0; s.data.len() * 2],
                ..s
            }
        } else {
            s
        })
    })?;
    let msg = error(load_low_level(tmp.path()));
    assert_mentions(
        &msg,
        &[
            "model.safetensors",
            &format!("tensor `{norm}` is stored as I64"),
            "F32, F16 and BF16",
        ],
    );
    rewrite_weights(tmp.path(), |name, s| {
        Some(if name == norm {
            Stored {
                dtype: Dtype::U8,
                data: vec![1; s.data.len() / 8],
                ..s
            }
        } else {
            s
        })
    })?;
    let msg = error(load(tmp.path()));
    assert_mentions(&msg, &[&format!("tensor `{norm}` is stored as U8")]);
    Ok(())
}

#[test]
fn a_half_precision_tensor_in_an_f32_checkpoint_is_converted() -> Result<()> {
    // transformers casts such a tensor to the model's dtype; so does lmgen (it is not an error).
    let tmp = copy_checkpoint("llama")?;
    let norm = "model.norm.weight";
    rewrite_weights(tmp.path(), |name, s| {
        Some(if name == norm {
            let data = s
                .data
                .chunks_exact(4)
                .flat_map(|b| {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    half::f16::from_f32(x).to_le_bytes()
                })
                .collect();
            Stored {
                dtype: Dtype::F16,
                data,
                ..s
            }
        } else {
            s
        })
    })?;
    let checkpoint = Checkpoint::open(tmp.path())?;
    assert_eq!(
        checkpoint.weights.disk_dtype(norm),
        Some(candle_core::DType::F16)
    );
    let config = GenerationConfig {
        max_new_tokens: Some(1),
        output_logits: Some(true),
        ..GenerationConfig::default()
    };
    let input = GenerateInput::single((10..20).collect());
    let logits = |model: &dyn CausalLM| -> Result<Vec<f32>> {
        let out = generate(model, &input, &config)?;
        Ok(out.logits.context("logits")?[0].row(0).to_vec())
    };
    let converted = logits(load_model(&checkpoint, &LoadOptions::default())?.as_ref())?;
    let original = logits(load_low_level(&golden("llama"))?.as_ref())?;
    assert_eq!(converted.len(), original.len());
    for (got, want) in converted.iter().zip(&original) {
        assert!(
            (got - want).abs() <= 1e-2 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
    Ok(())
}

#[test]
fn a_missing_tensor_is_named() -> Result<()> {
    let tmp = copy_checkpoint("llama")?;
    let dropped = "model.layers.1.mlp.down_proj.weight";
    rewrite_weights(tmp.path(), |name, s| (name != dropped).then_some(s))?;
    let msg = error(load(tmp.path()));
    assert_mentions(
        &msg,
        &[&format!(
            "tensor `{dropped}` not found in model.safetensors"
        )],
    );
    // An untied LM head is not silently replaced by the embeddings.
    fs::copy(
        golden("llama").join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )?;
    rewrite_weights(tmp.path(), |name, s| {
        (name != "lm_head.weight").then_some(s)
    })?;
    let msg = error(load_low_level(tmp.path()));
    assert_mentions(&msg, &["tensor `lm_head.weight` not found"]);
    Ok(())
}

#[test]
fn tokenizer_missing_or_corrupt() -> Result<()> {
    let tmp = copy_checkpoint("qwen2")?;
    let path = tmp.path().join("tokenizer.json");
    let text = fs::read_to_string(&path)?;
    fs::write(&path, &text[..text.len() / 2])?;
    let msg = error(load(tmp.path()));
    assert_mentions(
        &msg,
        &["tokenizer", "cannot load", &path.display().to_string()],
    );
    fs::write(&path, "{\"version\": \"1.0\", \"model\": 42}")?;
    let msg = error(load(tmp.path()));
    assert_mentions(&msg, &["cannot load", &path.display().to_string()]);
    fs::remove_file(&path)?;
    let msg = error(load(tmp.path()));
    assert_mentions(&msg, &[&path.display().to_string(), "not found"]);

    let tmp = copy_checkpoint("qwen2")?;
    let config = tmp.path().join("tokenizer_config.json");
    fs::write(&config, "{\"eos_token\": ")?;
    let msg = error(load(tmp.path()));
    assert_mentions(&msg, &[&config.display().to_string(), "is not valid"]);
    Ok(())
}
