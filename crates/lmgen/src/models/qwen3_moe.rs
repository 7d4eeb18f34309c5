//! Qwen3-MoE (HF `Qwen3MoeForCausalLM`, `models/qwen3_moe/modular_qwen3_moe.py`).
//!
//! Qwen3's attention (per-head q/k norms, Qwen2's sliding-window rule) with a sparse
//! mixture-of-experts MLP on every `decoder_sparse_step`-th layer not in `mlp_only_layers`:
//! `num_experts` experts of `moe_intermediate_size`, `num_experts_per_tok` per token, the routing
//! probabilities renormalised when `norm_topk_prob` (Qwen3-30B-A3B sets it).

use super::config::moe::QwenMoeFields;
use super::config::{ConfigFile, ModelConfig};
use super::{qwen3, Architecture};
use crate::error::Result;

/// `qwen3_moe`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = qwen3::parse(file)?;
    cfg.architecture = Architecture::Qwen3Moe;
    let moe = file
        .parse::<QwenMoeFields>()?
        .lower(cfg.num_hidden_layers, file)?;
    cfg.moe = Some(moe);
    Ok(cfg)
}
