//! Gemma 2 (HF `Gemma2ForCausalLM`, `models/gemma2/modeling_gemma2.py`).
//!
//! Differences from Llama:
//! - embeddings are scaled by `sqrt(hidden_size)` (in the compute dtype);
//! - RMSNorm scales by `1 + w`, and each layer has four norms: input, post-attention (on the
//!   attention output, before the residual), pre-feedforward and post-feedforward;
//! - attention scale is `query_pre_attn_scalar^-0.5`; the final logits are soft-capped
//!   (`tanh(x / cap) * cap`, `final_logit_softcapping`), and so are attention scores
//!   (`attn_logit_softcapping`) under `AttnImplementation::Eager` only, as in transformers, whose
//!   default `sdpa` attention skips it;
//! - layers alternate sliding-window and full attention (`layer_types`);
//! - GeLU (tanh approximation) gated MLP, tied LM head.

use candle_core::{DType, Device, Tensor};

use super::config::{LayerType, ModelConfig};
use super::layers::attention::{Attention, AttentionInput};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mask::ForwardMasks;
use super::layers::mlp::GatedMlp;
use super::layers::norm::RmsNorm;
use super::layers::rotary::RotaryEmbedding;
use super::layers::LoadContext;
use super::layers_to_run;
use super::llama::lm_head;
use super::{CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: GatedMlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    post_feedforward_layernorm: RmsNorm,
    layer_type: LayerType,
}

/// A Gemma 2 decoder with its LM head.
#[derive(Debug, Clone)]
pub struct Gemma2 {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryEmbedding,
    config: ModelConfig,
    device: Device,
    dtype: DType,
}

impl Gemma2 {
    pub fn load(config: ModelConfig, ctx: &LoadContext<'_>) -> Result<Self> {
        let cfg = &config;
        let (h, eps) = (cfg.hidden_size, cfg.norm_eps);
        let embed = Embedding::load(ctx, "model.embed_tokens.weight", cfg.vocab_size, h)?;
        let norm = |name: String| RmsNorm::load_gemma(ctx, &name, h, eps);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(DecoderLayer {
                    self_attn: Attention::load(ctx, &format!("{p}.self_attn"), cfg, i)?,
                    mlp: GatedMlp::load(
                        ctx,
                        &format!("{p}.mlp"),
                        h,
                        cfg.intermediate_size,
                        false,
                        cfg.hidden_act,
                    )?,
                    input_layernorm: norm(format!("{p}.input_layernorm"))?,
                    post_attention_layernorm: norm(format!("{p}.post_attention_layernorm"))?,
                    pre_feedforward_layernorm: norm(format!("{p}.pre_feedforward_layernorm"))?,
                    post_feedforward_layernorm: norm(format!("{p}.post_feedforward_layernorm"))?,
                    layer_type: cfg.layer_types[i],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rope = cfg.rope.as_ref().ok_or_else(|| Error::ModelConfig {
            path: "config.json".into(),
            message: "RoPE parameters missing".into(),
        })?;
        Ok(Self {
            lm_head: lm_head(ctx, cfg, &embed)?,
            embed_tokens: embed,
            layers,
            norm: norm("model.norm".into())?,
            rotary: RotaryEmbedding::new(rope, cfg.head_dim, cfg.max_position_embeddings),
            device: ctx.device.clone(),
            dtype: ctx.dtype,
            config,
        })
    }
}

fn softcap(x: Tensor, cap: Option<f64>) -> Result<Tensor> {
    Ok(match cap {
        Some(c) => ((x / c)?.tanh()? * c)?,
        None => x,
    })
}

impl CausalLM for Gemma2 {
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        let positions: Vec<Vec<u32>> = input.position_ids.to_vec2()?;
        let (cos, sin) = self.rotary.cos_sin(&positions, self.dtype, &self.device)?;
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        // `normalizer = torch.tensor(hidden_size**0.5, dtype=hidden.dtype)`
        let normalizer = Tensor::new((self.config.hidden_size as f64).sqrt() as f32, &self.device)?
            .to_dtype(self.dtype)?;
        let mut x = self
            .embed_tokens
            .forward(input.input_ids)?
            .broadcast_mul(&normalizer)?; // [b, t, h]
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let n = layers_to_run(input, self.layers.len());
        for layer in &self.layers[..n] {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            let attn_in = AttentionInput {
                rope: Some((&cos, &sin)),
                mask: masks.for_layer(layer.layer_type),
            };
            let h =
                layer
                    .self_attn
                    .forward(&layer.input_layernorm.forward(&x)?, &attn_in, cache)?;
            x = (x + layer.post_attention_layernorm.forward(&h)?)?;
            let h = layer
                .mlp
                .forward(&layer.pre_feedforward_layernorm.forward(&x)?)?;
            x = (x + layer.post_feedforward_layernorm.forward(&h)?)?;
        }
        let x = masks.final_norm(
            x,
            |x| self.norm.forward(x),
            &mut hidden,
            input.logits_to_keep,
        )?;
        let logits = self.lm_head(&x)?;
        let logits = softcap(logits, self.config.final_logit_softcapping)?; // [b, t_kept, vocab]
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
