//! config.json in both layouts real checkpoints use, and each architecture's defaults.

use std::path::Path;

use lmgen::models::config::{LayerType, ModelConfig, RopeScaling};
use lmgen::models::Architecture;
use serde_json::json;

fn parse(v: serde_json::Value) -> lmgen::Result<ModelConfig> {
    ModelConfig::from_json(&v, Path::new("config.json"))
}

fn llama(extra: serde_json::Value) -> serde_json::Value {
    let mut base = json!({"model_type": "llama", "vocab_size": 32, "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4});
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            base[k] = v;
        }
    }
    base
}

#[test]
fn transformers4_and_5_rope_layouts_agree() {
    let v4 = parse(llama(
        json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}}),
    ))
    .unwrap();
    let v5 = parse(llama(
        json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3",
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}}),
    ))
    .unwrap();
    assert_eq!(v4.rope, v5.rope);
    assert_eq!(v4.rope.as_ref().unwrap().theta, 500000.0);
}

#[test]
fn legacy_type_key_and_scalings() {
    let lin = parse(llama(
        json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
    ))
    .unwrap();
    assert_eq!(
        lin.rope.unwrap().scaling,
        RopeScaling::Linear { factor: 2.0 }
    );
    let dynamic = parse(llama(
        json!({"rope_scaling": {"type": "dynamic", "factor": 4.0}}),
    ))
    .unwrap();
    assert_eq!(
        dynamic.rope.unwrap().scaling,
        RopeScaling::Dynamic { factor: 4.0 }
    );
    let err = parse(llama(json!({"rope_scaling": {"type": "linear"}})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rope_scaling.factor"), "{err}");
}

#[test]
fn llama_defaults() {
    let c = parse(llama(json!({}))).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!((c.num_key_value_heads, c.head_dim), (4, 4));
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.rope.unwrap().theta, 10000.0);
    assert_eq!(c.layer_types, vec![LayerType::FullAttention; 2]);
}

#[test]
fn sliding_window_rules_per_architecture() {
    let mut m = llama(json!({"sliding_window": 8}));
    m["model_type"] = json!("mistral");
    assert_eq!(
        parse(m).unwrap().layer_types,
        vec![LayerType::SlidingAttention; 2]
    );
    let mut g = llama(json!({"sliding_window": 8}));
    g["model_type"] = json!("gemma2");
    let g = parse(g).unwrap();
    assert_eq!(
        g.layer_types,
        vec![LayerType::SlidingAttention, LayerType::FullAttention]
    );
    assert!(g.tie_word_embeddings);
    // Qwen2 without use_sliding_window: full attention even with a window set.
    let mut q = llama(json!({"sliding_window": 8, "use_sliding_window": false}));
    q["model_type"] = json!("qwen2");
    let q = parse(q).unwrap();
    assert_eq!(q.layer_types, vec![LayerType::FullAttention; 2]);
    assert!(q.qkv_bias && !q.o_bias);
}
