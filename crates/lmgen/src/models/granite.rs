//! Granite (HF `GraniteForCausalLM`, `models/granite/modular_granite.py`).
//!
//! Differences from Llama: embeddings times `embedding_multiplier`, each residual branch times
//! `residual_multiplier`, attention scores times `attention_multiplier` (instead of
//! `head_dim^-0.5`), logits divided by `logits_scaling`; all four default to 1.

use serde::Deserialize;

use super::config::{ConfigFile, EmbeddingScale, LayerType, ModelConfig};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `GraniteConfig`'s defaults.
pub const DEFAULTS: Defaults = llama::DEFAULTS;

/// Granite's four multipliers.
#[derive(Debug, Deserialize)]
struct Config {
    embedding_multiplier: Option<f64>,
    residual_multiplier: Option<f64>,
    attention_multiplier: Option<f64>,
    logits_scaling: Option<f64>,
}

/// `granite`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = file
        .parse::<llama::Config>()?
        .lower(file, Architecture::Granite, &DEFAULTS)?;
    let g: Config = file.parse()?;
    if g.logits_scaling == Some(0.0) {
        return Err(file.err("`logits_scaling` must not be 0".into()));
    }
    cfg.embedding_scale = Some(EmbeddingScale::Multiplier(
        g.embedding_multiplier.unwrap_or(1.0),
    ));
    cfg.residual_multiplier = Some(g.residual_multiplier.unwrap_or(1.0));
    cfg.attention_scaling = g.attention_multiplier.unwrap_or(1.0);
    cfg.logits_scaling = Some(g.logits_scaling.unwrap_or(1.0));
    cfg.sliding_window = None;
    cfg.layer_types = vec![LayerType::FullAttention; cfg.num_hidden_layers];
    Ok(cfg)
}
