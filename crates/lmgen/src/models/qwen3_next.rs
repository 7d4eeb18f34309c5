//! Qwen3-Next (HF `Qwen3NextForCausalLM`, `models/qwen3_next/modular_qwen3_next.py`).
//!
//! Qwen3.5's hybrid decoder (gated DeltaNet beside gated full attention, see [`super::qwen3_5`])
//! with the DeltaNet projections stored grouped by key head (`in_proj_qkvz`, `in_proj_ba`,
//! regrouped at load) and a sparse MoE on every `decoder_sparse_step`-th layer not in
//! `mlp_only_layers`: `num_experts_per_tok` of `num_experts` experts, renormalised
//! (`norm_topk_prob`, default true), plus a shared expert scaled by `sigmoid(shared_expert_gate)`.

use super::config::moe::{MoeDefaults, QwenMoeFields};
use super::config::{ConfigFile, LinearAttentionLayout, ModelConfig};
use super::{qwen3_5, Architecture};
use crate::error::Result;

/// `Qwen3NextConfig`'s MoE defaults.
const MOE: MoeDefaults = MoeDefaults {
    num_experts: 512,
    num_experts_per_tok: 10,
    moe_intermediate_size: 512,
    norm_topk_prob: true,
    shared_expert_intermediate_size: Some(512),
};

/// `qwen3_next`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = qwen3_5::parse_hybrid(
        file,
        Architecture::Qwen3Next,
        LinearAttentionLayout::Grouped,
        None,
    )?;
    let moe = file
        .parse::<QwenMoeFields>()?
        .lower_with(cfg.num_hidden_layers, file, &MOE)?;
    cfg.moe = Some(moe);
    Ok(cfg)
}
