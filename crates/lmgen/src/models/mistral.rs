//! Mistral (HF `MistralForCausalLM`, `models/mistral/modular_mistral.py`).
//!
//! Differences from Llama: every layer attends through a sliding window of `sliding_window`
//! tokens (absent: 4096; `null`: full attention); no attention biases.

use super::config::{ConfigFile, LayerType, ModelConfig};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `MistralConfig`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 4096 * 32,
    sliding_window: Some(4096),
    ..llama::DEFAULTS
};

/// `mistral`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let cfg = file
        .parse::<llama::Config>()?
        .lower(file, Architecture::Mistral, &DEFAULTS)?;
    Ok(with_window_everywhere(cfg))
}

/// Every layer sliding when a window is set (Mistral, Phi-3, Ministral 3).
pub fn with_window_everywhere(mut cfg: ModelConfig) -> ModelConfig {
    let kind = match cfg.sliding_window {
        Some(_) => LayerType::SlidingAttention,
        None => LayerType::FullAttention,
    };
    cfg.layer_types = vec![kind; cfg.num_hidden_layers];
    cfg.qkv_bias = false;
    cfg.o_bias = false;
    cfg
}
