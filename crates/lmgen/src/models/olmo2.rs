//! OLMo 2 (HF `Olmo2ForCausalLM`, `models/olmo2/modular_olmo2.py`).
//!
//! Differences from Llama: no norms before attention and the MLP; their outputs are normed
//! instead (`post_attention_layernorm`, `post_feedforward_layernorm`) before the residual add;
//! `q_norm` and `k_norm` normalise the whole query and key projections (`[heads * head_dim]`)
//! before they are split into heads; `rms_norm_eps` defaults to 1e-5.

use super::config::{ConfigFile, ModelConfig, NormPlacement, QkNorm};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `Olmo2Config`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    rms_norm_eps: 1e-5,
    ..llama::DEFAULTS
};

/// `olmo2`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = file
        .parse::<llama::Config>()?
        .lower(file, Architecture::Olmo2, &DEFAULTS)?;
    cfg.norm_placement = NormPlacement::Post;
    cfg.qk_norm = Some(QkNorm::Projection);
    cfg.sliding_window = None;
    cfg.layer_types = vec![super::config::LayerType::FullAttention; cfg.num_hidden_layers];
    Ok(cfg)
}
