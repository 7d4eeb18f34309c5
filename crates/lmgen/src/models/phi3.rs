//! Phi-3 and Phi-4-mini (HF `Phi3ForCausalLM`, `models/phi3/modular_phi3.py`).
//!
//! Differences from Llama: q, k and v stored as one `qkv_proj` and gate and up as one
//! `gate_up_proj` (the gate's rows first), loaded as stored; RoPE may rotate only the first
//! `partial_rotary_factor` of each head (Phi-4-mini: 0.75) and may be LongRoPE (`rope_scaling`
//! type `longrope`: `short_factor` up to `original_max_position_embeddings`, `long_factor`
//! past it, cos/sin scaled); Mistral's sliding window on every layer; `rms_norm_eps` defaults
//! to 1e-5. With LongRoPE, generation that crosses `original_max_position_embeddings` runs the
//! whole sequence again once, as `Phi3ForCausalLM.prepare_inputs_for_generation` does
//! ([`ModelConfig::recompute_cache_at`]).

use super::config::{ConfigFile, ModelConfig, ProjectionLayout, RopeScaling};
use super::llama::{self, Defaults};
use super::mistral::with_window_everywhere;
use super::Architecture;
use crate::error::Result;

/// `Phi3Config`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    rms_norm_eps: 1e-5,
    max_position_embeddings: 4096,
    ..llama::DEFAULTS
};

/// `phi3`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = with_window_everywhere(file.parse::<llama::Config>()?.lower(
        file,
        Architecture::Phi3,
        &DEFAULTS,
    )?);
    cfg.projections = ProjectionLayout::Fused;
    cfg.mlp_bias = false;
    // transformers resets the cache for any Phi-3 config; only LongRoPE's switch of factors makes
    // the recomputed keys differ, so the other configs keep their cache.
    if let Some(RopeScaling::LongRope {
        original_max_position_embeddings,
        ..
    }) = cfg.rope.as_ref().map(|r| &r.scaling)
    {
        cfg.recompute_cache_at = Some(*original_max_position_embeddings);
    }
    Ok(cfg)
}
