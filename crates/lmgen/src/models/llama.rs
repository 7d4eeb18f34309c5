//! Llama (HF `LlamaForCausalLM`, `models/llama/modeling_llama.py`): RoPE (default, linear,
//! dynamic, llama3), grouped-query attention, RMSNorm, SiLU-gated MLP, tied or untied LM head.
//!
//! Mistral and Qwen2 run on this code; their differences are configuration only
//! (`models/config.rs`):
//! - Mistral (`MistralForCausalLM`): every layer attends through a sliding window of
//!   `sliding_window` tokens (absent or `null`: full attention). The mask applies the window.
//! - Qwen2 (`Qwen2ForCausalLM`): q, k and v projections have biases (o_proj has none); layers
//!   marked `sliding_attention` use a window only when `use_sliding_window` sets one.

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
use super::{CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::Result;

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: GatedMlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    layer_type: LayerType,
}

/// A Llama-family decoder with its LM head.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryEmbedding,
    config: ModelConfig,
    device: Device,
    dtype: DType,
}

/// The LM head: `lm_head.weight`, or the embedding table when tied (its blocks when the table is
/// quantized, as llama.cpp runs it).
pub(crate) fn lm_head(
    ctx: &LoadContext<'_>,
    cfg: &ModelConfig,
    embed: &Embedding,
) -> Result<Linear> {
    if cfg.tie_word_embeddings && !ctx.weights.contains("lm_head.weight") {
        embed.tied_head(ctx)
    } else {
        Linear::load(ctx, "lm_head", cfg.hidden_size, cfg.vocab_size, false)
    }
}

impl Llama {
    pub fn load(config: ModelConfig, ctx: &LoadContext<'_>) -> Result<Self> {
        let cfg = &config;
        let embed = Embedding::load(
            ctx,
            "model.embed_tokens.weight",
            cfg.vocab_size,
            cfg.hidden_size,
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let h = cfg.hidden_size;
                Ok(DecoderLayer {
                    self_attn: Attention::load(ctx, &format!("{p}.self_attn"), cfg, i)?,
                    mlp: GatedMlp::load(
                        ctx,
                        &format!("{p}.mlp"),
                        h,
                        cfg.intermediate_size,
                        cfg.mlp_bias,
                        cfg.hidden_act,
                    )?,
                    input_layernorm: RmsNorm::load(
                        ctx,
                        &format!("{p}.input_layernorm"),
                        h,
                        cfg.norm_eps,
                    )?,
                    post_attention_layernorm: RmsNorm::load(
                        ctx,
                        &format!("{p}.post_attention_layernorm"),
                        h,
                        cfg.norm_eps,
                    )?,
                    layer_type: cfg.layer_types[i],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rope = cfg.rope.as_ref().ok_or_else(|| crate::Error::ModelConfig {
            path: "config.json".into(),
            message: "RoPE parameters missing".into(),
        })?;
        Ok(Self {
            lm_head: lm_head(ctx, cfg, &embed)?,
            embed_tokens: embed,
            layers,
            norm: RmsNorm::load(ctx, "model.norm", cfg.hidden_size, cfg.norm_eps)?,
            rotary: RotaryEmbedding::new(rope, cfg.head_dim, cfg.max_position_embeddings),
            device: ctx.device.clone(),
            dtype: ctx.dtype,
            config,
        })
    }
}

impl CausalLM for Llama {
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        let positions: Vec<Vec<u32>> = input.position_ids.to_vec2()?;
        let (cos, sin) = self.rotary.cos_sin(&positions, self.dtype, &self.device)?;
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        let mut x = self.embed_tokens.forward(input.input_ids)?; // [b, t, h]
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
            x = (x + h)?;
            let h = layer
                .mlp
                .forward(&layer.post_attention_layernorm.forward(&x)?)?;
            x = (x + h)?;
        }
        let x = masks.final_norm(
            x,
            |x| self.norm.forward(x),
            &mut hidden,
            input.logits_to_keep,
        )?;
        let logits = self.lm_head(&x)?; // [b, t_kept, vocab]
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
