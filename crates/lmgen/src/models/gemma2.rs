//! Gemma 2 (HF `Gemma2ForCausalLM`, `models/gemma2/modular_gemma2.py`).
//!
//! Differences from Llama:
//! - embeddings are scaled by `sqrt(hidden_size)` (in the compute dtype);
//! - RMSNorm scales by `1 + w`, and each layer has four norms: input, post-attention (on the
//!   attention output, before the residual), pre-feedforward and post-feedforward;
//! - attention scale is `query_pre_attn_scalar^-0.5`; the final logits are soft-capped
//!   (`tanh(x / cap) * cap`, `final_logit_softcapping`), and so are attention scores
//!   (`attn_logit_softcapping`) under `AttnImplementation::Eager` only, as in transformers, whose
//!   default `sdpa` attention skips it;
//! - even layers (0, 2, ...) attend through a sliding window, odd ones fully (`layer_types`);
//! - GeLU (tanh approximation) gated MLP (`hidden_activation`), tied LM head.

use serde::Deserialize;

use super::config::{
    Activation, ConfigFile, EmbeddingScale, LayerType, ModelConfig, NormKind, NormPlacement,
};
use super::llama::{self, nullable, Defaults};
use super::Architecture;
use crate::error::Result;

/// `Gemma2Config`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    tie_word_embeddings: true,
    max_position_embeddings: 8192,
    sliding_window: Some(4096),
    ..llama::DEFAULTS
};

/// The fields Gemma 2 and Gemma 3 add to Llama's.
#[derive(Debug, Deserialize)]
pub struct Config {
    pub hidden_activation: Option<String>,
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    pub final_logit_softcapping: Option<Option<f64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub attn_logit_softcapping: Option<Option<f64>>,
}

/// Soft-capping defaults (`None` = off).
#[derive(Debug, Clone, Copy)]
pub struct Softcaps {
    pub final_logit: Option<f64>,
    pub attn_logit: Option<f64>,
}

impl Config {
    /// Gemma's norms, scaling, activation and soft-capping on a lowered Llama config.
    pub fn apply(
        &self,
        cfg: &mut ModelConfig,
        file: &ConfigFile<'_>,
        softcaps: Softcaps,
    ) -> Result<()> {
        cfg.norm = NormKind::RmsUnitOffset;
        cfg.norm_placement = NormPlacement::Sandwich;
        cfg.embedding_scale = Some(EmbeddingScale::SqrtHiddenSize);
        // `hidden_activation` wins over `hidden_act`, as in `Gemma2Config`.
        let (key, name) = match (&self.hidden_activation, file.str_field("hidden_act")?) {
            (Some(a), _) => ("hidden_activation", a.as_str()),
            (None, Some(a)) => ("hidden_act", a),
            (None, None) => ("hidden_activation", "gelu_pytorch_tanh"),
        };
        cfg.hidden_act = Activation::from_hf(name, key, file)?;
        cfg.attention_scaling = self.query_pre_attn_scalar.unwrap_or(256.0).powf(-0.5);
        cfg.final_logit_softcapping = self.final_logit_softcapping.unwrap_or(softcaps.final_logit);
        cfg.attn_logit_softcapping = self.attn_logit_softcapping.unwrap_or(softcaps.attn_logit);
        Ok(())
    }
}

/// `gemma2`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let base: llama::Config = file.parse()?;
    let explicit_layer_types = base.layer_types.is_some();
    let mut cfg = base.lower(file, Architecture::Gemma2, &DEFAULTS)?;
    let softcaps = Softcaps {
        final_logit: Some(30.0),
        attn_logit: Some(50.0),
    };
    file.parse::<Config>()?.apply(&mut cfg, file, softcaps)?;
    if !explicit_layer_types {
        cfg.layer_types = (0..cfg.num_hidden_layers)
            .map(|i| match cfg.sliding_window {
                Some(_) if i % 2 == 0 => LayerType::SlidingAttention,
                _ => LayerType::FullAttention,
            })
            .collect();
    }
    Ok(cfg)
}
