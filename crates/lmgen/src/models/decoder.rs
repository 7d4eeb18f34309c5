//! The shared decoder: token embeddings, a stack of attention + gated-MLP layers and an LM head,
//! run as the [`ModelConfig`] an architecture lowered its `config.json` into (HF
//! `LlamaForCausalLM` and the models transformers writes as its modular variants).
//!
//! What varies is read from the config, never from the architecture's name: the norm formula and
//! placement, q/k norms, fused or separate projections, per-layer sliding windows and RoPE (a
//! local base for sliding layers, none for NoPE layers, partial rotation), embedding, residual,
//! attention, query and logits scaling, soft-capping and a tied head.

use candle_core::{DType, Device, Tensor};

use super::config::{
    EmbeddingScale, LayerType, LinearAttentionLayout, ModelConfig, MoeLayout, NormPlacement,
    ProjectionLayout, QkNorm,
};
use super::layers::attention::{Attention, AttentionInput};
use super::layers::embedding::Embedding;
use super::layers::gated_delta_net::GatedDeltaNet;
use super::layers::linear::Linear;
use super::layers::mask::ForwardMasks;
use super::layers::mixer::Mixer;
use super::layers::mlp::GatedMlp;
use super::layers::moe::SparseMoe;
use super::layers::norm::RmsNorm;
use super::layers::rotary::RotaryEmbedding;
use super::layers::short_conv::ShortConv;
use super::layers::{rename, LoadContext, WeightNames};
use super::layers_to_run;
use super::{CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::Result;
use crate::init::{Init, TensorSpec};

/// The norms of one layer, by role: before and after attention, before and after the MLP.
/// `None` where the placement has no norm.
#[derive(Debug, Clone)]
struct LayerNorms<T> {
    attn_in: Option<T>,
    attn_out: Option<T>,
    mlp_in: Option<T>,
    mlp_out: Option<T>,
}

/// The HF module names of a layer's norms for a placement.
fn norm_names(placement: NormPlacement) -> LayerNorms<&'static str> {
    match placement {
        NormPlacement::Pre => LayerNorms {
            attn_in: Some("input_layernorm"),
            attn_out: None,
            mlp_in: Some("post_attention_layernorm"),
            mlp_out: None,
        },
        NormPlacement::Sandwich => LayerNorms {
            attn_in: Some("input_layernorm"),
            attn_out: Some("post_attention_layernorm"),
            mlp_in: Some("pre_feedforward_layernorm"),
            mlp_out: Some("post_feedforward_layernorm"),
        },
        NormPlacement::Post => LayerNorms {
            attn_in: None,
            attn_out: Some("post_attention_layernorm"),
            mlp_in: None,
            mlp_out: Some("post_feedforward_layernorm"),
        },
    }
}

impl<T> LayerNorms<T> {
    fn each(&self) -> [&Option<T>; 4] {
        [&self.attn_in, &self.attn_out, &self.mlp_in, &self.mlp_out]
    }
}

/// Which rotary embedding a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerRope {
    None,
    Global,
    Local,
}

/// A layer's MLP: dense, or a sparse mixture of experts.
#[derive(Debug, Clone)]
enum FeedForward {
    Dense(GatedMlp),
    Sparse(SparseMoe),
}

impl FeedForward {
    fn load(ctx: &LoadContext<'_>, i: usize, cfg: &ModelConfig) -> Result<Self> {
        let p = format!("model.layers.{i}");
        Ok(match &cfg.moe {
            Some(moe) if moe.sparse_layers[i] => {
                FeedForward::Sparse(SparseMoe::load(ctx, &p, cfg, moe)?)
            }
            _ => FeedForward::Dense(GatedMlp::load(ctx, &format!("{p}.mlp"), cfg)?),
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(x),
            FeedForward::Sparse(moe) => moe.forward(x),
        }
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    mixer: Mixer,
    mlp: FeedForward,
    norms: LayerNorms<RmsNorm>,
    layer_type: LayerType,
    rope: LayerRope,
}

impl DecoderLayer {
    /// This layer's weights for [`crate::cuda::decode_layer`] and its cache layer: Llama's shape
    /// (an attention block of plain scores between two pre-norms, a SiLU-gated dense MLP, no
    /// norm after either) on whole dense weights; `None` for any other layer.
    fn dense_decode_weights(&self) -> Option<(usize, crate::cuda::LayerWeights<'_>)> {
        let (Mixer::Attention(attention), FeedForward::Dense(mlp)) = (&self.mixer, &self.mlp)
        else {
            return None;
        };
        let norms = &self.norms;
        (norms.attn_out.is_none() && norms.mlp_out.is_none()).then_some(())?;
        let attn_norm = norms.attn_in.as_ref()?.weight_eps()?;
        let mlp_norm = norms.mlp_in.as_ref()?.weight_eps()?;
        let a = attention.dense_decode_parts()?;
        let (gate_up, down) = mlp.dense_swiglu()?;
        let weights = crate::cuda::LayerWeights {
            attn_norm,
            qkv: a.qkv,
            heads: a.heads,
            scale: a.scale,
            o_proj: a.o_proj,
            mlp_norm,
            gate_up,
            down,
        };
        Some((a.layer_idx, weights))
    }
}

/// A decoder-only model with its LM head.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Option<RotaryEmbedding>,
    rotary_local: Option<RotaryEmbedding>,
    config: ModelConfig,
    device: Device,
    /// Which thread runs [`CausalLM::forward`].
    thread: crate::models::pool::ForwardThread,
    dtype: DType,
}

/// The LM head: `lm_head.weight`, or the embedding table when tied (its blocks when the table is
/// quantized, as llama.cpp runs it); split by vocabulary across tensor-parallel ranks.
pub(crate) fn lm_head(
    ctx: &LoadContext<'_>,
    cfg: &ModelConfig,
    embed: &Embedding,
) -> Result<Linear> {
    if cfg.tie_word_embeddings && !ctx.contains("lm_head.weight") {
        embed.tied_head(ctx)
    } else {
        let dims = (cfg.hidden_size, cfg.vocab_size);
        Linear::load_lm_head(ctx, "lm_head", dims, "vocab_size")
    }
}

impl Decoder {
    /// Loads every tensor [`tensor_specs`] names for `config`.
    pub fn load(config: ModelConfig, ctx: &LoadContext<'_>) -> Result<Self> {
        let cfg = &config;
        let ctx = &LoadContext {
            names: WeightNames {
                renames: cfg.weight_renames,
                ..ctx.names
            },
            ..*ctx
        };
        let h = cfg.hidden_size;
        let embed = Embedding::load(ctx, "model.embed_tokens.weight", cfg.vocab_size, h)?;
        let norm = |name: &str| RmsNorm::load(ctx, name, h, cfg.norm_eps, cfg.norm);
        let names = norm_names(cfg.norm_placement);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let load = |n: Option<&str>| n.map(|n| norm(&format!("{p}.{n}"))).transpose();
                let rope = match cfg.rope_for_layer(i) {
                    None => LayerRope::None,
                    // The sliding layers' own RoPE (not a copy that happens to be equal).
                    Some(r) if cfg.rope_local.as_ref().is_some_and(|l| std::ptr::eq(l, r)) => {
                        LayerRope::Local
                    }
                    Some(_) => LayerRope::Global,
                };
                let mixer = match cfg.layer_types[i] {
                    LayerType::FullAttention | LayerType::SlidingAttention => {
                        Mixer::Attention(Attention::load(ctx, &format!("{p}.self_attn"), cfg, i)?)
                    }
                    LayerType::LinearAttention => Mixer::GatedDeltaNet(GatedDeltaNet::load(
                        ctx,
                        &format!("{p}.linear_attn"),
                        cfg,
                    )?),
                    LayerType::Conv => {
                        Mixer::ShortConv(ShortConv::load(ctx, &format!("{p}.conv"), cfg)?)
                    }
                };
                Ok(DecoderLayer {
                    mixer,
                    mlp: FeedForward::load(ctx, i, cfg)?,
                    norms: LayerNorms {
                        attn_in: load(names.attn_in)?,
                        attn_out: load(names.attn_out)?,
                        mlp_in: load(names.mlp_in)?,
                        mlp_out: load(names.mlp_out)?,
                    },
                    layer_type: cfg.layer_types[i],
                    rope,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rotary = |r: &Option<_>| {
            r.as_ref()
                .map(|r| RotaryEmbedding::new(r, cfg.head_dim, cfg.max_position_embeddings))
        };
        Ok(Self {
            lm_head: lm_head(ctx, cfg, &embed)?,
            embed_tokens: embed,
            layers,
            norm: norm("model.norm")?,
            rotary: rotary(&cfg.rope),
            rotary_local: rotary(&cfg.rope_local),
            device: ctx.device.clone(),
            thread: crate::models::pool::ForwardThread::for_model(ctx),
            dtype: ctx.dtype,
            config,
        })
    }

    /// `[b, t]` ids -> `[b, t, hidden]` scaled embeddings.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embed_tokens.forward(ids)?;
        Ok(match self.config.embedding_scale {
            None => x,
            // `normalizer = torch.tensor(hidden_size**0.5, dtype=hidden.dtype)`
            Some(EmbeddingScale::SqrtHiddenSize) => {
                let s = (self.config.hidden_size as f64).sqrt() as f32;
                x.broadcast_mul(&Tensor::new(s, &self.device)?.to_dtype(self.dtype)?)?
            }
            Some(EmbeddingScale::Multiplier(m)) => (x * m)?,
        })
    }

    /// A layer's attention weights `[b, nh, t, past + t]` over the keys transformers' dynamic
    /// cache hands that layer: a sliding layer keeps only its last `sliding_window - 1` keys
    /// (`DynamicSlidingWindowLayer`), so its weights cover `min(past, sliding_window - 1) + t`
    /// keys; the columns dropped are outside the window, where the weights are 0.
    fn window_keys(&self, weights: Tensor, layer_type: LayerType) -> Result<Tensor> {
        let window = match (layer_type, self.config.sliding_window) {
            (LayerType::SlidingAttention, Some(w)) => w,
            _ => return Ok(weights),
        };
        let (t, s) = (weights.dim(2)?, weights.dim(3)?);
        let keep = (s - t).min(window.saturating_sub(1)) + t;
        Ok(weights.narrow(3, s - keep, keep)?)
    }

    /// Ministral 3's query multipliers `[b, 1, t, 1]` for the forward's positions.
    fn query_scale(&self, positions: &[Vec<u32>]) -> Result<Option<Tensor>> {
        let Some(q) = self.config.query_scaling else {
            return Ok(None);
        };
        let (b, t) = (positions.len(), positions.first().map_or(0, Vec::len));
        let f: Vec<f32> = positions.iter().flatten().map(|&p| q.factor(p)).collect();
        Ok(Some(
            Tensor::from_vec(f, (b, 1, t, 1), &Device::Cpu)?
                .to_dtype(self.dtype)?
                .to_device(&self.device)?,
        ))
    }
}

/// `x + m * h` (Granite's `residual_multiplier`), or `x + h`.
fn residual(x: Tensor, h: Tensor, multiplier: Option<f64>) -> Result<Tensor> {
    Ok(match multiplier {
        Some(m) => (x + (h * m)?)?,
        None => (x + h)?,
    })
}

/// `x = residual(x, branch)`, then `norm(x)` (the identity without a norm): one fused launch on
/// a GPU where there is a norm and no residual multiplier ([`RmsNorm::forward_after_add`]).
fn add_then_norm(
    x: &mut Tensor,
    branch: Tensor,
    norm: &Option<RmsNorm>,
    multiplier: Option<f64>,
) -> Result<Tensor> {
    if let (Some(n), None) = (norm, multiplier) {
        if let Some((sum, normed)) = n.forward_after_add(x, &branch)? {
            *x = sum;
            return Ok(normed);
        }
    }
    *x = residual(x.clone(), branch, multiplier)?;
    norm_opt(norm, x.clone())
}

fn norm_opt(norm: &Option<RmsNorm>, x: Tensor) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

impl Decoder {
    /// [`CausalLM::forward`] on the calling thread.
    fn forward_here(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        let positions: Vec<Vec<u32>> = input.position_ids.to_vec2()?;
        // A step to be captured as a CUDA graph reads its positions (angles, cache slots) on
        // the device: `[b, 1]` -> `[b]` slots. A packed batch's cache keeps its slots itself
        // (the engine's step graphs: `[1, sequences]` positions, one token each).
        let packed = cache.spans().is_some();
        let slots = match input.device_positions {
            Some(_) if self.config.query_scaling.is_some() => {
                return Err(crate::error::Error::unsupported(
                    "device positions are for models without position-dependent query scaling",
                ))
            }
            Some(_) if packed => None,
            Some(p) if p.dim(1)? == 1 => Some(p.flatten_all()?),
            Some(_) => {
                return Err(crate::error::Error::unsupported(
                    "device positions are for one-token steps",
                ))
            }
            None => None,
        };
        let cos_sin = |r: &Option<RotaryEmbedding>| {
            r.as_ref()
                .map(|r| match input.device_positions {
                    Some(p) => r.cos_sin_at(p, self.dtype, &self.device),
                    None => r.cos_sin(&positions, self.dtype, &self.device),
                })
                .transpose()
        };
        let global = cos_sin(&self.rotary)?;
        let local = cos_sin(&self.rotary_local)?;
        let query_scale = self.query_scale(&positions)?;
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        let mut x = self.embed(input.input_ids)?; // [b, t, h]
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let mut attentions = input.output_attentions.then(Vec::new);
        let rm = self.config.residual_multiplier;
        let n = layers_to_run(input, self.layers.len());
        // The MLP output of the previous layer, not yet added to `x`: added by the next layer,
        // fused with its first norm ([`add_then_norm`]), unless the hidden states are kept.
        let mut pending: Option<Tensor> = None;
        // A one-row decode step at device slots, nothing kept per layer: each layer of Llama's
        // shape in one launch where the GPU takes it ([`crate::cuda::decode_layer`]), the grid's
        // barrier counts zeroed once for the step.
        let whole_layers = match &slots {
            Some(_)
                if hidden.is_none()
                    && attentions.is_none()
                    && rm.is_none()
                    && x.dim(1)? == 1
                    && crate::cuda::layer_applies(&x, x.dim(0)?)
                    && self.layers[..n]
                        .iter()
                        .filter_map(DecoderLayer::dense_decode_weights)
                        .any(|(_, w)| crate::cuda::layer_wanted(&w)) =>
            {
                Some(crate::cuda::layer_barriers(&x, n)?)
            }
            _ => None,
        };
        for (i, layer) in self.layers[..n].iter().enumerate() {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            let rope = match layer.rope {
                LayerRope::None => None,
                LayerRope::Global => global.as_ref(),
                LayerRope::Local => local.as_ref(),
            };
            let attn_in = AttentionInput {
                rope: rope.map(|(cos, sin)| (cos, sin)), // &(A, B) -> (&A, &B)
                mask: masks.for_layer(layer.layer_type),
                query_scale: query_scale.as_ref(),
                padding_queries: masks.padding_queries(),
                slots: slots.as_ref(),
            };
            let whole = match (&whole_layers, &slots) {
                (Some(barriers), Some(slots)) => layer
                    .dense_decode_weights()
                    .map(|(cache_layer, weights)| (barriers, slots, cache_layer, weights)),
                _ => None,
            };
            if let Some((barriers, slots, cache_layer, weights)) = whole {
                let barrier = barriers.narrow(0, i, 1)?;
                let step = crate::cuda::LayerStep {
                    x: &x,
                    pending: pending.as_ref(),
                    rope: rope.map(|(cos, sin)| (cos, sin)),
                    slots,
                    barrier: &barrier,
                };
                let mut run =
                    |k: &Tensor, v: &Tensor| crate::cuda::decode_layer(&weights, &step, k, v);
                if let Some((sum, mlp)) = cache.decode_layer_at(cache_layer, &mut run)? {
                    x = sum;
                    pending = Some(mlp);
                    continue;
                }
            }
            let norms = &layer.norms;
            let h = match pending.take() {
                Some(branch) => add_then_norm(&mut x, branch, &norms.attn_in, rm)?,
                None => norm_opt(&norms.attn_in, x.clone())?,
            };
            let h = match (&layer.mixer, attentions.as_mut()) {
                (Mixer::Attention(a), Some(weights)) => {
                    let (h, w) = a.forward_with_weights(&h, &attn_in, cache, true)?;
                    if let Some(w) = w {
                        weights.push(self.window_keys(w, layer.layer_type)?);
                    }
                    h
                }
                (mixer, _) => mixer.forward(&h, &attn_in, masks.for_state(), i, cache)?,
            };
            let h = add_then_norm(&mut x, norm_opt(&norms.attn_out, h)?, &norms.mlp_in, rm)?;
            let h = norm_opt(&norms.mlp_out, layer.mlp.forward(&h)?)?;
            if hidden.is_some() {
                x = residual(x, h, rm)?;
            } else {
                pending = Some(h);
            }
        }
        if let Some(branch) = pending {
            x = residual(x, branch, rm)?;
        }
        let x = masks.final_norm(
            x,
            |x| self.norm.forward(x),
            &mut hidden,
            input.logits_to_keep,
        )?;
        let mut logits = self.lm_head(&x)?; // [b, t_kept, vocab] f32
        if let Some(s) = self.config.logits_scaling {
            logits = logits.broadcast_div(&Tensor::new(s as f32, logits.device())?)?;
        }
        if let Some(cap) = self.config.final_logit_softcapping {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(ModelOutput {
            logits,
            hidden_states: hidden,
            attentions,
        })
    }
}

impl CausalLM for Decoder {
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        self.thread.run(|| self.forward_here(input, cache))
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

    /// Every layer full attention (or a sliding window no shorter than `max_len`) through
    /// blocks that take device slots, dense MLPs, and RoPE whose angles are fixed per position
    /// below `max_len`: nothing of a step depends on its position on the host.
    fn takes_device_positions(&self, max_len: usize) -> bool {
        let cfg = &self.config;
        let window_ok = cfg.sliding_window.is_none_or(|w| w >= max_len);
        let layers_ok = self.layers.iter().all(|l| {
            let mixer_ok = match &l.mixer {
                Mixer::Attention(a) => a.takes_device_slots(),
                _ => false,
            };
            let window = l.layer_type != LayerType::SlidingAttention || window_ok;
            mixer_ok && window && matches!(l.mlp, FeedForward::Dense(_))
        });
        let rope_ok = [&self.rotary, &self.rotary_local]
            .iter()
            .all(|r| r.as_ref().is_none_or(|r| max_len <= r.device_table_len()));
        layers_ok
            && rope_ok
            && cfg.query_scaling.is_none()
            && cfg.recompute_cache_at.is_none()
            && cfg.moe.is_none()
    }
}

/// Every tensor [`Decoder::load`] reads for `cfg`, with its stored shape and its identity
/// initialisation (for `init_random`).
pub(crate) fn tensor_specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (nh, nkv, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let norm_init = match cfg.norm {
        super::config::NormKind::Rms => Init::Ones,
        super::config::NormKind::RmsUnitOffset => Init::Zeros,
    };
    let mut t = vec![TensorSpec::new(
        "model.embed_tokens.weight",
        vec![v, h],
        Init::Random,
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let mut linear = |name: &str, out: usize, inp: usize, bias: bool| {
            t.extend(TensorSpec::linear(
                &format!("{p}.{name}"),
                [out, inp],
                bias.then_some(out),
            ));
        };
        let attention = cfg.layer_types[l].is_attention();
        let q_width = if cfg.attn_output_gate {
            2 * nh * d
        } else {
            nh * d
        };
        match (cfg.layer_types[l], cfg.projections) {
            (LayerType::LinearAttention, _) => {
                if let Some(la) = &cfg.linear_attention {
                    let nv = la.num_value_heads;
                    match la.layout {
                        LinearAttentionLayout::Separate => {
                            linear("linear_attn.in_proj_qkv", la.conv_dim(), h, false);
                            linear("linear_attn.in_proj_z", la.value_dim(), h, false);
                            linear("linear_attn.in_proj_b", nv, h, false);
                            linear("linear_attn.in_proj_a", nv, h, false);
                        }
                        LinearAttentionLayout::Grouped => {
                            linear(
                                "linear_attn.in_proj_qkvz",
                                2 * la.key_dim() + 2 * la.value_dim(),
                                h,
                                false,
                            );
                            linear("linear_attn.in_proj_ba", 2 * nv, h, false);
                        }
                    }
                    linear("linear_attn.out_proj", h, la.value_dim(), false);
                }
            }
            (LayerType::Conv, _) => {
                let bias = cfg.short_conv.is_some_and(|c| c.bias);
                linear("conv.in_proj", 3 * h, h, bias);
                linear("conv.out_proj", h, h, bias);
            }
            (_, ProjectionLayout::Separate) => {
                linear("self_attn.q_proj", q_width, h, cfg.qkv_bias);
                linear("self_attn.k_proj", nkv * d, h, cfg.qkv_bias);
                linear("self_attn.v_proj", nkv * d, h, cfg.qkv_bias);
            }
            (_, ProjectionLayout::Fused) => {
                linear("self_attn.qkv_proj", q_width + 2 * nkv * d, h, cfg.qkv_bias)
            }
        }
        if attention {
            linear("self_attn.o_proj", h, nh * d, cfg.o_bias);
        }
        // Tensors not of the `[out, in]` + bias kind (while `linear` borrows `t`).
        let mut other = Vec::new();
        match (cfg.layer_types[l], &cfg.linear_attention, &cfg.short_conv) {
            (LayerType::LinearAttention, Some(la), _) => {
                let nv = la.num_value_heads;
                let a = format!("{p}.linear_attn");
                other.push(TensorSpec::new(
                    &format!("{a}.conv1d.weight"),
                    vec![la.conv_dim(), 1, la.conv_kernel_dim],
                    Init::Random,
                ));
                other.push(TensorSpec::new(
                    &format!("{a}.A_log"),
                    vec![nv],
                    Init::Zeros,
                ));
                other.push(TensorSpec::new(
                    &format!("{a}.dt_bias"),
                    vec![nv],
                    Init::Ones,
                ));
                other.push(TensorSpec::new(
                    &format!("{a}.norm.weight"),
                    vec![la.value_head_dim],
                    Init::Ones,
                ));
            }
            (LayerType::Conv, _, Some(sc)) => {
                other.push(TensorSpec::new(
                    &format!("{p}.conv.conv.weight"),
                    vec![h, 1, sc.kernel],
                    Init::Random,
                ));
                if sc.bias {
                    other.push(TensorSpec::new(
                        &format!("{p}.conv.conv.bias"),
                        vec![h],
                        Init::Zeros,
                    ));
                }
            }
            _ => {}
        }
        if cfg.attention_sinks && attention {
            other.push(TensorSpec::new(
                &format!("{p}.self_attn.sinks"),
                vec![nh],
                Init::Random,
            ));
        }
        match &cfg.moe {
            Some(moe) if moe.sparse_layers[l] && moe.layout == MoeLayout::GptOss => {
                let (n, mi) = (moe.num_experts, moe.moe_intermediate_size);
                linear("mlp.router", n, h, true);
                let e = format!("{p}.mlp.experts");
                for (name, shape) in [
                    ("gate_up_proj", vec![n, h, 2 * mi]),
                    ("gate_up_proj_bias", vec![n, 2 * mi]),
                    ("down_proj", vec![n, mi, h]),
                    ("down_proj_bias", vec![n, h]),
                ] {
                    other.push(TensorSpec::new(&format!("{e}.{name}"), shape, Init::Random));
                }
            }
            Some(moe) if moe.sparse_layers[l] => {
                let (block, [gate, up, down]) = match moe.layout {
                    MoeLayout::Mixtral => ("block_sparse_moe", ["w1", "w3", "w2"]),
                    _ => ("mlp", ["gate_proj", "up_proj", "down_proj"]),
                };
                let mi = moe.moe_intermediate_size;
                linear(&format!("{block}.gate"), moe.num_experts, h, false);
                for e in 0..moe.num_experts {
                    linear(&format!("{block}.experts.{e}.{gate}"), mi, h, false);
                    linear(&format!("{block}.experts.{e}.{up}"), mi, h, false);
                    linear(&format!("{block}.experts.{e}.{down}"), h, mi, false);
                }
                if let Some(si) = moe.shared_expert_intermediate_size {
                    linear(&format!("{block}.shared_expert.gate_proj"), si, h, false);
                    linear(&format!("{block}.shared_expert.up_proj"), si, h, false);
                    linear(&format!("{block}.shared_expert.down_proj"), h, si, false);
                    linear(&format!("{block}.shared_expert_gate"), 1, h, false);
                }
            }
            _ => {
                match cfg.projections {
                    ProjectionLayout::Separate => {
                        linear("mlp.gate_proj", i, h, cfg.mlp_bias);
                        linear("mlp.up_proj", i, h, cfg.mlp_bias);
                    }
                    ProjectionLayout::Fused => linear("mlp.gate_up_proj", 2 * i, h, cfg.mlp_bias),
                }
                linear("mlp.down_proj", h, i, cfg.mlp_bias);
            }
        }
        t.extend(other);
        let qk = match cfg.qk_norm {
            None => None,
            Some(QkNorm::PerHead) => Some((d, d)),
            Some(QkNorm::Projection) => Some((nh * d, nkv * d)),
        };
        if let (Some((q, k)), true) = (qk, attention) {
            t.push(TensorSpec::new(
                &format!("{p}.self_attn.q_norm.weight"),
                vec![q],
                norm_init,
            ));
            t.push(TensorSpec::new(
                &format!("{p}.self_attn.k_norm.weight"),
                vec![k],
                norm_init,
            ));
        }
        for name in norm_names(cfg.norm_placement).each().into_iter().flatten() {
            t.push(TensorSpec::new(
                &format!("{p}.{name}.weight"),
                vec![h],
                norm_init,
            ));
        }
    }
    t.push(TensorSpec::new("model.norm.weight", vec![h], norm_init));
    if !cfg.tie_word_embeddings {
        t.push(TensorSpec::new("lm_head.weight", vec![v, h], Init::Random));
    }
    for spec in &mut t {
        spec.name = rename(&spec.name, cfg.weight_renames);
    }
    t
}
