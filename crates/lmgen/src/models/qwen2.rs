//! Qwen2 (HF `Qwen2ForCausalLM`, `models/qwen2/modular_qwen2.py`).
//!
//! Differences from Llama: q, k and v projections have biases (o_proj has none); layers from
//! `max_window_layers` on slide when `use_sliding_window` is set (or as `layer_types` says).

use serde::Deserialize;

use super::config::{ConfigFile, LayerType, ModelConfig};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `Qwen2Config`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 32768,
    sliding_window: Some(4096),
    ..llama::DEFAULTS
};

/// The sliding-window fields Qwen2 and Qwen3 share.
#[derive(Debug, Deserialize)]
pub struct SlidingConfig {
    #[serde(default)]
    pub use_sliding_window: bool,
    pub max_window_layers: Option<usize>,
    pub layer_types: Option<Vec<String>>,
}

impl SlidingConfig {
    /// `sliding_window` only with `use_sliding_window`; without `layer_types`, the layers from
    /// `max_window_layers` (default 28) on slide.
    pub fn apply(&self, cfg: &mut ModelConfig) {
        if !self.use_sliding_window {
            cfg.sliding_window = None;
        }
        if self.layer_types.is_none() {
            let first = self.max_window_layers.unwrap_or(28);
            cfg.layer_types = (0..cfg.num_hidden_layers)
                .map(|i| match cfg.sliding_window {
                    Some(_) if i >= first => LayerType::SlidingAttention,
                    _ => LayerType::FullAttention,
                })
                .collect();
        } else if cfg.sliding_window.is_none() {
            // Same length as given: a list of the wrong length is still refused.
            cfg.layer_types = vec![LayerType::FullAttention; cfg.layer_types.len()];
        }
    }
}

/// `qwen2`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = file
        .parse::<llama::Config>()?
        .lower(file, Architecture::Qwen2, &DEFAULTS)?;
    file.parse::<SlidingConfig>()?.apply(&mut cfg);
    cfg.qkv_bias = true;
    cfg.o_bias = false;
    Ok(cfg)
}
