//! gpt-oss (HF `GptOssForCausalLM`, `models/gpt_oss/modular_gpt_oss.py`).
//!
//! A Llama-shaped decoder with: biases on q/k/v/o (`attention_bias`, default true); a learned
//! sink logit per head in the attention softmax; sliding (`sliding_window`, default 128) and full
//! attention alternating (`layer_types`, sliding first); YaRN RoPE (default factor 32 over 4096
//! positions, base 150000, `truncate: false`); and a sparse MoE in every layer whose router has a
//! bias and takes the softmax of the top-k logits, with experts stacked in 3-D tensors and a
//! clamped SwiGLU (`alpha` 1.702, `limit` 7). `hidden_act` is not used by the experts.
//!
//! The checkpoints as published store the experts as MXFP4 blocks and scales; those are refused
//! with an error for now (see `layers/moe.rs`).

use serde::Deserialize;

use super::config::{ConfigFile, LayerType, ModelConfig, MoeConfig, MoeLayout};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `GptOssConfig`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 131_072,
    sliding_window: Some(128),
    rope_theta: 150_000.0,
    rms_norm_eps: 1e-5,
    ..llama::DEFAULTS
};

/// The fields of `GptOssConfig` beyond Llama's.
#[derive(Debug, Deserialize)]
struct Fields {
    #[serde(alias = "num_experts")]
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    layer_types: Option<Vec<String>>,
    attention_bias: Option<bool>,
    rope_parameters: Option<serde_json::Value>,
    rope_scaling: Option<serde_json::Value>,
}

/// `gpt_oss`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let fields: Fields = file.parse()?;
    let defaulted;
    let file = if fields.rope_parameters.is_none() && fields.rope_scaling.is_none() {
        // `GptOssConfig.__post_init__`'s YaRN when the file gives none.
        let mut value = file.value.clone();
        if let Some(object) = value.as_object_mut() {
            let theta = object
                .get("rope_theta")
                .cloned()
                .unwrap_or(serde_json::json!(DEFAULTS.rope_theta));
            object.insert(
                "rope_parameters".into(),
                serde_json::json!({
                    "rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                    "truncate": false, "original_max_position_embeddings": 4096,
                    "rope_theta": theta,
                }),
            );
        }
        defaulted = value;
        ConfigFile {
            value: &defaulted,
            ..*file
        }
    } else {
        ConfigFile { ..*file }
    };
    let mut cfg = file
        .parse::<llama::Config>()?
        .lower(&file, Architecture::GptOss, &DEFAULTS)?;
    let bias = fields.attention_bias.unwrap_or(true);
    cfg.qkv_bias = bias;
    cfg.o_bias = bias;
    if fields.layer_types.is_none() {
        cfg.layer_types = (0..cfg.num_hidden_layers)
            .map(|i| match (i % 2, cfg.sliding_window) {
                (0, Some(_)) => LayerType::SlidingAttention,
                _ => LayerType::FullAttention,
            })
            .collect();
    }
    cfg.attention_sinks = true;
    cfg.moe = Some(MoeConfig {
        num_experts: fields.num_local_experts.unwrap_or(128),
        num_experts_per_tok: fields.num_experts_per_tok.unwrap_or(4),
        moe_intermediate_size: cfg.intermediate_size,
        norm_topk_prob: false,
        sparse_layers: vec![true; cfg.num_hidden_layers],
        layout: MoeLayout::GptOss,
        shared_expert_intermediate_size: None,
    });
    Ok(cfg)
}
