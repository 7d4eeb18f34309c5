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

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};
use serde::Deserialize;
use serde_json::Value;

use super::config::rope::{self, RopeDefaults};
use super::config::{
    Activation, ConfigFile, EmbeddingScale, LayerType, ModelConfig, NormKind, NormPlacement,
    QkNorm, RopeConfig, RopeScaling,
};
use super::decoder::lm_head;
use super::layers::attention::{attend, Scores};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mask::{ForwardMasks, LayerMask};
use super::layers::mlp::{activate, GatedMlp};
use super::layers::moe::route;
use super::layers::norm::RmsNorm;
use super::layers::rotary::{self, RotaryEmbedding};
use super::layers::LoadContext;
use super::llama::{self, nullable, Defaults};
use super::{layers_to_run, Architecture, CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::init::{Init, TensorSpec};

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
        if cfg.num_attention_heads % kv != 0 {
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

fn spec_of(cfg: &ModelConfig) -> Result<&Gemma4Spec> {
    cfg.gemma4.as_deref().ok_or_else(|| {
        Error::unsupported("a Gemma 4 model needs a config lowered by gemma4::parse")
    })
}

/// `x * rsqrt(mean(x^2) + eps)` over the last dimension, without a weight (HF `Gemma4RMSNorm`
/// with `with_scale=False`): `ones` is `[dim]` of ones.
fn unit_rms_norm(x: &Tensor, ones: &Tensor, eps: f32) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, ones, eps)?)
}

/// Keys and values that shared KV layers attend to (HF `shared_kv_states`): the whole cached
/// sequence of the last non-shared layer of each type, as its cache returned them.
#[derive(Debug, Default)]
struct SharedKv {
    full: Option<StoredKv>,
    sliding: Option<StoredKv>,
}

#[derive(Debug, Clone)]
enum StoredKv {
    /// `[b, nkv, s, d]` each.
    Dense(Tensor, Tensor),
    /// Per sequence of a packed batch, `[1, nkv, s_i, d]` each.
    Packed(Vec<(Tensor, Tensor)>),
}

impl SharedKv {
    fn slot(&mut self, t: LayerType) -> &mut Option<StoredKv> {
        match t {
            LayerType::FullAttention => &mut self.full,
            LayerType::SlidingAttention => &mut self.sliding,
        }
    }
}

/// `Gemma4TextAttention`.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    q_norm: RmsNorm,
    /// `k_proj` (and `v_proj`, fused after it), `k_norm`; `None` on a shared KV layer.
    kv: Option<(Linear, RmsNorm)>,
    o_proj: Linear,
    /// `[head_dim]` ones: `v_norm`'s missing weight.
    ones: Tensor,
    eps: f32,
    num_heads: usize,
    spec: LayerSpec,
    layer_type: LayerType,
    layer_idx: usize,
}

impl Attention {
    fn load(ctx: &LoadContext<'_>, cfg: &ModelConfig, i: usize, spec: LayerSpec) -> Result<Self> {
        let p = format!("model.layers.{i}.self_attn");
        let (h, nh, d, nkv) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            spec.head_dim,
            spec.num_key_value_heads,
        );
        let norm =
            |name: &str| RmsNorm::load(ctx, &format!("{p}.{name}"), d, cfg.norm_eps, cfg.norm);
        let bias = cfg.qkv_bias;
        let kv = match spec.kv_source {
            Some(_) => None,
            None => {
                let (k, v) = (format!("{p}.k_proj"), format!("{p}.v_proj"));
                let mut parts = vec![(k.as_str(), nkv * d)];
                if !spec.values_are_keys {
                    parts.push((v.as_str(), nkv * d));
                }
                Some((Linear::load_fused(ctx, &parts, h, bias)?, norm("k_norm")?))
            }
        };
        Ok(Self {
            q_proj: Linear::load(ctx, &format!("{p}.q_proj"), h, nh * d, bias)?,
            q_norm: norm("q_norm")?,
            kv,
            o_proj: Linear::load(ctx, &format!("{p}.o_proj"), nh * d, h, cfg.o_bias)?,
            ones: Tensor::ones(d, ctx.dtype, ctx.device)?,
            eps: cfg.norm_eps as f32,
            num_heads: nh,
            spec,
            layer_type: cfg.layer_types[i],
            layer_idx: i,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`: appends this layer's keys and values to `cache` (or
    /// reads those of its source layer from `shared`), and keeps them in `shared` when later
    /// layers read them.
    fn forward(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: LayerMask<'_>,
        cache: &mut dyn KvCache,
        shared: &mut SharedKv,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, d, nkv) = (
            self.num_heads,
            self.spec.head_dim,
            self.spec.num_key_value_heads,
        );
        let (cos, sin) = rope;
        // [b, t, n * d] -> [b, n, t, d]
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(self.q_proj.forward(x)?, nh)?;
        let q = rotary::apply(&self.q_norm.forward(&q)?, cos, sin)?;
        let new_kv = match &self.kv {
            None => None,
            Some((proj, k_norm)) => {
                let kv = proj.forward(x)?; // [b, t, (1 or 2) * nkv * d]
                let k = kv.narrow(D::Minus1, 0, nkv * d)?;
                let v = if self.spec.values_are_keys {
                    k.clone()
                } else {
                    kv.narrow(D::Minus1, nkv * d, nkv * d)?
                };
                let k = rotary::apply(&k_norm.forward(&heads(k, nkv)?)?, cos, sin)?;
                let v = unit_rms_norm(&heads(v, nkv)?, &self.ones, self.eps)?;
                Some((k, v))
            }
        };
        let scores = Scores {
            scale: 1.0,
            softcap: None,
            sinks: None,
        };
        let source = |shared: &mut SharedKv| -> Result<StoredKv> {
            shared.slot(self.layer_type).clone().ok_or_else(|| {
                Error::unsupported(format!(
                    "layer {} shares the keys of an earlier layer that did not run",
                    self.layer_idx
                ))
            })
        };
        let out = match mask {
            LayerMask::Dense(mask) => {
                let (k, v) = match &new_kv {
                    Some((k, v)) => cache.update(self.layer_idx, k, v)?, // [b, nkv, s, d]
                    None => match source(shared)? {
                        StoredKv::Dense(k, v) => (k, v),
                        StoredKv::Packed(_) => {
                            return Err(Error::unsupported("shared KV of a packed batch"))
                        }
                    },
                };
                if self.spec.kv_shared {
                    *shared.slot(self.layer_type) = Some(StoredKv::Dense(k.clone(), v.clone()));
                }
                attend(&q, &k, &v, mask, scores)?
            }
            LayerMask::Packed { sequences, sliding } => {
                let from = match &new_kv {
                    Some(_) => None,
                    None => match source(shared)? {
                        StoredKv::Packed(kv) => Some(kv),
                        StoredKv::Dense(..) => {
                            return Err(Error::unsupported("shared KV of a dense batch"))
                        }
                    },
                };
                let mut kept = Vec::with_capacity(sequences.len());
                let mut outs = Vec::with_capacity(sequences.len());
                for (i, seq) in sequences.iter().enumerate() {
                    let part = |x: &Tensor| x.narrow(2, seq.start, seq.new)?.contiguous();
                    let (ks, vs) =
                        match &new_kv {
                            // [1, nkv, s_i, d]
                            Some((k, v)) => {
                                cache.update_sequence(self.layer_idx, i, &part(k)?, &part(v)?)?
                            }
                            None => from.as_ref().and_then(|kv| kv.get(i)).cloned().ok_or_else(
                                || {
                                    Error::unsupported(
                                        "a shared KV layer's batch differs from its source's",
                                    )
                                },
                            )?,
                        };
                    let mask = if sliding { &seq.sliding } else { &seq.full };
                    outs.push(attend(&part(&q)?, &ks, &vs, mask.as_ref(), scores)?); // [1, nh, t_i, d]
                    kept.push((ks, vs));
                }
                if self.spec.kv_shared {
                    *shared.slot(self.layer_type) = Some(StoredKv::Packed(kept));
                }
                Tensor::cat(&outs, 2)? // [1, nh, t, d]
            }
        };
        // [b, nh, t, d] -> [b, t, nh * d]
        let out = out.transpose(1, 2)?.reshape((b, t, nh * d))?;
        self.o_proj.forward(&out)
    }
}

/// One expert: `down(act(gate(x)) * up(x))` with the gate's and up's rows stacked.
#[derive(Debug, Clone)]
struct Expert {
    /// `[2 * intermediate, hidden]`: the gate's rows, then the up's.
    gate_up: Linear,
    /// `[hidden, intermediate]`.
    down: Linear,
}

/// The sparse MoE of a layer (`Gemma4TextRouter`, `Gemma4TextExperts`) and its three norms.
#[derive(Debug, Clone)]
struct Moe {
    /// `router.proj`, `[num_experts, hidden]`.
    proj: Linear,
    /// `router.scale * hidden^-0.5`, `[hidden]`.
    scale: Tensor,
    /// `router.per_expert_scale`.
    per_expert_scale: Vec<f32>,
    /// `[hidden]` ones: the router norm's missing weight.
    ones: Tensor,
    experts: Vec<Expert>,
    intermediate: usize,
    top_k: usize,
    act: Activation,
    eps: f32,
    post_feedforward_layernorm_1: RmsNorm,
    pre_feedforward_layernorm_2: RmsNorm,
    post_feedforward_layernorm_2: RmsNorm,
}

impl Moe {
    fn load(ctx: &LoadContext<'_>, cfg: &ModelConfig, p: &str, spec: MoeSpec) -> Result<Self> {
        let (h, n, i) = (cfg.hidden_size, spec.num_experts, spec.intermediate_size);
        let gate_up = ctx.tensor(&format!("{p}.experts.gate_up_proj"), &[n, 2 * i, h])?;
        let down = ctx.tensor(&format!("{p}.experts.down_proj"), &[n, h, i])?;
        let experts = (0..n)
            .map(|e| {
                let name = |w: &str| format!("{p}.experts.{e}.{w}");
                Ok(Expert {
                    gate_up: Linear::from_weight(
                        ctx,
                        &name("gate_up_proj"),
                        gate_up.get(e)?,
                        None,
                    )?,
                    down: Linear::from_weight(ctx, &name("down_proj"), down.get(e)?, None)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let scale = ctx.tensor_as(&format!("{p}.router.scale"), &[h], DType::F32)?;
        let scale = (scale * (h as f64).powf(-0.5))?.to_dtype(ctx.dtype)?;
        let norm =
            |name: &str| RmsNorm::load(ctx, &format!("{p}.{name}"), h, cfg.norm_eps, cfg.norm);
        Ok(Self {
            proj: Linear::load(ctx, &format!("{p}.router.proj"), h, n, false)?,
            scale,
            per_expert_scale: ctx
                .tensor_as(&format!("{p}.router.per_expert_scale"), &[n], DType::F32)?
                .to_vec1()?,
            ones: Tensor::ones(h, ctx.dtype, ctx.device)?,
            experts,
            intermediate: i,
            top_k: spec.top_k,
            act: cfg.hidden_act,
            eps: cfg.norm_eps as f32,
            post_feedforward_layernorm_1: norm("post_feedforward_layernorm_1")?,
            pre_feedforward_layernorm_2: norm("pre_feedforward_layernorm_2")?,
            post_feedforward_layernorm_2: norm("post_feedforward_layernorm_2")?,
        })
    }

    /// The MLP's output `mlp` and the layer's input `residual` (both `[b, t, hidden]`) ->
    /// `post_1(mlp) + post_2(experts(pre_2(residual)))`, routed on `residual`.
    fn forward(&self, mlp: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (b, t, h) = residual.dims3()?;
        let xs = residual.reshape((b * t, h))?; // [n, h]
        let routed = unit_rms_norm(&xs, &self.ones, self.eps)?.broadcast_mul(&self.scale)?;
        let logits = self.proj.forward(&routed)?.to_dtype(DType::F32)?; // [n, experts]
        let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2()?;
        let routes = route(&probs, self.top_k, true, self.experts.len())?;
        let inputs = self.pre_feedforward_layernorm_2.forward(&xs)?;
        let device = xs.device();
        let mut out = inputs.zeros_like()?; // [n, h]
        for (e, (expert, (tokens, weights))) in self.experts.iter().zip(&routes).enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let idx = Tensor::new(tokens.as_slice(), device)?; // [n_e]
            let gu = expert.gate_up.forward(&inputs.index_select(&idx, 0)?)?; // [n_e, 2i]
            let i = self.intermediate;
            let hidden = (activate(&gu.narrow(D::Minus1, 0, i)?, self.act)?
                * gu.narrow(D::Minus1, i, i)?)?;
            let y = expert.down.forward(&hidden)?; // [n_e, h]
            let scale = self.per_expert_scale[e];
            let w: Vec<f32> = weights.iter().map(|w| w * scale).collect();
            let w = Tensor::new(w.as_slice(), device)?
                .to_dtype(y.dtype())?
                .unsqueeze(1)?; // [n_e, 1]
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        let experts = self
            .post_feedforward_layernorm_2
            .forward(&out.reshape((b, t, h))?)?;
        Ok((self.post_feedforward_layernorm_1.forward(mlp)? + experts)?)
    }
}

/// A layer's per-layer input branch: `x + norm(proj(act(gate(x)) * per_layer_input))`.
#[derive(Debug, Clone)]
struct PerLayerBranch {
    /// `per_layer_input_gate`, `[per_layer, hidden]`.
    gate: Linear,
    /// `per_layer_projection`, `[hidden, per_layer]`.
    projection: Linear,
    post_per_layer_input_norm: RmsNorm,
}

/// `Gemma4TextDecoderLayer`.
#[derive(Debug, Clone)]
struct Layer {
    self_attn: Attention,
    mlp: GatedMlp,
    moe: Option<Moe>,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
    per_layer: Option<PerLayerBranch>,
    /// `[1]`.
    layer_scalar: Tensor,
    act: Activation,
}

impl Layer {
    fn load(ctx: &LoadContext<'_>, cfg: &ModelConfig, spec: &Gemma4Spec, i: usize) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let h = cfg.hidden_size;
        let norm =
            |name: &str| RmsNorm::load(ctx, &format!("{p}.{name}"), h, cfg.norm_eps, cfg.norm);
        let l = spec.layers[i];
        let mlp = GatedMlp::load_separate(
            ctx,
            [
                &format!("{p}.mlp.gate_proj"),
                &format!("{p}.mlp.up_proj"),
                &format!("{p}.mlp.down_proj"),
            ],
            (h, l.intermediate_size),
            cfg.mlp_bias,
            cfg.hidden_act,
        )?;
        let per_layer = match spec.per_layer_input {
            None => None,
            Some(pl) => Some(PerLayerBranch {
                gate: Linear::load(
                    ctx,
                    &format!("{p}.per_layer_input_gate"),
                    h,
                    pl.hidden_size,
                    false,
                )?,
                projection: Linear::load(
                    ctx,
                    &format!("{p}.per_layer_projection"),
                    pl.hidden_size,
                    h,
                    false,
                )?,
                post_per_layer_input_norm: norm("post_per_layer_input_norm")?,
            }),
        };
        Ok(Self {
            self_attn: Attention::load(ctx, cfg, i, l)?,
            mlp,
            moe: spec.moe.map(|m| Moe::load(ctx, cfg, &p, m)).transpose()?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
            per_layer,
            layer_scalar: ctx.tensor(&format!("{p}.layer_scalar"), &[1])?,
            act: cfg.hidden_act,
        })
    }
}

/// Per-forward inputs of a layer.
struct LayerInput<'a> {
    rope: (&'a Tensor, &'a Tensor),
    mask: LayerMask<'a>,
    /// `[b, t, per_layer]`, or `None` without per-layer inputs.
    per_layer_input: Option<Tensor>,
}

impl Layer {
    /// `[b, t, hidden] -> [b, t, hidden]`.
    fn forward(
        &self,
        x: Tensor,
        input: LayerInput<'_>,
        cache: &mut dyn KvCache,
        shared: &mut SharedKv,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(&x)?;
        let h = self
            .self_attn
            .forward(&h, input.rope, input.mask, cache, shared)?;
        let x = (x + self.post_attention_layernorm.forward(&h)?)?;
        let mut h = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&x)?)?;
        if let Some(moe) = &self.moe {
            h = moe.forward(&h, &x)?;
        }
        let mut x = (&x + self.post_feedforward_layernorm.forward(&h)?)?;
        if let (Some(branch), Some(pli)) = (&self.per_layer, &input.per_layer_input) {
            let g = activate(&branch.gate.forward(&x)?, self.act)?; // [b, t, per_layer]
            let h = branch.projection.forward(&(g * pli)?)?; // [b, t, hidden]
            x = (&x + branch.post_per_layer_input_norm.forward(&h)?)?;
        }
        Ok(x.broadcast_mul(&self.layer_scalar)?)
    }
}

/// The per-layer input embeddings (`embed_tokens_per_layer`, `per_layer_model_projection`,
/// `per_layer_projection_norm`).
#[derive(Debug, Clone)]
struct PerLayerInputs {
    /// `[vocab_size_per_layer_input, layers * per_layer]`.
    embed: Embedding,
    /// `[layers * per_layer, hidden]`.
    projection: Linear,
    /// Over each layer's `[per_layer]`.
    norm: RmsNorm,
    per_layer: usize,
}

/// Gemma 4's text model with its LM head.
#[derive(Debug, Clone)]
pub struct Gemma4 {
    embed_tokens: Embedding,
    per_layer_inputs: Option<PerLayerInputs>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    /// Full layers' RoPE (with their head size), then sliding layers'.
    rotary: [Option<RotaryEmbedding>; 2],
    config: ModelConfig,
    device: Device,
    dtype: DType,
}

/// `Build::Custom`'s loader.
pub fn load(
    config: ModelConfig,
    _file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
) -> Result<Box<dyn CausalLM>> {
    Ok(Box::new(Gemma4::load(config, ctx)?))
}

impl Gemma4 {
    /// Loads every tensor [`tensor_specs`] names for `config`.
    pub fn load(config: ModelConfig, ctx: &LoadContext<'_>) -> Result<Self> {
        let cfg = &config;
        let spec = spec_of(cfg)?;
        let (h, n) = (cfg.hidden_size, cfg.num_hidden_layers);
        let embed = Embedding::load(ctx, "model.embed_tokens.weight", cfg.vocab_size, h)?;
        let per_layer_inputs = match spec.per_layer_input {
            None => None,
            Some(pl) => Some(PerLayerInputs {
                embed: Embedding::load(
                    ctx,
                    "model.embed_tokens_per_layer.weight",
                    pl.vocab_size,
                    n * pl.hidden_size,
                )?,
                projection: Linear::load(
                    ctx,
                    "model.per_layer_model_projection",
                    h,
                    n * pl.hidden_size,
                    false,
                )?,
                norm: RmsNorm::load(
                    ctx,
                    "model.per_layer_projection_norm",
                    pl.hidden_size,
                    cfg.norm_eps,
                    cfg.norm,
                )?,
                per_layer: pl.hidden_size,
            }),
        };
        let layers = (0..n)
            .map(|i| Layer::load(ctx, cfg, spec, i))
            .collect::<Result<Vec<_>>>()?;
        let rotary = |t: LayerType, r: &Option<RopeConfig>| {
            let i = cfg.layer_types.iter().position(|&x| x == t)?;
            let r = r.as_ref()?;
            Some(RotaryEmbedding::new(
                r,
                spec.layers[i].head_dim,
                cfg.max_position_embeddings,
            ))
        };
        Ok(Self {
            lm_head: lm_head(ctx, cfg, &embed)?,
            embed_tokens: embed,
            per_layer_inputs,
            layers,
            norm: RmsNorm::load(ctx, "model.norm", h, cfg.norm_eps, cfg.norm)?,
            rotary: [
                rotary(LayerType::FullAttention, &cfg.rope),
                rotary(LayerType::SlidingAttention, &cfg.rope_local),
            ],
            device: ctx.device.clone(),
            dtype: ctx.dtype,
            config,
        })
    }

    /// `x * s` with `s` rounded to the compute dtype first (`embed_scale.to(weight.dtype)`).
    fn scaled(&self, x: Tensor, s: f64) -> Result<Tensor> {
        let s = Tensor::new(s as f32, &self.device)?.to_dtype(self.dtype)?;
        Ok(x.broadcast_mul(&s)?)
    }

    /// `get_per_layer_inputs` + `project_per_layer_inputs`: ids `[b, t]` and the scaled
    /// embeddings `[b, t, hidden]` -> `[b, t, layers, per_layer]`.
    fn per_layer_inputs(&self, ids: &Tensor, embeds: &Tensor) -> Result<Option<Tensor>> {
        let Some(p) = &self.per_layer_inputs else {
            return Ok(None);
        };
        let (b, t) = ids.dims2()?;
        let shape = (b, t, self.layers.len(), p.per_layer);
        let tokens = self
            .scaled(p.embed.forward(ids)?, (p.per_layer as f64).sqrt())?
            .reshape(shape)?;
        let h = self.config.hidden_size as f64;
        let projected = (p.projection.forward(embeds)? * h.powf(-0.5))?.reshape(shape)?;
        let projected = p.norm.forward(&projected)?;
        Ok(Some(((projected + tokens)? * 2f64.powf(-0.5))?))
    }
}

impl CausalLM for Gemma4 {
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        let positions: Vec<Vec<u32>> = input.position_ids.to_vec2()?;
        let cos_sin = |r: &Option<RotaryEmbedding>| {
            r.as_ref()
                .map(|r| r.cos_sin(&positions, self.dtype, &self.device))
                .transpose()
        };
        let ropes = [cos_sin(&self.rotary[0])?, cos_sin(&self.rotary[1])?];
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        let x = self.embed_tokens.forward(input.input_ids)?;
        let mut x = self.scaled(x, (self.config.hidden_size as f64).sqrt())?; // [b, t, h]
        let per_layer = self.per_layer_inputs(input.input_ids, &x)?; // [b, t, layers, p]
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let mut shared = SharedKv::default();
        let n = layers_to_run(input, self.layers.len());
        for (i, layer) in self.layers[..n].iter().enumerate() {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            let t = self.config.layer_types[i];
            let rope = match t {
                LayerType::FullAttention => &ropes[0],
                LayerType::SlidingAttention => &ropes[1],
            };
            let Some((cos, sin)) = rope else {
                return Err(Error::unsupported(format!("layer {i} has no RoPE")));
            };
            let per_layer_input = per_layer
                .as_ref()
                .map(|p| p.narrow(2, i, 1)?.squeeze(2)) // [b, t, p]
                .transpose()?;
            let layer_input = LayerInput {
                rope: (cos, sin),
                mask: masks.for_layer(t),
                per_layer_input,
            };
            x = layer.forward(x, layer_input, cache, &mut shared)?;
        }
        let x = masks.final_norm(
            x,
            |x| self.norm.forward(x),
            &mut hidden,
            input.logits_to_keep,
        )?;
        let mut logits = self.lm_head(&x)?; // [b, t_kept, vocab] f32
        if let Some(cap) = self.config.final_logit_softcapping {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(ModelOutput {
            logits,
            hidden_states: hidden,
        })
    }

    fn lm_head(&self, hidden_states: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden_states)?.to_dtype(DType::F32)?)
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Every tensor [`Gemma4::load`] reads for `cfg`, with its stored shape and its identity
/// initialisation (for `init_random`).
pub(crate) fn tensor_specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let Some(spec) = cfg.gemma4.as_deref() else {
        return Vec::new();
    };
    let (h, v, nh, n) = (
        cfg.hidden_size,
        cfg.vocab_size,
        cfg.num_attention_heads,
        cfg.num_hidden_layers,
    );
    let mut t = vec![TensorSpec::new(
        "model.embed_tokens.weight",
        vec![v, h],
        Init::Random,
    )];
    let ones = |name: String, dim: usize| TensorSpec::new(&name, vec![dim], Init::Ones);
    if let Some(pl) = spec.per_layer_input {
        let p = n * pl.hidden_size;
        t.push(TensorSpec::new(
            "model.embed_tokens_per_layer.weight",
            vec![pl.vocab_size, p],
            Init::Random,
        ));
        t.extend(TensorSpec::linear(
            "model.per_layer_model_projection",
            [p, h],
            None,
        ));
        t.push(ones(
            "model.per_layer_projection_norm.weight".into(),
            pl.hidden_size,
        ));
    }
    for (i, l) in spec.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let (d, nkv) = (l.head_dim, l.num_key_value_heads);
        let mut linear = |name: &str, out: usize, inp: usize| {
            t.extend(TensorSpec::linear(&format!("{p}.{name}"), [out, inp], None));
        };
        linear("self_attn.q_proj", nh * d, h);
        if l.kv_source.is_none() {
            linear("self_attn.k_proj", nkv * d, h);
            if !l.values_are_keys {
                linear("self_attn.v_proj", nkv * d, h);
            }
        }
        linear("self_attn.o_proj", h, nh * d);
        linear("mlp.gate_proj", l.intermediate_size, h);
        linear("mlp.up_proj", l.intermediate_size, h);
        linear("mlp.down_proj", h, l.intermediate_size);
        if let Some(pl) = spec.per_layer_input {
            linear("per_layer_input_gate", pl.hidden_size, h);
            linear("per_layer_projection", h, pl.hidden_size);
        }
        if let Some(m) = spec.moe {
            linear("router.proj", m.num_experts, h);
        }
        t.push(ones(format!("{p}.self_attn.q_norm.weight"), d));
        if l.kv_source.is_none() {
            t.push(ones(format!("{p}.self_attn.k_norm.weight"), d));
        }
        let mut norms = vec![
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ];
        if spec.per_layer_input.is_some() {
            norms.push("post_per_layer_input_norm");
        }
        if let Some(m) = spec.moe {
            norms.extend([
                "post_feedforward_layernorm_1",
                "pre_feedforward_layernorm_2",
                "post_feedforward_layernorm_2",
            ]);
            t.push(ones(format!("{p}.router.scale"), h));
            t.push(ones(format!("{p}.router.per_expert_scale"), m.num_experts));
            let (e, mi) = (m.num_experts, m.intermediate_size);
            t.push(TensorSpec::new(
                &format!("{p}.experts.gate_up_proj"),
                vec![e, 2 * mi, h],
                Init::Random,
            ));
            t.push(TensorSpec::new(
                &format!("{p}.experts.down_proj"),
                vec![e, h, mi],
                Init::Random,
            ));
        }
        for name in norms {
            t.push(ones(format!("{p}.{name}.weight"), h));
        }
        t.push(ones(format!("{p}.layer_scalar"), 1));
    }
    t.push(ones("model.norm.weight".into(), h));
    if !cfg.tie_word_embeddings {
        t.push(TensorSpec::new("lm_head.weight", vec![v, h], Init::Random));
    }
    t
}
