//! BART and mBART (HF `BartForConditionalGeneration`, `models/bart/modeling_bart.py`;
//! `MBartForConditionalGeneration`, `models/mbart/modeling_mbart.py`), and the model that
//! Marian's row runs (`marian.rs`: `MarianMTModel` is BART's code with other embeddings).
//!
//! An encoder and a decoder of [`BartEncoderLayer`]s and [`BartDecoderLayer`]s over token
//! embeddings scaled by `sqrt(d_model)` when `scale_embedding`, plus absolute positions: a
//! learned table read at `position + 2` (`BartLearnedPositionalEmbedding`'s offset), or Marian's
//! sinusoidal table. What the three differ in is a [`Variant`]:
//! - BART: post-norm layers, `layernorm_embedding` after the embeddings;
//! - mBART: pre-norm layers, `layernorm_embedding`, and a final `layer_norm` closing each stack;
//! - Marian: post-norm layers, no `layernorm_embedding`, sinusoidal positions.
//!
//! The LM head is tied to the shared token table (`model.shared.weight`, which the encoder's and
//! the decoder's `embed_tokens` also are) unless `tie_word_embeddings` is false, and its logits
//! get `final_logits_bias` (a stored buffer; zeros when the file has none). As transformers 5,
//! `tie_word_embeddings: false` unties the encoder's and decoder's tables from `shared` too:
//! each stack then reads its own stored `embed_tokens` (falling back to `shared` when the file
//! has no such table, where transformers would initialise one at random).
//!
//! Positions: the encoder's are `0..s` whatever the padding (as transformers computes them, so
//! left and right padding give different encoder outputs), the decoder's continue from the
//! cache's length (HF `arange(seq_length) + past_key_values_length`); the forward input's
//! `position_ids` are not read.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::config::{
    Activation, ConfigFile, LayerType, ModelConfig, NormKind, NormPlacement, ProjectionLayout,
    SavedDtype, TokenIdField,
};
use super::layers::bart_layer::{
    BartDecoderLayer, BartEncoderLayer, DecoderMasks, F16Clamp, LayerShape, NormPosition,
};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mask::{ForwardMasks, LayerMask};
use super::layers::norm::LayerNorm;
use super::layers::seq2seq_attention::{cross_attention, padding_mask};
use super::layers::LoadContext;
use super::llama::nullable;
use super::seq2seq::{Encoder, EncoderInput, EncoderOutput};
use super::{layers_to_run, marian, Architecture, CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::init::{Init, TensorSpec};

/// How a stack adds positions to its token embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Positions {
    /// HF `BartLearnedPositionalEmbedding`: `embed_positions.weight`
    /// `[max_position_embeddings + 2, d_model]`, read at `position + 2`.
    Learned,
    /// HF `MarianSinusoidalPositionalEmbedding`: `[max_position_embeddings, d_model]`, read from
    /// the file when it stores the table, computed otherwise ([`marian::sinusoidal_table`]).
    Sinusoidal,
}

/// What one row of the family changes, and its `configuration_*.py` defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Variant {
    pub architecture: Architecture,
    pub norm: NormPosition,
    /// A `layer_norm` after the last layer of each stack (mBART).
    pub final_layer_norm: bool,
    /// `layernorm_embedding` after the embeddings (BART, mBART).
    pub layernorm_embedding: bool,
    pub positions: Positions,
    /// When half-precision encoder outputs are clamped.
    pub f16_clamp: F16Clamp,
    /// `vocab_size` when absent.
    pub vocab_size: usize,
    /// `pad_token_id` when absent.
    pub pad_token_id: Option<u32>,
    /// `bos_token_id` when absent.
    pub bos_token_id: Option<u32>,
}

/// `BartConfig`.
pub(crate) const BART: Variant = Variant {
    architecture: Architecture::Bart,
    norm: NormPosition::Post,
    final_layer_norm: false,
    layernorm_embedding: true,
    positions: Positions::Learned,
    f16_clamp: F16Clamp::IfNotFinite,
    vocab_size: 50265,
    pad_token_id: Some(1),
    bos_token_id: Some(0),
};

/// `MBartConfig`: BART's defaults, pre-norm layers closed by a final `layer_norm`.
pub(crate) const MBART: Variant = Variant {
    architecture: Architecture::MBart,
    norm: NormPosition::Pre,
    final_layer_norm: true,
    f16_clamp: F16Clamp::Always,
    ..BART
};

/// The `config.json` fields of `BartConfig`, `MBartConfig` and `MarianConfig` that lmgen reads;
/// absent ones take the class defaults (`d_model` 1024, 12 layers of 16 heads, `ffn_dim` 4096,
/// 1024 positions, `gelu`).
#[derive(Debug, Deserialize)]
struct Config {
    vocab_size: Option<usize>,
    d_model: Option<usize>,
    encoder_layers: Option<usize>,
    decoder_layers: Option<usize>,
    encoder_attention_heads: Option<usize>,
    decoder_attention_heads: Option<usize>,
    encoder_ffn_dim: Option<usize>,
    decoder_ffn_dim: Option<usize>,
    max_position_embeddings: Option<usize>,
    activation_function: Option<String>,
    scale_embedding: Option<bool>,
    tie_word_embeddings: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    bos_token_id: Option<Option<TokenIdField>>,
    #[serde(default, deserialize_with = "nullable")]
    pad_token_id: Option<Option<TokenIdField>>,
    /// Marian: the decoder's (and the LM head's) vocabulary when it is not shared.
    decoder_vocab_size: Option<usize>,
    /// Marian: one token table for encoder, decoder and LM head (default true).
    share_encoder_decoder_embeddings: Option<bool>,
}

/// Both stacks' shapes, resolved from [`Config`] with a [`Variant`]'s defaults.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    variant: Variant,
    /// The encoder's vocabulary (`vocab_size`).
    vocab_size: usize,
    /// The decoder's and the LM head's (`decoder_vocab_size`, Marian; else `vocab_size`).
    decoder_vocab_size: usize,
    d_model: usize,
    encoder: LayerShape,
    decoder: LayerShape,
    encoder_layers: usize,
    decoder_layers: usize,
    max_position_embeddings: usize,
    /// `sqrt(d_model)` with `scale_embedding`.
    embed_scale: Option<f64>,
    tie_word_embeddings: bool,
    /// Encoder and decoder read one table (`model.shared`); Marian may keep two.
    share_embeddings: bool,
    bos_token_id: Option<u32>,
    pad_token_id: Option<u32>,
}

impl Shape {
    /// Reads `file` with `variant`'s defaults, checking what transformers' classes raise on.
    pub(crate) fn parse(file: &ConfigFile<'_>, variant: Variant) -> Result<Self> {
        let c: Config = file.parse()?;
        let d_model = c.d_model.unwrap_or(1024);
        let activation = c.activation_function.as_deref().unwrap_or("gelu");
        let activation = Activation::from_hf(activation, "activation_function", file)?;
        let stack = |heads: Option<usize>, ffn: Option<usize>, name: &str| -> Result<LayerShape> {
            let num_heads = heads.unwrap_or(16);
            if num_heads == 0 || d_model % num_heads != 0 {
                // BartAttention's ValueError.
                return Err(file.err(format!(
                    "`d_model` ({d_model}) must be divisible by `{name}_attention_heads` ({num_heads})"
                )));
            }
            Ok(LayerShape {
                hidden: d_model,
                num_heads,
                ffn_dim: ffn.unwrap_or(4096),
                activation,
                norm: variant.norm,
            })
        };
        let vocab_size = c.vocab_size.unwrap_or(variant.vocab_size);
        let share_embeddings = c.share_encoder_decoder_embeddings.unwrap_or(true);
        let token = |field: Option<Option<TokenIdField>>, default| match field {
            None => default,
            Some(id) => id.as_ref().and_then(TokenIdField::first),
        };
        Ok(Self {
            variant,
            vocab_size,
            // MarianConfig: `decoder_vocab_size or vocab_size`; a shared table has one size.
            decoder_vocab_size: match c.decoder_vocab_size {
                Some(n) if !share_embeddings => n,
                _ => vocab_size,
            },
            d_model,
            encoder: stack(c.encoder_attention_heads, c.encoder_ffn_dim, "encoder")?,
            decoder: stack(c.decoder_attention_heads, c.decoder_ffn_dim, "decoder")?,
            encoder_layers: c.encoder_layers.unwrap_or(12),
            decoder_layers: c.decoder_layers.unwrap_or(12),
            max_position_embeddings: c.max_position_embeddings.unwrap_or(1024),
            embed_scale: c
                .scale_embedding
                .unwrap_or(false)
                .then(|| (d_model as f64).sqrt()),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(true),
            share_embeddings,
            bos_token_id: token(c.bos_token_id, variant.bos_token_id),
            pad_token_id: token(c.pad_token_id, variant.pad_token_id),
        })
    }

    /// The decoder's [`ModelConfig`] (what `generate()`, the KV cache and the memory checks
    /// read): `decoder_layers` of `decoder_attention_heads`, full attention, no RoPE.
    pub(crate) fn model_config(&self, file: &ConfigFile<'_>) -> Result<ModelConfig> {
        let d = &self.decoder;
        let layers = self.decoder_layers;
        let head_dim = d.hidden / d.num_heads;
        Ok(ModelConfig {
            architecture: self.variant.architecture,
            vocab_size: self.decoder_vocab_size,
            hidden_size: self.d_model,
            intermediate_size: d.ffn_dim,
            num_hidden_layers: layers,
            num_attention_heads: d.num_heads,
            num_key_value_heads: d.num_heads,
            head_dim,
            max_position_embeddings: self.max_position_embeddings,
            norm_eps: 1e-5,
            norm: NormKind::Rms, // unused: the layers run LayerNorm
            norm_placement: match self.variant.norm {
                NormPosition::Pre => NormPlacement::Pre,
                NormPosition::Post => NormPlacement::Post,
            },
            qk_norm: None,
            rope: None,
            rope_local: None,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            projections: ProjectionLayout::Separate,
            hidden_act: d.activation,
            sliding_window: None,
            layer_types: vec![LayerType::FullAttention; layers],
            rope_layers: vec![false; layers],
            embedding_scale: None, // applied by the model's own embeddings
            residual_multiplier: None,
            attention_scaling: (head_dim as f64).powf(-0.5),
            query_scaling: None,
            logits_scaling: None,
            recompute_cache_at: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            bos_token_id: self.bos_token_id,
            pad_token_id: self.pad_token_id,
            torch_dtype: file.parse::<SavedDtype>()?.into_name(),
            moe: None,
            attention_sinks: false,
            attn_output_gate: false,
            linear_attention: None,
            short_conv: None,
            weight_renames: &[],
            gemma4: None,
        })
    }

    /// Rows of a stack's position table.
    fn position_rows(&self) -> usize {
        match self.variant.positions {
            Positions::Learned => self.max_position_embeddings + LEARNED_OFFSET,
            Positions::Sinusoidal => self.max_position_embeddings,
        }
    }
}

/// `BartLearnedPositionalEmbedding.offset`.
const LEARNED_OFFSET: usize = 2;

/// `bart`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    Shape::parse(file, BART)?.model_config(file)
}

/// `mbart`.
pub fn parse_mbart(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    Shape::parse(file, MBART)?.model_config(file)
}

/// Builds BART (the registry's loader for `bart`).
pub fn load(
    config: ModelConfig,
    file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
) -> Result<Box<dyn CausalLM>> {
    load_variant(config, file, ctx, BART)
}

/// Builds mBART (the registry's loader for `mbart`).
pub fn load_mbart(
    config: ModelConfig,
    file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
) -> Result<Box<dyn CausalLM>> {
    load_variant(config, file, ctx, MBART)
}

/// Builds the model of `variant`'s row.
pub(crate) fn load_variant(
    config: ModelConfig,
    file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
    variant: Variant,
) -> Result<Box<dyn CausalLM>> {
    let shape = Shape::parse(file, variant)?;
    Ok(Box::new(Bart::load(config, &shape, ctx)?))
}

/// Token embeddings, scaled, plus positions, then `layernorm_embedding` (HF
/// `BartScaledWordEmbedding` + `BartLearnedPositionalEmbedding` + `layernorm_embedding`, or
/// Marian's `embed_tokens * embed_scale` + sinusoidal positions).
#[derive(Debug, Clone)]
struct Embeddings {
    tokens: Embedding,
    /// Rows of `tokens`, for the encoder's id check.
    vocab_size: usize,
    scale: Option<f64>,
    /// `[rows, d_model]`, read at `position + offset`.
    positions: Tensor,
    offset: usize,
    max_positions: usize,
    layernorm: Option<LayerNorm>,
}

impl Embeddings {
    /// `ids [b, t]` at positions `start..start + t` -> `[b, t, d_model]`.
    fn forward(&self, ids: &Tensor, start: usize) -> Result<Tensor> {
        let t = ids.dim(1)?;
        if start + t > self.max_positions {
            return Err(Error::input(format!(
                "position {} is past the {} positions this model has (`max_position_embeddings`)",
                start + t - 1,
                self.max_positions
            )));
        }
        let mut x = self.tokens.forward(ids)?; // [b, t, h]
        if let Some(scale) = self.scale {
            x = (x * scale)?;
        }
        let pos = self.positions.narrow(0, start + self.offset, t)?; // [t, h]
        let x = x.broadcast_add(&pos.unsqueeze(0)?)?;
        match &self.layernorm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        }
    }
}

/// HF `BartEncoder` (and mBART's, Marian's).
#[derive(Debug, Clone)]
struct BartEncoder {
    embed: Embeddings,
    layers: Vec<BartEncoderLayer>,
    /// mBART's final `layer_norm`.
    layer_norm: Option<LayerNorm>,
    dtype: DType,
    device: Device,
}

/// HF `BartDecoder` (and mBART's, Marian's).
#[derive(Debug, Clone)]
struct BartDecoder {
    embed: Embeddings,
    layers: Vec<BartDecoderLayer>,
    layer_norm: Option<LayerNorm>,
}

/// BART, mBART or Marian with its LM head.
#[derive(Debug, Clone)]
pub struct Bart {
    encoder: BartEncoder,
    decoder: BartDecoder,
    lm_head: Linear,
    /// `[1, decoder_vocab_size]` in the compute dtype; `None` when the file has none (zeros).
    final_logits_bias: Option<Tensor>,
    config: ModelConfig,
    device: Device,
    dtype: DType,
}

/// Where the stored names start: `model.` (`*ForConditionalGeneration`), or nothing (a bare
/// `BartModel`, whose file has no LM head: the tied table serves).
fn model_prefix(ctx: &LoadContext<'_>) -> &'static str {
    let bare = !ctx.contains("model.shared.weight")
        && !ctx.contains("model.decoder.embed_tokens.weight")
        && (ctx.contains("shared.weight") || ctx.contains("decoder.embed_tokens.weight"));
    if bare {
        ""
    } else {
        "model."
    }
}

/// The stored token table of `stack` (`encoder` or `decoder`): `{prefix}shared.weight` when the
/// tables are tied and it is stored, else the stack's own `embed_tokens` if stored, else `shared`.
fn token_table(ctx: &LoadContext<'_>, prefix: &str, stack: &str, shape: &Shape) -> String {
    let shared = format!("{prefix}shared.weight");
    let own = format!("{prefix}{stack}.embed_tokens.weight");
    let tied = shape.tie_word_embeddings && shape.share_embeddings;
    if (tied && ctx.contains(&shared)) || !ctx.contains(&own) {
        shared
    } else {
        own
    }
}

impl Bart {
    fn load(config: ModelConfig, shape: &Shape, ctx: &LoadContext<'_>) -> Result<Self> {
        let prefix = model_prefix(ctx);
        let h = shape.d_model;
        let enc_table = token_table(ctx, prefix, "encoder", shape);
        let dec_table = token_table(ctx, prefix, "decoder", shape);
        let enc_tokens = Embedding::load(ctx, &enc_table, shape.vocab_size, h)?;
        let dec_tokens = if dec_table == enc_table {
            enc_tokens.clone()
        } else {
            Embedding::load(ctx, &dec_table, shape.decoder_vocab_size, h)?
        };
        let v = shape.variant;
        let stack = |name: &str, tokens: Embedding, vocab_size| -> Result<Embeddings> {
            let p = format!("{prefix}{name}");
            Ok(Embeddings {
                tokens,
                vocab_size,
                scale: shape.embed_scale,
                positions: position_table(ctx, &format!("{p}.embed_positions.weight"), shape)?,
                offset: match v.positions {
                    Positions::Learned => LEARNED_OFFSET,
                    Positions::Sinusoidal => 0,
                },
                max_positions: shape.max_position_embeddings,
                layernorm: v
                    .layernorm_embedding
                    .then(|| LayerNorm::load(ctx, &format!("{p}.layernorm_embedding"), h, 1e-5))
                    .transpose()?,
            })
        };
        let final_norm = |name: &str| {
            v.final_layer_norm
                .then(|| LayerNorm::load(ctx, &format!("{prefix}{name}.layer_norm"), h, 1e-5))
                .transpose()
        };
        let encoder = BartEncoder {
            embed: stack("encoder", enc_tokens, shape.vocab_size)?,
            layers: (0..shape.encoder_layers)
                .map(|i| {
                    let p = format!("{prefix}encoder.layers.{i}");
                    BartEncoderLayer::load(ctx, &p, &shape.encoder, v.f16_clamp)
                })
                .collect::<Result<_>>()?,
            layer_norm: final_norm("encoder")?,
            dtype: ctx.dtype,
            device: ctx.device.clone(),
        };
        let lm_head = if shape.tie_word_embeddings || !ctx.contains("lm_head.weight") {
            dec_tokens.tied_head(ctx)?
        } else {
            Linear::load(ctx, "lm_head", h, shape.decoder_vocab_size, false)?
        };
        let decoder = BartDecoder {
            embed: stack("decoder", dec_tokens, shape.decoder_vocab_size)?,
            layers: (0..shape.decoder_layers)
                .map(|i| {
                    let p = format!("{prefix}decoder.layers.{i}");
                    BartDecoderLayer::load(ctx, &p, &shape.decoder, i)
                })
                .collect::<Result<_>>()?,
            layer_norm: final_norm("decoder")?,
        };
        let final_logits_bias = ctx
            .contains("final_logits_bias")
            .then(|| ctx.tensor("final_logits_bias", &[1, shape.decoder_vocab_size]))
            .transpose()?;
        Ok(Self {
            encoder,
            decoder,
            lm_head,
            final_logits_bias,
            config,
            device: ctx.device.clone(),
            dtype: ctx.dtype,
        })
    }
}

/// A stack's position table `name`: stored, or (sinusoidal positions only) computed.
fn position_table(ctx: &LoadContext<'_>, name: &str, shape: &Shape) -> Result<Tensor> {
    let rows = shape.position_rows();
    if shape.variant.positions == Positions::Learned || ctx.contains(name) {
        return ctx.tensor(name, &[rows, shape.d_model]);
    }
    let table = marian::sinusoidal_table(rows, shape.d_model);
    Ok(Tensor::from_vec(table, (rows, shape.d_model), ctx.device)?.to_dtype(ctx.dtype)?)
}

impl Encoder for BartEncoder {
    fn encode(&self, input: &EncoderInput<'_>) -> Result<EncoderOutput> {
        let EncoderInput::Ids {
            input_ids,
            attention_mask,
        } = *input
        else {
            return Err(Error::input(
                "this model's encoder reads token ids (`input_ids`), not audio features",
            ));
        };
        let ids: Vec<Vec<u32>> = input_ids.to_vec2()?;
        if let Some(&id) = ids
            .iter()
            .flatten()
            .find(|&&id| id as usize >= self.embed.vocab_size)
        {
            return Err(Error::input(format!(
                "`input_ids`: token id {id} is out of range for the encoder's vocabulary of {} \
                 (`vocab_size`)",
                self.embed.vocab_size
            )));
        }
        let input_ids = input_ids.to_device(&self.device)?;
        let mut x = self.embed.forward(&input_ids, 0)?; // [b, s, h]
        let mask = padding_mask(attention_mask, self.dtype, &self.device)?; // [b, 1, 1, s]
        for layer in &self.layers {
            x = layer.forward(&x, mask.as_ref())?;
        }
        if let Some(norm) = &self.layer_norm {
            x = norm.forward(&x)?;
        }
        Ok(EncoderOutput {
            last_hidden_state: x,
            attention_mask: mask
                .is_some()
                .then(|| attention_mask.unwrap_or(&[]).to_vec()),
        })
    }
}

/// Every tensor the row of `variant` loads for `file` (for `init_random`): one shared token
/// table (two for a Marian config that does not share them), the LM head when untied,
/// `final_logits_bias`, and both stacks.
pub(crate) fn tensor_specs_of(file: &ConfigFile<'_>, variant: Variant) -> Result<Vec<TensorSpec>> {
    let s = Shape::parse(file, variant)?;
    let h = s.d_model;
    let mut t = Vec::new();
    if s.share_embeddings {
        t.push(TensorSpec::new(
            "model.shared.weight",
            vec![s.vocab_size, h],
            Init::Random,
        ));
    } else {
        for (stack, vocab) in [("encoder", s.vocab_size), ("decoder", s.decoder_vocab_size)] {
            let name = format!("model.{stack}.embed_tokens.weight");
            t.push(TensorSpec::new(&name, vec![vocab, h], Init::Random));
        }
    }
    if !s.tie_word_embeddings {
        let shape = vec![s.decoder_vocab_size, h];
        t.push(TensorSpec::new("lm_head.weight", shape, Init::Random));
    }
    let bias = vec![1, s.decoder_vocab_size];
    t.push(TensorSpec::new("final_logits_bias", bias, Init::Zeros));
    let norm = |t: &mut Vec<TensorSpec>, name: String| {
        t.push(TensorSpec::new(
            &format!("{name}.weight"),
            vec![h],
            Init::Ones,
        ));
        t.push(TensorSpec::new(
            &format!("{name}.bias"),
            vec![h],
            Init::Zeros,
        ));
    };
    let v = s.variant;
    for (stack, layers, ffn) in [
        ("encoder", s.encoder_layers, s.encoder.ffn_dim),
        ("decoder", s.decoder_layers, s.decoder.ffn_dim),
    ] {
        let p = format!("model.{stack}");
        if v.positions == Positions::Learned {
            let rows = vec![s.position_rows(), h];
            let name = format!("{p}.embed_positions.weight");
            t.push(TensorSpec::new(&name, rows, Init::Random));
        }
        if v.layernorm_embedding {
            norm(&mut t, format!("{p}.layernorm_embedding"));
        }
        for i in 0..layers {
            let l = format!("{p}.layers.{i}");
            let attentions: &[&str] = if stack == "encoder" {
                &["self_attn"]
            } else {
                &["self_attn", "encoder_attn"]
            };
            for attn in attentions {
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    t.extend(TensorSpec::linear(
                        &format!("{l}.{attn}.{proj}"),
                        [h, h],
                        Some(h),
                    ));
                }
                norm(&mut t, format!("{l}.{attn}_layer_norm"));
            }
            t.extend(TensorSpec::linear(&format!("{l}.fc1"), [ffn, h], Some(ffn)));
            t.extend(TensorSpec::linear(&format!("{l}.fc2"), [h, ffn], Some(h)));
            norm(&mut t, format!("{l}.final_layer_norm"));
        }
        if v.final_layer_norm {
            norm(&mut t, format!("{p}.layer_norm"));
        }
    }
    Ok(t)
}

/// `bart`'s tensors.
pub(crate) fn tensor_specs(_: &ModelConfig, file: &ConfigFile<'_>) -> Result<Vec<TensorSpec>> {
    tensor_specs_of(file, BART)
}

/// `mbart`'s tensors.
pub(crate) fn tensor_specs_mbart(
    _: &ModelConfig,
    file: &ConfigFile<'_>,
) -> Result<Vec<TensorSpec>> {
    tensor_specs_of(file, MBART)
}

impl CausalLM for Bart {
    /// The decoder over `input` (decoder token ids), attending to the encoder's output that the
    /// cache carries (see [`super::seq2seq`]).
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        if input.output_attentions {
            return Err(Error::unsupported(
                "`output_attentions` on an encoder-decoder model is not built yet",
            ));
        }
        let (b, _) = input.input_ids.dims2()?;
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        let LayerMask::Dense(causal) = masks.for_layer(LayerType::FullAttention) else {
            return Err(Error::unsupported(
                "an encoder-decoder model's decoder runs a dense batch, not a packed one",
            ));
        };
        let cross_mask = {
            let cross = cross_attention(cache)?;
            cross.fit_rows(b)?; // beams and copies: each encoder row repeated in place
            cross.additive_mask(self.dtype)? // [b, 1, 1, s]
        };
        let masks_in = DecoderMasks {
            causal,
            cross: cross_mask.as_ref(),
        };
        let ids = input.input_ids.to_device(&self.device)?;
        let mut x = self.decoder.embed.forward(&ids, cache.seq_len())?; // [b, t, h]
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let n = layers_to_run(input, self.decoder.layers.len());
        for layer in &self.decoder.layers[..n] {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            x = layer.forward(&x, masks_in, cache)?;
        }
        let x = masks.final_norm(
            x,
            |x| match &self.decoder.layer_norm {
                Some(norm) => norm.forward(x),
                None => Ok(x.clone()),
            },
            &mut hidden,
            input.logits_to_keep,
        )?;
        let mut logits = self.lm_head.forward(&x)?; // [b, t_kept, vocab]
        if let Some(bias) = &self.final_logits_bias {
            logits = logits.broadcast_add(bias)?;
        }
        Ok(ModelOutput {
            logits: logits.to_dtype(DType::F32)?,
            hidden_states: hidden,
            attentions: None,
        })
    }

    /// The LM head without `final_logits_bias` (HF `get_output_embeddings()`).
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

    fn encoder(&self) -> Option<&dyn Encoder> {
        Some(&self.encoder)
    }
}
