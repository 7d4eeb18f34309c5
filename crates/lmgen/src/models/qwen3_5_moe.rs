//! Qwen3.5-MoE (HF `Qwen3_5MoeForCausalLM`, the language model of
//! `Qwen3_5MoeForConditionalGeneration` checkpoints such as Qwen3.5-35B-A3B).
//!
//! Qwen3.5's hybrid decoder (see [`super::qwen3_5`]) with a sparse MoE on every layer:
//! `num_experts_per_tok` of `num_experts` experts, always renormalised, plus a shared expert
//! scaled by `sigmoid(shared_expert_gate)`, as Qwen3-Next has.

use super::config::moe::{MoeDefaults, QwenMoeFields};
use super::config::{ConfigFile, LinearAttentionLayout, ModelConfig};
use super::{qwen3_5, Architecture};
use crate::error::Result;

/// `Qwen3_5MoeTextConfig`'s MoE defaults.
const MOE: MoeDefaults = MoeDefaults {
    num_experts: 256,
    num_experts_per_tok: 8,
    moe_intermediate_size: 512,
    norm_topk_prob: true,
    shared_expert_intermediate_size: Some(512),
};

/// `qwen3_5_moe_text`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = qwen3_5::parse_hybrid(
        file,
        Architecture::Qwen3_5Moe,
        LinearAttentionLayout::Separate,
        // Unused: every layer is sparse.
        Some(MOE.moe_intermediate_size),
    )?;
    let mut moe = file
        .parse::<QwenMoeFields>()?
        .lower_with(cfg.num_hidden_layers, file, &MOE)?;
    // `Qwen3_5MoeTopKRouter` always renormalises, and every layer is sparse (the config's
    // `norm_topk_prob`, `decoder_sparse_step` and `mlp_only_layers` are not read).
    moe.norm_topk_prob = true;
    moe.sparse_layers = vec![true; cfg.num_hidden_layers];
    cfg.moe = Some(moe);
    Ok(cfg)
}
