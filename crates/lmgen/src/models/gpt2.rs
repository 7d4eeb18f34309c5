//! GPT-2 (HF `GPT2LMHeadModel`, `models/gpt2/modeling_gpt2.py`).
//!
//! Differences from Llama: learned absolute position embeddings (`wpe`) instead of RoPE,
//! LayerNorm with bias, fused `c_attn` q/k/v projection and `Conv1D` weights stored `[in, out]`
//! (transposed at load), biases everywhere, `gelu_new` MLP without gate, tied LM head, weights
//! under `transformer.` (or no prefix, as some old checkpoints).

use candle_core::{DType, Device, Module, Tensor};
use serde::Deserialize;

use super::config::{
    Activation, ConfigFile, LayerType, ModelConfig, NormKind, NormPlacement, ProjectionLayout,
    SavedDtype, TokenIdField,
};
use super::layers::attention::{Attention, AttentionInput, AttentionShape};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mask::ForwardMasks;
use super::layers::mlp::Mlp;
use super::layers::norm::LayerNorm;
use super::layers::LoadContext;
use super::layers_to_run;
use super::{Architecture, AttnImplementation, CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::Result;
use crate::init::{Init, TensorSpec};

mod projections;

use projections::Projections;

/// The `config.json` fields of `GPT2Config` that lmgen reads.
#[derive(Debug, Deserialize)]
struct Config {
    vocab_size: usize,
    n_embd: usize,
    n_head: usize,
    n_layer: usize,
    n_positions: usize,
    n_inner: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    scale_attn_weights: Option<bool>,
    #[serde(default)]
    reorder_and_upcast_attn: bool,
    bos_token_id: Option<TokenIdField>,
    pad_token_id: Option<TokenIdField>,
}

/// `gpt2`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let c: Config = file.parse()?;
    let (hidden_size, heads, layers) = (c.n_embd, c.n_head, c.n_layer);
    if heads == 0 || hidden_size % heads != 0 {
        // GPT2Attention raises the same ValueError; the fused c_attn weight alone would not catch it.
        return Err(file.err(format!(
            "`n_embd` ({hidden_size}) must be divisible by `n_head` ({heads})"
        )));
    }
    if c.reorder_and_upcast_attn {
        // Only changes numerics in half precision; lmgen always computes attention scores in the compute dtype.
        tracing::debug!("reorder_and_upcast_attn is set; attention runs in the compute dtype");
    }
    if c.scale_attn_weights == Some(false) {
        return Err(file.err("`scale_attn_weights: false` is not supported".into()));
    }
    let head_dim = hidden_size / heads;
    let act = c.activation_function.as_deref().unwrap_or("gelu_new");
    Ok(ModelConfig {
        moe: None,
        attention_sinks: false,
        attn_output_gate: false,
        linear_attention: None,
        short_conv: None,
        weight_renames: &[],
        gemma4: None,
        whisper: None,
        architecture: Architecture::Gpt2,
        vocab_size: c.vocab_size,
        hidden_size,
        intermediate_size: c.n_inner.unwrap_or(4 * hidden_size),
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        head_dim,
        max_position_embeddings: c.n_positions,
        norm_eps: c.layer_norm_epsilon.unwrap_or(1e-5),
        norm: NormKind::Rms, // unused: GPT-2 runs LayerNorm
        norm_placement: NormPlacement::Pre,
        qk_norm: None,
        rope: None,
        rope_local: None,
        tie_word_embeddings: c.tie_word_embeddings.unwrap_or(true),
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        projections: ProjectionLayout::Fused,
        hidden_act: Activation::from_hf(act, "activation_function", file)?,
        sliding_window: None,
        layer_types: vec![LayerType::FullAttention; layers],
        rope_layers: vec![false; layers],
        embedding_scale: None,
        residual_multiplier: None,
        attention_scaling: (head_dim as f64).powf(-0.5),
        query_scaling: None,
        logits_scaling: None,
        recompute_cache_at: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        bos_token_id: c.bos_token_id.as_ref().and_then(TokenIdField::first),
        pad_token_id: c.pad_token_id.as_ref().and_then(TokenIdField::first),
        torch_dtype: file.parse::<SavedDtype>()?.into_name(),
    })
}

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
    /// Which thread runs [`CausalLM::forward`].
    thread: crate::models::pool::ForwardThread,
    dtype: DType,
}

/// Builds GPT-2 (the registry's loader for `gpt2`).
pub fn load(
    config: ModelConfig,
    file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
) -> Result<Box<dyn CausalLM>> {
    let by_layer: bool = file.parse::<Config>()?.scale_attn_by_inverse_layer_idx;
    Ok(Box::new(Gpt2::load(config, by_layer, ctx)?))
}

impl Gpt2 {
    /// `scale_attn_by_inverse_layer_idx` divides layer `i`'s scores by `i + 1`.
    fn load(
        config: ModelConfig,
        scale_attn_by_inverse_layer_idx: bool,
        ctx: &LoadContext<'_>,
    ) -> Result<Self> {
        let cfg = &config;
        let h = cfg.hidden_size;
        let prefix = if ctx.contains("wte.weight") {
            ""
        } else {
            "transformer."
        };
        let wte = Embedding::load(ctx, &format!("{prefix}wte.weight"), cfg.vocab_size, h)?;
        let wpe = ctx.tensor(
            &format!("{prefix}wpe.weight"),
            &[cfg.max_position_embeddings, h],
        )?;
        let projections = Projections::new(ctx, cfg)?;
        let shape = AttentionShape {
            num_heads: projections.heads(),
            num_kv_heads: projections.heads(),
            head_dim: cfg.head_dim,
        };
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}h.{i}");
                let mut scale = cfg.attention_scaling;
                if scale_attn_by_inverse_layer_idx {
                    scale /= (i + 1) as f64;
                }
                let attn = Attention::new(
                    projections.c_attn(&format!("{p}.attn.c_attn"))?,
                    projections.c_proj(&format!("{p}.attn.c_proj"))?,
                    shape,
                    scale,
                    i,
                )
                .with_eager(ctx.attn_implementation == AttnImplementation::Eager);
                Ok(Block {
                    ln_1: LayerNorm::load(ctx, &format!("{p}.ln_1"), h, cfg.norm_eps)?,
                    attn: match ctx.shard {
                        Some(shard) => attn.with_split_heads(shard.comm().clone()),
                        None => attn,
                    },
                    ln_2: LayerNorm::load(ctx, &format!("{p}.ln_2"), h, cfg.norm_eps)?,
                    mlp: Mlp::new(
                        projections.c_fc(&format!("{p}.mlp.c_fc"))?,
                        projections.mlp_c_proj(&format!("{p}.mlp.c_proj"))?,
                        cfg.hidden_act,
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings || !ctx.contains("lm_head.weight") {
            wte.tied_head(ctx)?
        } else {
            Linear::load_lm_head(ctx, "lm_head", (h, cfg.vocab_size), "vocab_size")?
        };
        Ok(Self {
            wte,
            wpe: candle_nn::Embedding::new(wpe, h),
            h: blocks,
            ln_f: LayerNorm::load(ctx, &format!("{prefix}ln_f"), h, cfg.norm_eps)?,
            lm_head,
            device: ctx.device.clone(),
            thread: crate::models::pool::ForwardThread::for_model(ctx),
            dtype: ctx.dtype,
            config,
        })
    }
}

/// Every tensor GPT-2 loads, under `transformer.` (for `init_random`).
pub(crate) fn tensor_specs(cfg: &ModelConfig, _file: &ConfigFile<'_>) -> Result<Vec<TensorSpec>> {
    Ok(tensor_specs_of(cfg))
}

fn tensor_specs_of(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let mut t = vec![
        TensorSpec::new("transformer.wte.weight", vec![v, h], Init::Random),
        TensorSpec::new(
            "transformer.wpe.weight",
            vec![cfg.max_position_embeddings, h],
            Init::Random,
        ),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("transformer.h.{l}");
        for ln in ["ln_1", "ln_2"] {
            t.push(TensorSpec::new(
                &format!("{p}.{ln}.weight"),
                vec![h],
                Init::Ones,
            ));
            t.push(TensorSpec::new(
                &format!("{p}.{ln}.bias"),
                vec![h],
                Init::Zeros,
            ));
        }
        for (name, din, dout) in [
            ("attn.c_attn", h, 3 * h),
            ("attn.c_proj", h, h),
            ("mlp.c_fc", h, i),
            ("mlp.c_proj", i, h),
        ] {
            // Conv1D: stored `[in, out]`.
            t.extend(TensorSpec::linear(
                &format!("{p}.{name}"),
                [din, dout],
                Some(dout),
            ));
        }
    }
    t.push(TensorSpec::new(
        "transformer.ln_f.weight",
        vec![h],
        Init::Ones,
    ));
    t.push(TensorSpec::new(
        "transformer.ln_f.bias",
        vec![h],
        Init::Zeros,
    ));
    t
}

impl Gpt2 {
    /// [`CausalLM::forward`] on the calling thread.
    fn forward_here(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        let positions = input.position_ids.to_device(&self.device)?; // may come from the host
        let mut x = (self.wte.forward(input.input_ids)? + self.wpe.forward(&positions)?)?; // [b, t, h]
        let attn_in = AttentionInput {
            rope: None,
            mask: masks.for_layer(LayerType::FullAttention),
            query_scale: None,
            padding_queries: masks.padding_queries(),
            slots: None,
        };
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let mut attentions = input.output_attentions.then(Vec::new);
        let n = layers_to_run(input, self.h.len());
        for block in &self.h[..n] {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            let (a, w) = block.attn.forward_with_weights(
                &block.ln_1.forward(&x)?,
                &attn_in,
                cache,
                attentions.is_some(),
            )?;
            if let Some(weights) = attentions.as_mut() {
                weights.extend(w); // [b, nh, t, past + t]
            }
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
            attentions,
        })
    }
}

impl CausalLM for Gpt2 {
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
