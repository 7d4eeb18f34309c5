//! Llama (HF `LlamaForCausalLM`, `models/llama/modeling_llama.py`): RoPE (default, linear,
//! dynamic, llama3, yarn), grouped-query attention, RMSNorm before attention and MLP, SiLU-gated
//! MLP, tied or untied LM head. It runs on the shared [`super::decoder::Decoder`].
//!
//! Its [`Config`] holds the fields every Llama-derived `config.json` shares; the other
//! architectures parse it, then lower it with their own [`Defaults`] and change what differs.

use serde::{Deserialize, Deserializer};

use super::config::rope::{self, RopeDefaults};
use super::config::{
    Activation, ConfigFile, LayerType, ModelConfig, NormKind, NormPlacement, ProjectionLayout,
    SavedDtype, TokenIdField,
};
use super::Architecture;
use crate::error::Result;

/// The `config.json` fields of `LlamaConfig` that lmgen reads.
#[derive(Debug, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub hidden_act: Option<String>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    /// Absent (the architecture's default) differs from `null` (no window).
    #[serde(default, deserialize_with = "nullable")]
    pub sliding_window: Option<Option<usize>>,
    pub layer_types: Option<Vec<String>>,
    pub bos_token_id: Option<TokenIdField>,
    pub pad_token_id: Option<TokenIdField>,
}

impl Config {
    /// Parses `file`, with `intermediate_size` taken as `fallback` when the file has none (LFM2's
    /// `block_ff_dim`; a model whose every layer is sparse has no dense MLP).
    pub(crate) fn parse_with_intermediate(
        file: &ConfigFile<'_>,
        fallback: Option<usize>,
    ) -> Result<Self> {
        match (fallback, file.value.get("intermediate_size")) {
            (Some(n), None) => {
                let mut value = file.value.clone();
                if let Some(map) = value.as_object_mut() {
                    map.insert("intermediate_size".into(), n.into());
                }
                ConfigFile {
                    value: &value,
                    ..*file
                }
                .parse()
            }
            _ => file.parse(),
        }
    }
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or set.
pub(crate) fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

/// What an architecture's `configuration_*.py` supplies for absent fields.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub sliding_window: Option<usize>,
}

/// `LlamaConfig`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    rope_theta: 10_000.0,
    max_position_embeddings: 2048,
    sliding_window: None,
};

/// `llama`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let mut cfg = file
        .parse::<Config>()?
        .lower(file, Architecture::Llama, &DEFAULTS)?;
    // Llama has no sliding window, whatever the file says.
    cfg.sliding_window = None;
    cfg.layer_types = vec![LayerType::FullAttention; cfg.num_hidden_layers];
    Ok(cfg)
}

impl Config {
    /// The Llama decoder this config describes: pre-norm RMSNorm, separate projections,
    /// `attention_bias` on q/k/v/o, `layer_types` as given (else full attention), every layer
    /// rotated, `head_dim^-0.5` attention scaling.
    pub fn lower(
        self,
        file: &ConfigFile<'_>,
        architecture: Architecture,
        defaults: &Defaults,
    ) -> Result<ModelConfig> {
        let head_dim = match self.head_dim {
            Some(d) if d > 0 => d,
            _ => self.hidden_size / self.num_attention_heads.max(1),
        };
        let max_position_embeddings = self
            .max_position_embeddings
            .unwrap_or(defaults.max_position_embeddings);
        let rope = rope::parse(
            file,
            RopeDefaults {
                theta: defaults.rope_theta,
                max_position_embeddings,
            },
        )?;
        let sliding_window = self.sliding_window.unwrap_or(defaults.sliding_window);
        let layer_types = match &self.layer_types {
            Some(list) => layer_types(list, sliding_window, file)?,
            None => vec![LayerType::FullAttention; self.num_hidden_layers],
        };
        let hidden_act = match &self.hidden_act {
            Some(name) => Activation::from_hf(name, "hidden_act", file)?,
            None => Activation::Silu,
        };
        let bias = self.attention_bias.unwrap_or(false);
        let saved: SavedDtype = file.parse()?;
        Ok(ModelConfig {
            architecture,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self
                .num_key_value_heads
                .filter(|&n| n > 0)
                .unwrap_or(self.num_attention_heads),
            head_dim,
            max_position_embeddings,
            norm_eps: self.rms_norm_eps.unwrap_or(defaults.rms_norm_eps),
            norm: NormKind::Rms,
            norm_placement: NormPlacement::Pre,
            qk_norm: None,
            rope: Some(rope),
            rope_local: None,
            tie_word_embeddings: self
                .tie_word_embeddings
                .unwrap_or(defaults.tie_word_embeddings),
            qkv_bias: bias,
            o_bias: bias,
            mlp_bias: self.mlp_bias.unwrap_or(false),
            projections: ProjectionLayout::Separate,
            hidden_act,
            sliding_window,
            rope_layers: vec![true; self.num_hidden_layers],
            layer_types,
            embedding_scale: None,
            residual_multiplier: None,
            attention_scaling: (head_dim as f64).powf(-0.5),
            query_scaling: None,
            logits_scaling: None,
            recompute_cache_at: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            bos_token_id: self.bos_token_id.as_ref().and_then(TokenIdField::first),
            pad_token_id: self.pad_token_id.as_ref().and_then(TokenIdField::first),
            torch_dtype: saved.into_name(),
            moe: None,
            attention_sinks: false,
            attn_output_gate: false,
            linear_attention: None,
            short_conv: None,
            weight_renames: &[],
            gemma4: None,
            whisper: None,
        })
    }
}

/// `layer_types` entries: a sliding layer with no window (e.g. Qwen2 with
/// `use_sliding_window: false`) attends to everything.
pub fn layer_types(
    list: &[String],
    sliding_window: Option<usize>,
    file: &ConfigFile<'_>,
) -> Result<Vec<LayerType>> {
    list.iter()
        .map(|t| match t.as_str() {
            "sliding_attention" if sliding_window.is_some() => Ok(LayerType::SlidingAttention),
            "sliding_attention" | "full_attention" => Ok(LayerType::FullAttention),
            "linear_attention" => Ok(LayerType::LinearAttention),
            "conv" => Ok(LayerType::Conv),
            other => Err(file.err(format!(
                "`{}layer_types` entries must be \"full_attention\", \"sliding_attention\", \
                 \"linear_attention\" or \"conv\", got \"{other}\"",
                file.prefix
            ))),
        })
        .collect()
}
