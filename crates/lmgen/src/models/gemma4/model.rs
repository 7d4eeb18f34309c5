//! Gemma 4's decoder layers and model: per-layer inputs, sandwich norms, the MoE beside the MLP,
//! `layer_scalar`, and the keys and values that shared KV layers read, passed along the stack.

use candle_core::{DType, Device, Tensor};

use super::attention::{Attention, SharedKv};
use super::moe::Moe;
use super::{spec_of, Gemma4Spec};
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::init::{Init, TensorSpec};
use crate::models::config::{Activation, ConfigFile, LayerType, ModelConfig, RopeConfig};
use crate::models::decoder::lm_head;
use crate::models::layers::embedding::Embedding;
use crate::models::layers::linear::{Linear, RowOutput};
use crate::models::layers::mask::{ForwardMasks, LayerMask};
use crate::models::layers::mlp::{activate, GateUp, GatedMlp, MlpSplit};
use crate::models::layers::norm::RmsNorm;
use crate::models::layers::rotary::RotaryEmbedding;
use crate::models::layers::LoadContext;
use crate::models::{layers_to_run, CausalLM, ForwardInput, ModelOutput};

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
        let (gate, up, down) = (
            format!("{p}.mlp.gate_proj"),
            format!("{p}.mlp.up_proj"),
            format!("{p}.mlp.down_proj"),
        );
        let dims = (h, l.intermediate_size);
        let mlp = match ctx.shard {
            None => GatedMlp::load_separate(
                ctx,
                [&gate, &up, &down],
                dims,
                cfg.mlp_bias,
                cfg.hidden_act,
            )?,
            Some(shard) => GatedMlp::load_split(
                ctx,
                (GateUp::Separate(&gate, &up), &down),
                dims,
                cfg.mlp_bias,
                cfg.hidden_act,
                MlpSplit {
                    shard,
                    field: "intermediate_size",
                    output: RowOutput::Reduced(shard.comm().clone()),
                },
            )?,
        };
        // The per-layer input branch is small: whole on every rank.
        let whole = &LoadContext {
            shard: None,
            ..*ctx
        };
        let per_layer = match spec.per_layer_input {
            None => None,
            Some(pl) => Some(PerLayerBranch {
                gate: Linear::load(
                    whole,
                    &format!("{p}.per_layer_input_gate"),
                    h,
                    pl.hidden_size,
                    false,
                )?,
                projection: Linear::load(
                    whole,
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
    /// Which thread runs [`CausalLM::forward`].
    thread: crate::models::pool::ForwardThread,
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
        // Split across tensor-parallel ranks, the per-layer table by vocabulary (the largest
        // tensor of the small Gemma 4 models), its projection whole on every rank.
        let whole = &LoadContext {
            shard: None,
            ..*ctx
        };
        let per_layer_inputs = match spec.per_layer_input {
            None => None,
            Some(pl) => Some(PerLayerInputs {
                embed: {
                    let (name, width) = ("model.embed_tokens_per_layer.weight", n * pl.hidden_size);
                    match ctx.shard {
                        None => Embedding::load(ctx, name, pl.vocab_size, width)?,
                        Some(shard) => Embedding::load_part(
                            ctx,
                            name,
                            (pl.vocab_size, "vocab_size_per_layer_input"),
                            width,
                            shard,
                        )?,
                    }
                },
                projection: Linear::load(
                    whole,
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
            thread: crate::models::pool::ForwardThread::for_model(ctx),
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

impl Gemma4 {
    /// [`CausalLM::forward`] on the calling thread.
    fn forward_here(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        if input.output_attentions {
            return Err(Error::unsupported(
                "`output_attentions` with Gemma 4: its attention does not return its weights yet; \
                 set `output_attentions` to false",
            ));
        }
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
                LayerType::SlidingAttention => &ropes[1],
                _ => &ropes[0],
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
            attentions: None,
        })
    }
}

impl CausalLM for Gemma4 {
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
}

/// Every tensor [`Gemma4::load`] reads for `cfg`, with its stored shape and its identity
/// initialisation (for `init_random`).
pub(crate) fn tensor_specs(cfg: &ModelConfig, _file: &ConfigFile<'_>) -> Result<Vec<TensorSpec>> {
    Ok(tensor_specs_of(cfg))
}

fn tensor_specs_of(cfg: &ModelConfig) -> Vec<TensorSpec> {
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
