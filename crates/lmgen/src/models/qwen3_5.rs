//! Qwen3.5 (HF `Qwen3_5ForCausalLM`, `models/qwen3_5/modular_qwen3_5.py`; also the language model
//! of `Qwen3_5ForConditionalGeneration` checkpoints, a [`super::registry::WRAPPERS`] row).
//!
//! A hybrid: three gated DeltaNet linear-attention layers (`linear_attn`, a convolution and a
//! recurrent state per sequence, no keys and values) beside each full-attention layer
//! (`layer_types`, by default every `full_attention_interval`-th layer). Its attention has
//! Qwen3's per-head q/k norms, an output gate (`q_proj` yields a gate per head, `sigmoid(gate)`
//! scales the output) and partial RoPE (`partial_rotary_factor`, default 0.25); every RMSNorm
//! but the DeltaNet's gated one scales by `1 + w`. Text-only RoPE: the multimodal sections
//! (`mrope_section`) all rotate by the text position, which is plain RoPE.

use serde::Deserialize;
use serde_json::Value;

use super::config::{
    ConfigFile, LinearAttentionConfig, LinearAttentionLayout, ModelConfig, NormKind, QkNorm,
};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `Qwen3_5TextConfig`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    rope_theta: 10_000.0,
    max_position_embeddings: 32_768,
    sliding_window: None,
};

/// The hybrid fields Qwen3.5 and Qwen3-Next share.
#[derive(Debug, Deserialize)]
pub(crate) struct HybridFields {
    head_dim: Option<usize>,
    linear_conv_kernel_dim: Option<usize>,
    linear_key_head_dim: Option<usize>,
    linear_value_head_dim: Option<usize>,
    linear_num_key_heads: Option<usize>,
    linear_num_value_heads: Option<usize>,
    full_attention_interval: Option<usize>,
    partial_rotary_factor: Option<f64>,
    attn_output_gate: Option<bool>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
}

/// Parses `file` as the Qwen3.5 decoder (Qwen3-Next adds its MoE on top).
/// `dense_intermediate` stands in for an absent `intermediate_size` (a model whose every layer is
/// sparse has no dense MLP).
pub(crate) fn parse_hybrid(
    file: &ConfigFile<'_>,
    architecture: Architecture,
    layout: LinearAttentionLayout,
    dense_intermediate: Option<usize>,
) -> Result<ModelConfig> {
    let mut base = llama::Config::parse_with_intermediate(file, dense_intermediate)?;
    let hybrid: HybridFields = file.parse()?;
    base.head_dim = Some(hybrid.head_dim.unwrap_or(256));
    if base.layer_types.is_none() {
        let interval = hybrid.full_attention_interval.unwrap_or(4).max(1);
        base.layer_types = Some(
            (0..base.num_hidden_layers)
                .map(|i| {
                    if (i + 1) % interval != 0 {
                        "linear_attention".to_string()
                    } else {
                        "full_attention".to_string()
                    }
                })
                .collect(),
        );
    }
    let mut cfg = base.lower(file, architecture, &DEFAULTS)?;
    cfg.norm = NormKind::RmsUnitOffset;
    cfg.qk_norm = Some(QkNorm::PerHead);
    cfg.attn_output_gate = hybrid.attn_output_gate.unwrap_or(true);
    // `kwargs.setdefault("partial_rotary_factor", 0.25)`.
    let given = |v: &Option<Value>| {
        v.as_ref()
            .is_some_and(|p| p.get("partial_rotary_factor").is_some())
    };
    if hybrid.partial_rotary_factor.is_none()
        && !given(&hybrid.rope_parameters)
        && !given(&hybrid.rope_scaling)
    {
        if let Some(rope) = cfg.rope.as_mut() {
            rope.partial_rotary_factor = 0.25;
        }
    }
    cfg.linear_attention = Some(LinearAttentionConfig {
        num_key_heads: hybrid.linear_num_key_heads.unwrap_or(16),
        num_value_heads: hybrid.linear_num_value_heads.unwrap_or(32),
        key_head_dim: hybrid.linear_key_head_dim.unwrap_or(128),
        value_head_dim: hybrid.linear_value_head_dim.unwrap_or(128),
        conv_kernel_dim: hybrid.linear_conv_kernel_dim.unwrap_or(4),
        layout,
    });
    Ok(cfg)
}

/// `qwen3_5_text`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    parse_hybrid(
        file,
        Architecture::Qwen3_5,
        LinearAttentionLayout::Separate,
        None,
    )
}
