//! Qwen3 (HF `Qwen3ForCausalLM`, `models/qwen3/modular_qwen3.py`).
//!
//! Differences from Llama: an RMSNorm on each query and key head (`q_norm`, `k_norm` over
//! `head_dim`) before RoPE; Qwen2's sliding-window rule; `attention_bias` (default false) on
//! q/k/v/o alike, unlike Qwen2's fixed q/k/v biases.

use super::config::{ConfigFile, ModelConfig, QkNorm};
use super::llama::{self, Defaults};
use super::qwen2::{self, SlidingConfig};
use super::Architecture;
use crate::error::Result;

/// `Qwen3Config`'s defaults.
pub const DEFAULTS: Defaults = qwen2::DEFAULTS;

/// `qwen3`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = file
        .parse::<llama::Config>()?
        .lower(file, Architecture::Qwen3, &DEFAULTS)?;
    file.parse::<SlidingConfig>()?.apply(&mut cfg);
    cfg.qk_norm = Some(QkNorm::PerHead);
    Ok(cfg)
}
