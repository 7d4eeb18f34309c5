//! Mixtral (HF `MixtralForCausalLM`, `models/mixtral/modular_mixtral.py`).
//!
//! Mistral's decoder (a sliding window when `sliding_window` is set, else full attention; RoPE
//! base 1e6) with a sparse mixture of experts in every layer: `num_local_experts` experts of
//! `intermediate_size` (`w1` gate, `w3` up, `w2` down), `num_experts_per_tok` per token, the top
//! probabilities always renormalised. `router_jitter_noise` only applies in training.

use serde::Deserialize;

use super::config::{ConfigFile, ModelConfig, MoeConfig, MoeLayout};
use super::llama::{self, Defaults};
use super::{mistral, Architecture};
use crate::error::Result;

/// `MixtralConfig`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    max_position_embeddings: 4096 * 32,
    sliding_window: None,
    rope_theta: 1e6,
    rms_norm_eps: 1e-5,
    ..llama::DEFAULTS
};

/// The MoE fields of `MixtralConfig`.
#[derive(Debug, Deserialize)]
struct MoeFields {
    #[serde(alias = "num_experts")]
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
}

/// `mixtral`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let cfg = file
        .parse::<llama::Config>()?
        .lower(file, Architecture::Mixtral, &DEFAULTS)?;
    let mut cfg = mistral::with_window_everywhere(cfg);
    let fields: MoeFields = file.parse()?;
    cfg.moe = Some(MoeConfig {
        num_experts: fields.num_local_experts.unwrap_or(8),
        num_experts_per_tok: fields.num_experts_per_tok.unwrap_or(2),
        moe_intermediate_size: cfg.intermediate_size,
        norm_topk_prob: true,
        sparse_layers: vec![true; cfg.num_hidden_layers],
        layout: MoeLayout::Mixtral,
        shared_expert_intermediate_size: None,
    });
    Ok(cfg)
}
