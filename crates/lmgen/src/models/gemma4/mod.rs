//! Gemma 4's text model (HF `Gemma4ForCausalLM`, `models/gemma4/modular_gemma4.py`), also the
//! language model of `Gemma4ForConditionalGeneration` checkpoints (`gemma4`).
//!
//! Differences from Gemma 3:
//! - RMSNorm scales by `w` (not `1 + w`), in f32; values get a weightless RMSNorm (`v_norm`)
//!   beside `q_norm` and `k_norm`; attention scores are not scaled (`scaling = 1`);
//! - layers differ in shape: `per_layer_config` (or, as the published checkpoints write it,
//!   `global_head_dim` and `num_global_key_value_heads` for full layers) sets each layer's
//!   `head_dim` and `num_key_value_heads`, and each layer type rotates with its own head size;
//!   full layers use `"proportional"` RoPE (a share of the frequencies over the whole head);
//! - per-layer inputs (`hidden_size_per_layer_input` > 0): a second embedding table
//!   (`embed_tokens_per_layer`, `[vocab_size_per_layer_input, layers * per_layer]`) plus a
//!   projection of the embeddings give each layer a `[per_layer]` input, which gates a residual
//!   branch after the MLP (`per_layer_input_gate`, `per_layer_projection`,
//!   `post_per_layer_input_norm`);
//! - every layer's output is multiplied by its stored `layer_scalar`;
//! - shared KV layers (`num_kv_shared_layers`): the last N layers compute no keys or values and
//!   attend to those of the last earlier layer of their type (with `use_double_wide_mlp`, their
//!   MLPs are twice as wide);
//! - `attention_k_eq_v`: full layers have no `v_proj`; their values are the keys' projection
//!   (before `k_norm` and RoPE, then `v_norm`);
//! - `enable_moe_block`: a sparse MoE beside the dense MLP in every layer, with its own router
//!   (weightless norm, `scale`, softmax, top-k renormalised, `per_expert_scale`) and norms;
//! - final-logit soft-capping when `final_logit_softcapping` is set (default off).
//!
//! `use_bidirectional_attention: "vision"` changes nothing for text; `"all"` (an encoder) is
//! refused.
mod attention;
mod model;
mod moe;

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::Deserialize;
use serde_json::Value;

use super::config::rope::{self, RopeDefaults};
use super::config::{
    Activation, ConfigFile, EmbeddingScale, LayerType, ModelConfig, NormKind, NormPlacement,
    QkNorm, RopeConfig, RopeScaling,
};
use super::llama::{self, nullable, Defaults};
use super::Architecture;
use crate::error::{Error, Result};

pub use model::load;
pub(crate) use model::tensor_specs;

/// `Gemma4TextConfig`'s defaults.
pub const DEFAULTS: Defaults = Defaults {
    tie_word_embeddings: true,
    rope_theta: 1_000_000.0,
    max_position_embeddings: 131_072,
    sliding_window: Some(512),
    ..llama::DEFAULTS
};

/// The fields of `Gemma4TextConfig` beyond Llama's.
#[derive(Debug, Deserialize)]
struct Fields {
    hidden_activation: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    final_logit_softcapping: Option<Option<f64>>,
    use_bidirectional_attention: Option<String>,
    hidden_size_per_layer_input: Option<usize>,
    vocab_size_per_layer_input: Option<usize>,
    attention_k_eq_v: Option<bool>,
    num_kv_shared_layers: Option<usize>,
    enable_moe_block: Option<bool>,
    use_double_wide_mlp: Option<bool>,
    num_experts: Option<usize>,
    top_k_experts: Option<usize>,
    moe_intermediate_size: Option<usize>,
    global_head_dim: Option<usize>,
    num_global_key_value_heads: Option<usize>,
    per_layer_config: Option<BTreeMap<String, serde_json::Map<String, Value>>>,
    rope_parameters: Option<Value>,
}

/// What Gemma 4 adds to the decoder description, resolved from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma4Spec {
    /// One per layer.
    pub layers: Vec<LayerSpec>,
    /// Per-layer input embeddings, `None` when `hidden_size_per_layer_input` is 0.
    pub per_layer_input: Option<PerLayerInput>,
    /// The sparse MoE beside every dense MLP (`enable_moe_block`).
    pub moe: Option<MoeSpec>,
}

/// One layer's attention and MLP shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// `head_dim` of the layer (`per_layer_config`).
    pub head_dim: usize,
    /// `num_key_value_heads` of the layer (`per_layer_config`).
    pub num_key_value_heads: usize,
    /// `attention_k_eq_v` on a full layer: no `v_proj`, the values are the keys' projection.
    pub values_are_keys: bool,
    /// A shared KV layer: the layer whose keys and values it attends to.
    pub kv_source: Option<usize>,
    /// Later layers attend to this layer's keys and values.
    pub kv_shared: bool,
    /// The dense MLP's width (`intermediate_size`, doubled on shared layers with
    /// `use_double_wide_mlp`).
    pub intermediate_size: usize,
}

/// `hidden_size_per_layer_input`, `vocab_size_per_layer_input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerLayerInput {
    /// `hidden_size_per_layer_input`: each layer's input width.
    pub hidden_size: usize,
    /// `vocab_size_per_layer_input`: rows of `embed_tokens_per_layer`.
    pub vocab_size: usize,
}

/// `num_experts`, `top_k_experts`, `moe_intermediate_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeSpec {
    /// `num_experts`.
    pub num_experts: usize,
    /// `top_k_experts`: experts per token.
    pub top_k: usize,
    /// `moe_intermediate_size`: each expert's width.
    pub intermediate_size: usize,
}

/// `gemma4_text`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let base: llama::Config = file.parse()?;
    let explicit_layer_types = base.layer_types.is_some();
    let mut cfg = base.lower(file, Architecture::Gemma4, &DEFAULTS)?;
    let f: Fields = file.parse()?;
    let field = |name: &str| format!("`{}{name}`", file.prefix);
    if f.use_bidirectional_attention.as_deref() == Some("all") {
        return Err(Error::unsupported(format!(
            "`{}`: {} = \"all\" (bidirectional attention everywhere, an encoder) is not a causal \
             language model",
            file.path.display(),
            field("use_bidirectional_attention")
        )));
    }
    cfg.norm = NormKind::Rms;
    cfg.norm_placement = NormPlacement::Sandwich;
    cfg.qk_norm = Some(QkNorm::PerHead);
    cfg.embedding_scale = Some(EmbeddingScale::SqrtHiddenSize);
    cfg.attention_scaling = 1.0;
    let (key, act) = match (&f.hidden_activation, file.str_field("hidden_act")?) {
        (Some(a), _) => ("hidden_activation", a.as_str()),
        (None, Some(a)) => ("hidden_act", a),
        (None, None) => ("hidden_activation", "gelu_pytorch_tanh"),
    };
    cfg.hidden_act = Activation::from_hf(act, key, file)?;
    cfg.final_logit_softcapping = f.final_logit_softcapping.flatten();
    let n = cfg.num_hidden_layers;
    if !explicit_layer_types {
        // Five sliding layers, then one full.
        cfg.layer_types = (0..n)
            .map(|i| match cfg.sliding_window {
                Some(_) if (i + 1) % 6 != 0 => LayerType::SlidingAttention,
                _ => LayerType::FullAttention,
            })
            .collect();
    }
    if let Some(i) = cfg.layer_types.iter().position(|t| !t.is_attention()) {
        return Err(file.err(format!(
            "`{}layer_types[{i}]`: Gemma 4 has full and sliding attention layers only",
            file.prefix
        )));
    }
    // `Gemma4TextConfig.__post_init__`: the last layer is always full.
    if let Some(last) = cfg.layer_types.last_mut() {
        *last = LayerType::FullAttention;
    }
    let (full, sliding) = rope_per_layer_type(file, &f, &cfg)?;
    cfg.rope = Some(full);
    cfg.rope_local = Some(sliding);
    cfg.gemma4 = Some(Box::new(spec(file, &f, &cfg)?));
    Ok(cfg)
}

/// `rope_parameters.{full_attention,sliding_attention}`, or `Gemma4TextConfig`'s defaults
/// (proportional RoPE over a quarter of the frequencies, base 1,000,000, on full layers; default
/// RoPE with base 10,000 on sliding ones). The `default` type rotates the whole head whatever
/// `partial_rotary_factor` says (`Gemma4TextRotaryEmbedding.compute_default_rope_parameters`).
fn rope_per_layer_type(
    file: &ConfigFile<'_>,
    f: &Fields,
    cfg: &ModelConfig,
) -> Result<(RopeConfig, RopeConfig)> {
    let (mut full, mut sliding) = match &f.rope_parameters {
        None | Some(Value::Null) => (
            RopeConfig {
                theta: 1_000_000.0,
                scaling: RopeScaling::Proportional { factor: 1.0 },
                partial_rotary_factor: 0.25,
            },
            RopeConfig::new(10_000.0),
        ),
        Some(p) => {
            for t in ["full_attention", "sliding_attention"] {
                let used = match t {
                    "full_attention" => LayerType::FullAttention,
                    _ => LayerType::SlidingAttention,
                };
                if cfg.layer_types.contains(&used) && p.get(t).is_none() {
                    return Err(file.err(format!(
                        "`{}rope_parameters.{t}` is missing (Gemma 4 gives each layer type its \
                         RoPE)",
                        file.prefix
                    )));
                }
            }
            rope::parse_per_layer_type(
                file,
                RopeDefaults {
                    theta: DEFAULTS.rope_theta,
                    max_position_embeddings: cfg.max_position_embeddings,
                },
                10_000.0,
            )?
        }
    };
    for r in [&mut full, &mut sliding] {
        if r.scaling == RopeScaling::Default {
            r.partial_rotary_factor = 1.0;
        }
    }
    Ok((full, sliding))
}

/// Each layer's shape and KV sharing, the per-layer inputs and the MoE.
fn spec(file: &ConfigFile<'_>, f: &Fields, cfg: &ModelConfig) -> Result<Gemma4Spec> {
    let n = cfg.num_hidden_layers;
    if cfg.layer_types.len() != n {
        // Checked again for every architecture once lowered; the loops below index by layer.
        return Err(file.err(format!(
            "`{}layer_types` has {} entries but `num_hidden_layers` is {n}",
            file.prefix,
            cfg.layer_types.len()
        )));
    }
    let k_eq_v = f.attention_k_eq_v.unwrap_or(false);
    let mut shapes = vec![(cfg.head_dim, cfg.num_key_value_heads); n];
    match &f.per_layer_config {
        Some(per_layer) => {
            for (key, overrides) in per_layer {
                let at = |name: &str| format!("`{}per_layer_config.{key}.{name}`", file.prefix);
                let i = key
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < n)
                    .ok_or_else(|| {
                        file.err(format!(
                            "`{}per_layer_config` keys must be layer indices below \
                         `num_hidden_layers` ({n}), got \"{key}\"",
                            file.prefix
                        ))
                    })?;
                for (name, value) in overrides {
                    let slot = match name.as_str() {
                        "head_dim" => &mut shapes[i].0,
                        "num_key_value_heads" => &mut shapes[i].1,
                        _ => {
                            return Err(Error::unsupported(format!(
                                "`{}`: {} is not supported (lmgen reads `head_dim` and \
                                 `num_key_value_heads` per layer)",
                                file.path.display(),
                                at(name)
                            )))
                        }
                    };
                    *slot = value.as_u64().filter(|&v| v > 0).ok_or_else(|| {
                        file.err(format!(
                            "{} must be a positive integer, got {value}",
                            at(name)
                        ))
                    })? as usize;
                }
            }
        }
        None => {
            // `Gemma4TextConfig.__post_init__` without `per_layer_config`.
            for (i, t) in cfg.layer_types.iter().enumerate() {
                if *t == LayerType::FullAttention {
                    shapes[i].0 = f.global_head_dim.unwrap_or(512);
                    if let (true, Some(kv)) = (k_eq_v, f.num_global_key_value_heads) {
                        shapes[i].1 = kv;
                    }
                }
            }
        }
    }
    for (i, &(d, kv)) in shapes.iter().enumerate() {
        if !cfg.num_attention_heads.is_multiple_of(kv) {
            return Err(file.err(format!(
                "layer {i}: `num_attention_heads` ({}) must be a multiple of its \
                 `num_key_value_heads` ({kv})",
                cfg.num_attention_heads
            )));
        }
        // Each layer type rotates with one head size (`per_layer_config[layer_type]`).
        let t = cfg.layer_types[i];
        let first = cfg.layer_types.iter().position(|&x| x == t).unwrap_or(i);
        if shapes[first].0 != d {
            return Err(file.err(format!(
                "layers {first} and {i} are both {t:?} but have head sizes {} and {d}; Gemma 4 \
                 needs one head size per layer type",
                shapes[first].0
            )));
        }
    }
    let shared = f.num_kv_shared_layers.unwrap_or(0);
    if shared >= n && shared > 0 {
        return Err(file.err(format!(
            "`{}num_kv_shared_layers` ({shared}) must be below `num_hidden_layers` ({n})",
            file.prefix
        )));
    }
    let first_shared = n - shared;
    let double_wide = f.use_double_wide_mlp.unwrap_or(false);
    let mut layers = Vec::with_capacity(n);
    for (i, &(head_dim, num_key_value_heads)) in shapes.iter().enumerate() {
        let t = cfg.layer_types[i];
        let last_of_type = |end: usize| {
            (0..end)
                .rev()
                .find(|&j| cfg.layer_types[j] == cfg.layer_types[i])
        };
        let kv_source = if i >= first_shared {
            Some(last_of_type(first_shared).ok_or_else(|| {
                file.err(format!(
                    "layer {i} shares keys and values (`num_kv_shared_layers` {shared}) but no \
                     earlier layer is {t:?}"
                ))
            })?)
        } else {
            None
        };
        let kv_shared = shared > 0 && i < first_shared && last_of_type(first_shared) == Some(i);
        layers.push(LayerSpec {
            head_dim,
            num_key_value_heads,
            values_are_keys: k_eq_v && t == LayerType::FullAttention,
            kv_source,
            kv_shared,
            intermediate_size: cfg.intermediate_size
                * if double_wide && kv_source.is_some() {
                    2
                } else {
                    1
                },
        });
    }
    for l in &layers {
        if let Some(j) = l.kv_source {
            let src = &layers[j];
            if (src.head_dim, src.num_key_value_heads) != (l.head_dim, l.num_key_value_heads) {
                return Err(file.err(format!(
                    "a shared KV layer must have the shape of layer {j}, whose keys it reads"
                )));
            }
        }
    }
    let per_layer_input = match f.hidden_size_per_layer_input.unwrap_or(256) {
        0 => None,
        h => Some(PerLayerInput {
            hidden_size: h,
            vocab_size: f.vocab_size_per_layer_input.unwrap_or(262_144),
        }),
    };
    let moe = if f.enable_moe_block.unwrap_or(false) {
        let need = |v: Option<usize>, name: &str| {
            v.filter(|&v| v > 0).ok_or_else(|| {
                file.err(format!(
                    "`{}{name}` must be a positive integer when `enable_moe_block` is true",
                    file.prefix
                ))
            })
        };
        let spec = MoeSpec {
            num_experts: need(f.num_experts, "num_experts")?,
            top_k: need(f.top_k_experts, "top_k_experts")?,
            intermediate_size: need(f.moe_intermediate_size, "moe_intermediate_size")?,
        };
        if spec.top_k > spec.num_experts {
            return Err(file.err(format!(
                "`{}top_k_experts` ({}) must be at most `num_experts` ({})",
                file.prefix, spec.top_k, spec.num_experts
            )));
        }
        Some(spec)
    } else {
        None
    };
    Ok(Gemma4Spec {
        layers,
        per_layer_input,
        moe,
    })
}

/// The Gemma 4 description `parse` resolved into `cfg`.
pub(crate) fn spec_of(cfg: &ModelConfig) -> Result<&Gemma4Spec> {
    cfg.gemma4.as_deref().ok_or_else(|| {
        Error::unsupported("a Gemma 4 model needs a config lowered by gemma4::parse")
    })
}

/// `x * rsqrt(mean(x^2) + eps)` over the last dimension, without a weight (HF `Gemma4RMSNorm`
/// with `with_scale=False`): `ones` is `[dim]` of ones.
pub(crate) fn unit_rms_norm(x: &Tensor, ones: &Tensor, eps: f32) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, ones, eps)?)
}
