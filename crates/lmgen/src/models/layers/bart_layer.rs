//! The encoder and decoder layers of BART-style encoder-decoder models (HF `BartEncoderLayer`,
//! `BartDecoderLayer`; `MarianEncoderLayer` and `MarianDecoderLayer` are copies of them, and
//! `MBartEncoderLayer`, `MBartDecoderLayer` the pre-norm variant).
//!
//! Each block is attention or the feed-forward network (`fc2(act(fc1(x)))`) with a residual and
//! a LayerNorm: after the residual sum for BART and Marian (post-norm,
//! `norm(x + block(x))`), on the block's input for mBART (pre-norm, `x + block(norm(x))`). The
//! encoder layer is self-attention then the feed-forward network; the decoder layer is causal
//! self-attention over the KV cache, cross-attention to the encoder's output, then the
//! feed-forward network.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::mask::PackedSequence;
use super::mlp::Mlp;
use super::norm::LayerNorm;
use super::seq2seq_attention::{
    cross_attention, ProjectionBias, ProjectionNames, Seq2SeqAttention,
};
use super::LoadContext;
use crate::cache::KvCache;
use crate::error::Result;
use crate::models::config::Activation;

/// Where each block's LayerNorm sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPosition {
    /// `norm(x + block(x))`: BART, Marian.
    Post,
    /// `x + block(norm(x))`: mBART (whose stacks end in a final `layer_norm`).
    Pre,
}

/// The shape of one stack's layers (the encoder's or the decoder's `*_attention_heads`,
/// `*_ffn_dim`).
#[derive(Debug, Clone, Copy)]
pub struct LayerShape {
    /// `d_model`.
    pub hidden: usize,
    pub num_heads: usize,
    pub ffn_dim: usize,
    pub activation: Activation,
    pub norm: NormPosition,
}

impl LayerShape {
    fn head_dim(&self) -> usize {
        self.hidden / self.num_heads
    }

    /// `{prefix}.{name}`: `hidden -> num_heads * head_dim -> hidden` with biases, scores scaled
    /// by `head_dim^-0.5`.
    fn attention(
        &self,
        ctx: &LoadContext<'_>,
        prefix: &str,
        name: &str,
        layer_idx: usize,
    ) -> Result<Seq2SeqAttention> {
        let head_dim = self.head_dim();
        Seq2SeqAttention::load(
            ctx,
            &format!("{prefix}.{name}"),
            ProjectionNames::BART,
            ProjectionBias::ALL,
            self.hidden,
            self.num_heads,
            head_dim,
            (head_dim as f64).powf(-0.5),
            layer_idx,
        )
    }

    fn ffn(&self, ctx: &LoadContext<'_>, prefix: &str) -> Result<Mlp> {
        let (h, f) = (self.hidden, self.ffn_dim);
        Ok(Mlp::new(
            Linear::load_out_split(ctx, &format!("{prefix}.fc1"), (h, f), true, "ffn_dim")?,
            Linear::load_in_split(ctx, &format!("{prefix}.fc2"), (f, h), true, "ffn_dim")?,
            self.activation,
        ))
    }

    fn norm(&self, ctx: &LoadContext<'_>, prefix: &str, name: &str) -> Result<LayerNorm> {
        // nn.LayerNorm's default eps.
        LayerNorm::load(ctx, &format!("{prefix}.{name}"), self.hidden, 1e-5)
    }
}

/// A residual block with its LayerNorm placed per `position`.
fn residual(
    x: &Tensor,
    norm: &LayerNorm,
    position: NormPosition,
    block: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    match position {
        NormPosition::Post => norm.forward(&(x + block(x)?)?),
        NormPosition::Pre => Ok((x + block(&norm.forward(x)?)?)?),
    }
}

/// When a half-precision encoder layer's output is clamped to the finite range (transformers
/// clamps float16 activations to `finfo.max - 1000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F16Clamp {
    /// Only when the output has an infinity or NaN (BART, Marian).
    IfNotFinite,
    /// Always (mBART).
    Always,
}

/// HF `BartEncoderLayer`: self-attention over the whole input, then the feed-forward network.
#[derive(Debug, Clone)]
pub struct BartEncoderLayer {
    self_attn: Seq2SeqAttention,
    self_attn_layer_norm: LayerNorm,
    ffn: Mlp,
    final_layer_norm: LayerNorm,
    norm: NormPosition,
    clamp: F16Clamp,
}

impl BartEncoderLayer {
    /// Loads `{prefix}.{self_attn, self_attn_layer_norm, fc1, fc2, final_layer_norm}`.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        shape: &LayerShape,
        clamp: F16Clamp,
    ) -> Result<Self> {
        Ok(Self {
            self_attn: shape.attention(ctx, prefix, "self_attn", 0)?,
            self_attn_layer_norm: shape.norm(ctx, prefix, "self_attn_layer_norm")?,
            ffn: shape.ffn(ctx, prefix)?,
            final_layer_norm: shape.norm(ctx, prefix, "final_layer_norm")?,
            norm: shape.norm,
            clamp,
        })
    }

    /// `[b, s, hidden] -> [b, s, hidden]`; `mask` is the additive padding mask `[b, 1, 1, s]`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = residual(x, &self.self_attn_layer_norm, self.norm, |h| {
            self.self_attn.forward_encoder(h, mask)
        })?;
        let x = residual(&x, &self.final_layer_norm, self.norm, |h| {
            self.ffn.forward(h)
        })?;
        clamp_f16(x, self.clamp)
    }
}

/// transformers' float16 clamp of an encoder layer's output to `±(65504 - 1000)`.
fn clamp_f16(x: Tensor, when: F16Clamp) -> Result<Tensor> {
    if x.dtype() != DType::F16 {
        return Ok(x);
    }
    if when == F16Clamp::IfNotFinite {
        // Summed in f32 (which cannot overflow on f16 values), the total is finite exactly when
        // every value is (HF `torch.isfinite(hidden_states).all()`).
        let total = x.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        if total.is_finite() {
            return Ok(x);
        }
    }
    let limit = 65504.0 - 1000.0;
    Ok(x.clamp(-limit, limit)?)
}

/// HF `BartDecoderLayer`: causal self-attention, cross-attention to the encoder's output, then
/// the feed-forward network.
#[derive(Debug, Clone)]
pub struct BartDecoderLayer {
    self_attn: Seq2SeqAttention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Seq2SeqAttention,
    encoder_attn_layer_norm: LayerNorm,
    ffn: Mlp,
    final_layer_norm: LayerNorm,
    norm: NormPosition,
}

/// What a decoder layer attends with, built once per forward.
#[derive(Debug, Clone, Copy)]
pub struct DecoderMasks<'a> {
    /// The causal self-attention mask `[b, 1, t, past + t]`, or `None`.
    pub causal: Option<&'a Tensor>,
    /// The encoder's padding mask `[b, 1, 1, s]`, or `None`.
    pub cross: Option<&'a Tensor>,
}

impl BartDecoderLayer {
    /// Loads `{prefix}.{self_attn, self_attn_layer_norm, encoder_attn, encoder_attn_layer_norm,
    /// fc1, fc2, final_layer_norm}` of decoder layer `layer_idx`.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        shape: &LayerShape,
        layer_idx: usize,
    ) -> Result<Self> {
        Ok(Self {
            self_attn: shape.attention(ctx, prefix, "self_attn", layer_idx)?,
            self_attn_layer_norm: shape.norm(ctx, prefix, "self_attn_layer_norm")?,
            encoder_attn: shape.attention(ctx, prefix, "encoder_attn", layer_idx)?,
            encoder_attn_layer_norm: shape.norm(ctx, prefix, "encoder_attn_layer_norm")?,
            ffn: shape.ffn(ctx, prefix)?,
            final_layer_norm: shape.norm(ctx, prefix, "final_layer_norm")?,
            norm: shape.norm,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`: appends this step's keys and values to `cache` and
    /// reads (or first computes) this layer's cross-attention keys and values from the cache's
    /// [`CrossAttention`](crate::cache::CrossAttention).
    pub fn forward(
        &self,
        x: &Tensor,
        masks: DecoderMasks<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let x = residual(x, &self.self_attn_layer_norm, self.norm, |h| {
            self.self_attn.forward_self(h, masks.causal, cache)
        })?;
        let x = residual(&x, &self.encoder_attn_layer_norm, self.norm, |h| {
            self.encoder_attn
                .forward_cross(h, masks.cross, cross_attention(cache)?)
        })?;
        residual(&x, &self.final_layer_norm, self.norm, |h| {
            self.ffn.forward(h)
        })
    }
    /// A packed batch (the continuous batching engine), `[1, T, hidden] -> [1, T, hidden]`: each
    /// sequence's self-attention over its own paged keys and values (`sequences[i].full` its
    /// causal mask) and cross-attention to its own encoder output.
    pub fn forward_packed(
        &self,
        x: &Tensor,
        sequences: &[PackedSequence],
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let x = residual(x, &self.self_attn_layer_norm, self.norm, |h| {
            self.self_attn.forward_self_packed(h, sequences, cache)
        })?;
        let x = residual(&x, &self.encoder_attn_layer_norm, self.norm, |h| {
            self.encoder_attn.forward_cross_packed(h, sequences, cache)
        })?;
        residual(&x, &self.final_layer_norm, self.norm, |h| {
            self.ffn.forward(h)
        })
    }
}
