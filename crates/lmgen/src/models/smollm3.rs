//! SmolLM3 (HF `SmolLM3ForCausalLM`, `models/smollm3/modular_smollm3.py`).
//!
//! Differences from Llama: layers whose `no_rope_layers` entry is 0 get no rotary embedding
//! (by default every `no_rope_layer_interval`-th layer, counting from 1); with
//! `use_sliding_window`, `layer_types` defaults to sliding on exactly those NoPE layers; tied
//! embeddings and a RoPE base of 2,000,000 by default.

use serde::Deserialize;

use super::config::{ConfigFile, LayerType, ModelConfig};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `SmolLM3Config`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    tie_word_embeddings: true,
    rope_theta: 2_000_000.0,
    max_position_embeddings: 32768,
    ..llama::DEFAULTS
};

#[derive(Debug, Deserialize)]
struct Config {
    no_rope_layers: Option<Vec<u8>>,
    no_rope_layer_interval: Option<usize>,
    #[serde(default)]
    use_sliding_window: bool,
    layer_types: Option<Vec<String>>,
}

/// `smollm3`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = file
        .parse::<llama::Config>()?
        .lower(file, Architecture::SmolLM3, &DEFAULTS)?;
    let s: Config = file.parse()?;
    let n = cfg.num_hidden_layers;
    cfg.rope_layers = match s.no_rope_layers {
        Some(list) => list.into_iter().map(|r| r != 0).collect(),
        None => {
            let interval = s.no_rope_layer_interval.unwrap_or(4);
            if interval == 0 {
                return Err(file.err("`no_rope_layer_interval` must be greater than 0".into()));
            }
            (0..n).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    if !s.use_sliding_window {
        cfg.sliding_window = None;
    }
    if s.layer_types.is_none() {
        cfg.layer_types = (0..n)
            .map(|i| match (cfg.sliding_window, cfg.rope_layers.get(i)) {
                (Some(_), Some(false)) => LayerType::SlidingAttention,
                _ => LayerType::FullAttention,
            })
            .collect();
    }
    Ok(cfg)
}
