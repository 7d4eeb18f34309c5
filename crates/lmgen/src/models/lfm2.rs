//! LFM2 (HF `Lfm2ForCausalLM`, `models/lfm2/modeling_lfm2.py`).
//!
//! Short gated convolutions (`conv` layers: `out_proj(C * conv(B * x))`, a convolution state of
//! `conv_L_cache - 1` inputs per sequence) beside attention layers (`full_attn_idxs` /
//! `layer_types`) with per-head q/k norms; pre-norm layers, a SiLU-gated MLP whose width may be
//! adjusted (`block_auto_adjust_ff_dim`), a tied head. It names its modules its own way
//! (`operator_norm`, `ffn_norm`, `feed_forward.w1/w3/w2`, `self_attn.out_proj`,
//! `q_layernorm`, `embedding_norm`), mapped onto the decoder's by [`RENAMES`].

use serde::Deserialize;

use super::config::{ConfigFile, ModelConfig, QkNorm, ShortConvConfig};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::Result;

/// `Lfm2Config`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
    rope_theta: 1_000_000.0,
    max_position_embeddings: 128_000,
    sliding_window: None,
};

/// The decoder's module names -> LFM2's.
const RENAMES: &[(&str, &str)] = &[
    ("input_layernorm", "operator_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "feed_forward.w1"),
    ("mlp.up_proj", "feed_forward.w3"),
    ("mlp.down_proj", "feed_forward.w2"),
    ("self_attn.o_proj", "self_attn.out_proj"),
    ("self_attn.q_norm", "self_attn.q_layernorm"),
    ("self_attn.k_norm", "self_attn.k_layernorm"),
    ("model.norm", "model.embedding_norm"),
];

/// LFM2's own `config.json` fields.
#[derive(Debug, Deserialize)]
struct Fields {
    norm_eps: Option<f64>,
    tie_embedding: Option<bool>,
    block_ff_dim: Option<usize>,
    conv_bias: Option<bool>,
    #[serde(rename = "conv_L_cache")]
    conv_l_cache: Option<usize>,
    block_multiple_of: Option<usize>,
    /// Absent is 1.0; `null` skips the multiplier and the rounding.
    #[serde(default, deserialize_with = "llama::nullable")]
    block_ffn_dim_multiplier: Option<Option<f64>>,
    block_auto_adjust_ff_dim: Option<bool>,
    full_attn_idxs: Option<Vec<usize>>,
}

/// `lfm2`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let f: Fields = file.parse()?;
    // `block_ff_dim` wins over `intermediate_size` (`kwargs.pop("block_ff_dim", ...)`).
    let mut base = llama::Config::parse_with_intermediate(file, f.block_ff_dim)?;
    if let Some(ff) = f.block_ff_dim {
        base.intermediate_size = ff;
    }
    if base.layer_types.is_none() {
        let n = base.num_hidden_layers;
        let full = f.full_attn_idxs.clone().unwrap_or_else(|| (0..n).collect());
        base.layer_types = Some(
            (0..n)
                .map(|i| {
                    if full.contains(&i) {
                        "full_attention"
                    } else {
                        "conv"
                    }
                    .to_string()
                })
                .collect(),
        );
    }
    let mut cfg = base.lower(file, Architecture::Lfm2, &DEFAULTS)?;
    cfg.norm_eps = f.norm_eps.unwrap_or(DEFAULTS.rms_norm_eps);
    if let Some(tie) = f.tie_embedding {
        cfg.tie_word_embeddings = tie;
    }
    // `Lfm2MLP`: with `block_auto_adjust_ff_dim`, 2/3 of the width, times the multiplier, rounded
    // up to `block_multiple_of`.
    if f.block_auto_adjust_ff_dim.unwrap_or(true) {
        let mut ff = 2 * cfg.intermediate_size / 3;
        if let Some(m) = f.block_ffn_dim_multiplier.unwrap_or(Some(1.0)) {
            ff = (m * ff as f64) as usize;
            let multiple = f.block_multiple_of.unwrap_or(256).max(1);
            ff = multiple * ff.div_ceil(multiple);
        }
        cfg.intermediate_size = ff;
    }
    cfg.qk_norm = Some(QkNorm::PerHead);
    cfg.short_conv = Some(ShortConvConfig {
        kernel: f.conv_l_cache.unwrap_or(3),
        bias: f.conv_bias.unwrap_or(false),
    });
    cfg.weight_renames = RENAMES;
    Ok(cfg)
}
