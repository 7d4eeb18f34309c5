//! `config.json` parsed into one concrete [`ModelConfig`] for every architecture.
//!
//! Reads both layouts that real checkpoints use: transformers 4 (`rope_theta`, `rope_scaling`,
//! `torch_dtype`) and transformers 5 (`rope_parameters`, `dtype`). Defaults follow each model's
//! `configuration_*.py` in transformers.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Architecture;
use crate::error::{Error, Result};
use crate::load::Checkpoint;

/// The activation of the MLP (`hidden_act` / `hidden_activation` / `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`.
    Silu,
    /// `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `gelu`: the exact erf form.
    Gelu,
}

/// Whether a layer attends to everything before it or to a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    FullAttention,
    SlidingAttention,
}

/// RoPE scaling (`rope_type` of `rope_parameters` / `rope_scaling`), transformers' `modeling_rope_utils.py`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// NTK-aware base growth once the sequence passes `max_position_embeddings`.
    Dynamic {
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// Everything the model code needs from `config.json`, under HF names where one exists.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    /// `rms_norm_eps` or `layer_norm_epsilon`.
    pub norm_eps: f64,
    /// `None` for learned absolute positions (GPT-2).
    pub rope: Option<RopeConfig>,
    pub tie_word_embeddings: bool,
    /// Bias on q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub hidden_act: Activation,
    pub sliding_window: Option<usize>,
    /// One entry per layer.
    pub layer_types: Vec<LayerType>,
    /// Gemma 2: `tanh(x / cap) * cap` on attention scores.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2: `tanh(x / cap) * cap` on the final logits.
    pub final_logit_softcapping: Option<f64>,
    /// Attention scale is `scaling^-0.5`: `query_pre_attn_scalar` (Gemma 2) or `head_dim`.
    pub attention_scale: f64,
    /// GPT-2 `scale_attn_by_inverse_layer_idx`.
    pub scale_attn_by_inverse_layer_idx: bool,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// The dtype the checkpoint was saved in (`dtype` or `torch_dtype`), if given.
    pub torch_dtype: Option<String>,
}

/// Field access on a JSON object with errors that name the file and the field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    fn err(&self, message: String) -> Error {
        Error::ModelConfig {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.err(format!("`{key}` must be a non-negative integer, got {v}"))
            }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format!("`{key}` is missing")))
    }

    fn positive(&self, key: &str) -> Result<usize> {
        let n = self.usize(key)?;
        if n == 0 {
            return Err(self.err(format!("`{key}` must be greater than 0")));
        }
        Ok(n)
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` must be a number, got {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` must be a string, got {v}"))),
        }
    }

    /// A token id; transformers also allows a list (the first entry is the id that matters here).
    fn opt_token(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(a.first().and_then(Value::as_u64).map(|n| n as u32)),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` must be a token id, got {v}"))),
        }
    }
}

impl ModelConfig {
    /// Parses the checkpoint's `config.json` (for a GGUF file, the config its metadata implies).
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        Self::from_json(&checkpoint.config, &checkpoint.config_path())
    }

    /// Parses a `config.json` value; `path` is only used in error messages.
    pub fn from_json(config: &Value, path: &Path) -> Result<Self> {
        let path: PathBuf = path.to_path_buf();
        let obj = config.as_object().ok_or_else(|| Error::ModelConfig {
            path: path.clone(),
            message: "expected a JSON object".into(),
        })?;
        let f = Fields { obj, path: &path };
        let model_type = f
            .opt_str("model_type")?
            .ok_or_else(|| f.err("`model_type` is missing".into()))?;
        let architecture = Architecture::from_model_type(model_type, &path)?;
        let mut cfg = match architecture {
            Architecture::Gpt2 => gpt2_fields(&f)?,
            _ => decoder_fields(&f, architecture)?,
        };
        cfg.torch_dtype = f
            .opt_str("dtype")?
            .or(f.opt_str("torch_dtype")?)
            .map(str::to_string);
        cfg.check(&f)?;
        Ok(cfg)
    }

    /// Number of query heads per key/value head (GQA).
    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    fn check(&self, f: &Fields<'_>) -> Result<()> {
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(f.err(format!(
                "`num_attention_heads` ({}) must be a multiple of `num_key_value_heads` ({})",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if self.rope.is_some() && self.head_dim % 2 != 0 {
            return Err(f.err(format!(
                "`head_dim` must be even for RoPE, got {}",
                self.head_dim
            )));
        }
        if self.layer_types.len() != self.num_hidden_layers {
            return Err(f.err(format!(
                "`layer_types` has {} entries but `num_hidden_layers` is {}",
                self.layer_types.len(),
                self.num_hidden_layers
            )));
        }
        if self.layer_types.contains(&LayerType::SlidingAttention) && self.sliding_window.is_none()
        {
            return Err(
                f.err("`layer_types` has sliding layers but `sliding_window` is not set".into())
            );
        }
        Ok(())
    }
}

fn activation(f: &Fields<'_>, key: &str, name: &str) -> Result<Activation> {
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
        "gelu" => Ok(Activation::Gelu),
        other => Err(f.err(format!(
            "`{key}` = \"{other}\" is not supported; supported: silu, gelu, gelu_new, gelu_pytorch_tanh"
        ))),
    }
}

/// Llama-family fields (Llama, Mistral, Qwen2, Gemma2).
fn decoder_fields(f: &Fields<'_>, arch: Architecture) -> Result<ModelConfig> {
    let hidden_size = f.positive("hidden_size")?;
    let num_attention_heads = f.positive("num_attention_heads")?;
    let num_hidden_layers = f.positive("num_hidden_layers")?;
    let is_gemma = arch == Architecture::Gemma2;
    let head_dim = match f.opt_usize("head_dim")? {
        Some(d) if d > 0 => d,
        _ => hidden_size / num_attention_heads,
    };
    let act_key = if is_gemma && f.get("hidden_activation").is_some() {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let act_default = if is_gemma {
        "gelu_pytorch_tanh"
    } else {
        "silu"
    };
    let hidden_act = activation(f, act_key, f.opt_str(act_key)?.unwrap_or(act_default))?;
    let sliding_window = match arch {
        Architecture::Mistral | Architecture::Gemma2 | Architecture::Qwen2 => {
            f.opt_usize("sliding_window")?
        }
        _ => None,
    };
    let layer_types = layer_types(f, arch, num_hidden_layers, sliding_window)?;
    let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
    let query_pre_attn_scalar = if is_gemma {
        f.opt_f64("query_pre_attn_scalar")?.unwrap_or(256.0)
    } else {
        head_dim as f64
    };
    Ok(ModelConfig {
        architecture: arch,
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads: f
            .opt_usize("num_key_value_heads")?
            .filter(|&n| n > 0)
            .unwrap_or(num_attention_heads),
        head_dim,
        max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        rope: Some(rope(f)?),
        tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(is_gemma),
        qkv_bias: attention_bias || arch == Architecture::Qwen2,
        o_bias: attention_bias && arch != Architecture::Qwen2,
        mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
        hidden_act,
        sliding_window,
        layer_types,
        attn_logit_softcapping: if is_gemma {
            f.opt_f64("attn_logit_softcapping")?
        } else {
            None
        },
        final_logit_softcapping: if is_gemma {
            f.opt_f64("final_logit_softcapping")?
        } else {
            None
        },
        attention_scale: query_pre_attn_scalar,
        scale_attn_by_inverse_layer_idx: false,
        bos_token_id: f.opt_token("bos_token_id")?,
        pad_token_id: f.opt_token("pad_token_id")?,
        torch_dtype: None,
    })
}

/// Which layers use a sliding window: `layer_types` when given, else each model's default rule.
fn layer_types(
    f: &Fields<'_>,
    arch: Architecture,
    n: usize,
    sliding_window: Option<usize>,
) -> Result<Vec<LayerType>> {
    if let Some(v) = f.get("layer_types") {
        let list = v
            .as_array()
            .ok_or_else(|| f.err(format!("`layer_types` must be a list, got {v}")))?;
        return list
            .iter()
            .map(|t| match t.as_str() {
                // A sliding layer with no window (e.g. Qwen2 with `use_sliding_window: false`) is full.
                Some("sliding_attention") if sliding_window.is_some() => Ok(LayerType::SlidingAttention),
                Some("sliding_attention") | Some("full_attention") => Ok(LayerType::FullAttention),
                _ => Err(f.err(format!(
                    "`layer_types` entries must be \"full_attention\" or \"sliding_attention\", got {t}"
                ))),
            })
            .collect();
    }
    let sliding = |i: usize| -> Result<bool> {
        Ok(sliding_window.is_some()
            && match arch {
                Architecture::Mistral => true,
                Architecture::Gemma2 => (i + 1) % 2 == 1,
                Architecture::Qwen2 => {
                    f.opt_bool("use_sliding_window")?.unwrap_or(false)
                        && i >= f.opt_usize("max_window_layers")?.unwrap_or(28)
                }
                _ => false,
            })
    };
    (0..n)
        .map(|i| {
            Ok(if sliding(i)? {
                LayerType::SlidingAttention
            } else {
                LayerType::FullAttention
            })
        })
        .collect()
}

/// RoPE from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (transformers 4).
fn rope(f: &Fields<'_>) -> Result<RopeConfig> {
    let (params, key) = match f.get("rope_parameters") {
        Some(p) => (Some(p), "rope_parameters"),
        None => (f.get("rope_scaling"), "rope_scaling"),
    };
    let params = match params {
        None => None,
        Some(p) => Some(
            p.as_object()
                .ok_or_else(|| f.err(format!("`{key}` must be an object, got {p}")))?,
        ),
    };
    let sub = params.map(|obj| Fields { obj, path: f.path });
    let theta = match &sub {
        Some(s) if s.get("rope_theta").is_some() => s.opt_f64("rope_theta")?,
        _ => f.opt_f64("rope_theta")?,
    }
    .unwrap_or(10000.0);
    let Some(s) = sub else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::Default,
        });
    };
    let kind = s
        .opt_str("rope_type")?
        .or(s.opt_str("type")?)
        .unwrap_or("default");
    let factor = || -> Result<f64> {
        s.opt_f64("factor")?.ok_or_else(|| {
            f.err(format!(
                "`{key}.factor` is missing for rope_type \"{kind}\""
            ))
        })
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "dynamic" => RopeScaling::Dynamic { factor: factor()? },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: s
                .opt_f64("low_freq_factor")?
                .ok_or_else(|| f.err(format!("`{key}.low_freq_factor` is missing")))?,
            high_freq_factor: s
                .opt_f64("high_freq_factor")?
                .ok_or_else(|| f.err(format!("`{key}.high_freq_factor` is missing")))?,
            original_max_position_embeddings: s
                .opt_usize("original_max_position_embeddings")?
                .ok_or_else(|| {
                    f.err(format!("`{key}.original_max_position_embeddings` is missing"))
                })?,
        },
        other => {
            return Err(f.err(format!(
                "`{key}.rope_type` = \"{other}\" is not supported yet; supported: default, linear, dynamic, llama3"
            )))
        }
    };
    Ok(RopeConfig { theta, scaling })
}

/// GPT-2 names its fields differently (`n_embd`, `n_head`, ...).
fn gpt2_fields(f: &Fields<'_>) -> Result<ModelConfig> {
    let hidden_size = f.positive("n_embd")?;
    let heads = f.positive("n_head")?;
    let layers = f.positive("n_layer")?;
    if hidden_size % heads != 0 {
        // GPT2Attention raises the same ValueError; the fused c_attn weight alone would not catch it.
        return Err(f.err(format!(
            "`n_embd` ({hidden_size}) must be divisible by `n_head` ({heads})"
        )));
    }
    if f.opt_bool("reorder_and_upcast_attn")?.unwrap_or(false) {
        // Only changes numerics in half precision; lmgen always computes attention scores in the compute dtype.
        tracing::debug!("reorder_and_upcast_attn is set; attention runs in the compute dtype");
    }
    if !f.opt_bool("scale_attn_weights")?.unwrap_or(true) {
        return Err(f.err("`scale_attn_weights: false` is not supported".into()));
    }
    Ok(ModelConfig {
        architecture: Architecture::Gpt2,
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.opt_usize("n_inner")?.unwrap_or(4 * hidden_size),
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        head_dim: hidden_size / heads,
        max_position_embeddings: f.positive("n_positions")?,
        norm_eps: f.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        rope: None,
        tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(true),
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        hidden_act: activation(
            f,
            "activation_function",
            f.opt_str("activation_function")?.unwrap_or("gelu_new"),
        )?,
        sliding_window: None,
        layer_types: vec![LayerType::FullAttention; layers],
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        attention_scale: (hidden_size / heads) as f64,
        scale_attn_by_inverse_layer_idx: f
            .opt_bool("scale_attn_by_inverse_layer_idx")?
            .unwrap_or(false),
        bos_token_id: f.opt_token("bos_token_id")?,
        pad_token_id: f.opt_token("pad_token_id")?,
        torch_dtype: None,
    })
}
