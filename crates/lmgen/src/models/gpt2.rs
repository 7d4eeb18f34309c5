//! GPT-2 (HF `GPT2LMHeadModel`, `models/gpt2/modeling_gpt2.py`).
//!
//! Differences from Llama: learned absolute position embeddings (`wpe`) instead of RoPE,
//! LayerNorm with bias, fused `c_attn` q/k/v projection and `Conv1D` weights stored `[in, out]`
//! (transposed at load), biases everywhere, `gelu_new` MLP without gate, tied LM head, weights
//! under `transformer.` (or no prefix, as some old checkpoints).

use candle_core::{DType, Device, Module, Tensor};

use super::config::LayerType;
use super::config::ModelConfig;
use super::layers::attention::{Attention, AttentionInput};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mask::ForwardMasks;
use super::layers::mlp::Mlp;
use super::layers::norm::LayerNorm;
use super::layers::LoadContext;
use super::layers_to_run;
use super::{CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::Result;

#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

/// GPT-2 with its LM head.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    wte: Embedding,
    wpe: candle_nn::Embedding,
    h: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    config: ModelConfig,
    device: Device,
    dtype: DType,
}

impl Gpt2 {
    pub fn load(config: ModelConfig, ctx: &LoadContext<'_>) -> Result<Self> {
        let cfg = &config;
        let h = cfg.hidden_size;
        let prefix = if ctx.weights.contains("wte.weight") {
            ""
        } else {
            "transformer."
        };
        let wte = Embedding::load(ctx, &format!("{prefix}wte.weight"), cfg.vocab_size, h)?;
        let wpe = ctx.tensor(
            &format!("{prefix}wpe.weight"),
            &[cfg.max_position_embeddings, h],
        )?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}h.{i}");
                Ok(Block {
                    ln_1: LayerNorm::load(ctx, &format!("{p}.ln_1"), h, cfg.norm_eps)?,
                    attn: Attention::load_gpt2(ctx, &format!("{p}.attn"), cfg, i)?,
                    ln_2: LayerNorm::load(ctx, &format!("{p}.ln_2"), h, cfg.norm_eps)?,
                    mlp: Mlp::load_gpt2(
                        ctx,
                        &format!("{p}.mlp"),
                        h,
                        cfg.intermediate_size,
                        cfg.hidden_act,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings || !ctx.weights.contains("lm_head.weight") {
            wte.tied_head(ctx)?
        } else {
            Linear::load(ctx, "lm_head", h, cfg.vocab_size, false)?
        };
        Ok(Self {
            wte,
            wpe: candle_nn::Embedding::new(wpe, h),
            h: blocks,
            ln_f: LayerNorm::load(ctx, &format!("{prefix}ln_f"), h, cfg.norm_eps)?,
            lm_head,
            device: ctx.device.clone(),
            dtype: ctx.dtype,
            config,
        })
    }
}

impl CausalLM for Gpt2 {
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        let positions = input.position_ids.to_device(&self.device)?; // may come from the host
        let mut x = (self.wte.forward(input.input_ids)? + self.wpe.forward(&positions)?)?; // [b, t, h]
        let attn_in = AttentionInput {
            rope: None,
            mask: masks.for_layer(LayerType::FullAttention),
        };
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let n = layers_to_run(input, self.h.len());
        for block in &self.h[..n] {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            let a = block
                .attn
                .forward(&block.ln_1.forward(&x)?, &attn_in, cache)?;
            x = (x + a)?;
            let m = block.mlp.forward(&block.ln_2.forward(&x)?)?;
            x = (x + m)?;
        }
        let x = masks.final_norm(
            x,
            |x| self.ln_f.forward(x),
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
