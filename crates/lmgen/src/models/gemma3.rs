//! Gemma 3 (HF `Gemma3ForCausalLM`, `models/gemma3/modular_gemma3.py`), also the language model
//! of `Gemma3ForConditionalGeneration` checkpoints (`gemma3`, 4B and up).
//!
//! Differences from Gemma 2: `q_norm` and `k_norm` (`1 + w` RMSNorm over each head) before RoPE;
//! sliding layers rotate with their own base (`rope_parameters.sliding_attention`, or
//! `rope_local_base_freq`, default 10,000) while full layers use `rope_parameters.full_attention`
//! (or `rope_theta` + `rope_scaling`, default base 1,000,000); `layer_types` defaults to five
//! sliding layers then one full (`sliding_window_pattern`); no soft-capping by default.

use serde::Deserialize;

use super::config::rope::{self, RopeDefaults};
use super::config::{ConfigFile, LayerType, ModelConfig, QkNorm};
use super::gemma2::{self, Softcaps};
use super::llama::{self, Defaults};
use super::Architecture;
use crate::error::{Error, Result};

/// `Gemma3TextConfig`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    tie_word_embeddings: true,
    rope_theta: 1_000_000.0,
    max_position_embeddings: 131_072,
    sliding_window: Some(4096),
    ..llama::DEFAULTS
};

#[derive(Debug, Deserialize)]
struct Config {
    rope_local_base_freq: Option<f64>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    private_sliding_window_pattern: Option<usize>,
    #[serde(default)]
    use_bidirectional_attention: bool,
}

/// `gemma3_text`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let base: llama::Config = file.parse()?;
    let explicit_layer_types = base.layer_types.is_some();
    let mut cfg = base.lower(file, Architecture::Gemma3, &DEFAULTS)?;
    let softcaps = Softcaps {
        final_logit: None,
        attn_logit: None,
    };
    file.parse::<gemma2::Config>()?
        .apply(&mut cfg, file, softcaps)?;
    let g: Config = file.parse()?;
    if g.use_bidirectional_attention {
        return Err(Error::unsupported(format!(
            "`{}`: `use_bidirectional_attention: true` (an embedding model) is not a causal \
             language model",
            file.path.display()
        )));
    }
    cfg.qk_norm = Some(QkNorm::PerHead);
    let (full, sliding) = rope::parse_per_layer_type(
        file,
        RopeDefaults {
            theta: DEFAULTS.rope_theta,
            max_position_embeddings: cfg.max_position_embeddings,
        },
        g.rope_local_base_freq.unwrap_or(10_000.0),
    )?;
    cfg.rope = Some(full);
    cfg.rope_local = Some(sliding);
    if !explicit_layer_types {
        let pattern = g
            .sliding_window_pattern
            .or(g.private_sliding_window_pattern)
            .unwrap_or(6);
        if pattern == 0 {
            return Err(file.err("`sliding_window_pattern` must be greater than 0".into()));
        }
        cfg.layer_types = (0..cfg.num_hidden_layers)
            .map(|i| match cfg.sliding_window {
                Some(_) if (i + 1) % pattern != 0 => LayerType::SlidingAttention,
                _ => LayerType::FullAttention,
            })
            .collect();
    }
    Ok(cfg)
}
