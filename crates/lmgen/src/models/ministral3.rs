//! Ministral 3 (HF `Ministral3ForCausalLM`, `models/ministral3/modular_ministral3.py`), also the
//! text model of Mistral Small 3.x / Ministral 3 vision-language checkpoints (`mistral3`).
//!
//! Differences from Mistral: rotated queries are multiplied by
//! `1 + llama_4_scaling_beta * ln(1 + floor(position / original_max_position_embeddings))`
//! (both read from `rope_parameters`; no scaling without a beta); YaRN RoPE in the released
//! checkpoints; `rms_norm_eps` defaults to 1e-5 and there is no window by default.

use serde::Deserialize;

use super::config::{ConfigFile, ModelConfig, QueryScaling};
use super::llama::{self, Defaults};
use super::mistral::with_window_everywhere;
use super::Architecture;
use crate::error::Result;

/// `Ministral3Config`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    rms_norm_eps: 1e-5,
    max_position_embeddings: 262_144,
    rope_theta: 1_000_000.0,
    ..llama::DEFAULTS
};

#[derive(Debug, Deserialize)]
struct Config {
    rope_parameters: Option<Scaling>,
    rope_scaling: Option<Scaling>,
}

#[derive(Debug, Deserialize)]
struct Scaling {
    llama_4_scaling_beta: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

/// `ministral3`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = with_window_everywhere(file.parse::<llama::Config>()?.lower(
        file,
        Architecture::Ministral3,
        &DEFAULTS,
    )?);
    let c: Config = file.parse()?;
    if let Some(s) = c.rope_parameters.or(c.rope_scaling) {
        if let Some(beta) = s.llama_4_scaling_beta {
            let original = s.original_max_position_embeddings.ok_or_else(|| {
                file.err(
                    "`rope_parameters.original_max_position_embeddings` is missing (needed by \
                     `llama_4_scaling_beta`)"
                        .into(),
                )
            })?;
            if original == 0 {
                return Err(file.err(
                    "`rope_parameters.original_max_position_embeddings` must be greater than 0"
                        .into(),
                ));
            }
            cfg.query_scaling = Some(QueryScaling {
                beta,
                original_max_position_embeddings: original,
            });
        }
    }
    Ok(cfg)
}
