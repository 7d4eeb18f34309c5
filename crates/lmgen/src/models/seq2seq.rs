//! Encoder-decoder models (HF `*ForConditionalGeneration`: T5, BART, Marian, Whisper).
//!
//! Such a model is a [`CausalLM`](super::CausalLM) for its decoder, plus an [`Encoder`] that it
//! returns from [`CausalLM::encoder`](super::CausalLM::encoder). `generate()` runs the encoder
//! once per call (HF `_prepare_encoder_decoder_kwargs_for_generation`), keeps its output in an
//! [`EncoderDecoderCache`](crate::cache::EncoderDecoderCache) beside the decoder's self-attention
//! keys and values, and then decodes exactly as for a decoder-only model: the decoder's forward
//! reads the encoder's output (and its cross-attention keys and values, computed on the first
//! step and kept) from the cache it is given. Every decoding loop, beam search included, works
//! unchanged: reordering, selecting and repeating the cache's rows moves the encoder's rows too.

use candle_core::Tensor;

use super::config::{
    Activation, LayerType, ModelConfig, NormKind, NormPlacement, ProjectionLayout,
};
use super::Architecture;
use crate::error::Result;

/// What the encoder reads: token ids with their padding mask (T5, BART, Marian), or audio
/// features (Whisper's log-mel spectrogram).
#[derive(Debug, Clone, Copy)]
pub enum EncoderInput<'a> {
    /// Token ids (HF `input_ids`, `attention_mask`).
    Ids {
        /// `[b, s]` u32 token ids.
        input_ids: &'a Tensor,
        /// `[b][s]`: 1 = real token, 0 = padding; `None` when nothing is padded.
        attention_mask: Option<&'a [Vec<u8>]>,
    },
    /// `[b, n_mels, frames]` f32 features (HF `input_features`).
    Features(&'a Tensor),
}

impl EncoderInput<'_> {
    /// Rows in the batch.
    pub fn batch(&self) -> Result<usize> {
        Ok(match self {
            Self::Ids { input_ids, .. } => input_ids.dim(0)?,
            Self::Features(features) => features.dim(0)?,
        })
    }
}

/// What the encoder returns (HF `BaseModelOutput`), kept for the whole generation.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `[b, s, hidden]` in the compute dtype, on the model's device.
    pub last_hidden_state: Tensor,
    /// `[b][s]` padding of the encoder's positions (1 = attend), which cross-attention masks;
    /// `None` when nothing is padded (always for audio features).
    pub attention_mask: Option<Vec<Vec<u8>>>,
}

/// The encoder half of an encoder-decoder model (HF `get_encoder()`).
pub trait Encoder: Send + Sync {
    /// Runs the encoder over a batch.
    fn encode(&self, input: &EncoderInput<'_>) -> Result<EncoderOutput>;

    /// HF `main_input_name`: `"input_ids"` for text encoders, `"input_features"` for audio.
    fn main_input_name(&self) -> &'static str {
        "input_ids"
    }

    /// Whether a caller's `decoder_input_ids` that do not start with `decoder_start_token_id`
    /// get it prepended (HF `_prepare_decoder_input_ids_for_generation`); Whisper's decoder
    /// prompt is taken as given.
    fn prepends_decoder_start(&self) -> bool {
        true
    }
}

/// The decoder's shape, from which [`decoder_config`] builds the [`ModelConfig`] that
/// `generate()`, the memory checks and the KV cache read (the encoder's shape stays in the
/// architecture's own config).
#[derive(Debug, Clone)]
pub(crate) struct DecoderShape {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    /// Positions the decoder can take (learned or sinusoidal tables); relative position buckets
    /// have no limit (`usize::MAX`).
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub torch_dtype: Option<String>,
}

/// The [`ModelConfig`] of an encoder-decoder model's decoder: full attention over learned or
/// relative positions (no RoPE), one KV head per head.
pub(crate) fn decoder_config(shape: DecoderShape) -> ModelConfig {
    let layers = shape.num_layers;
    ModelConfig {
        architecture: shape.architecture,
        vocab_size: shape.vocab_size,
        hidden_size: shape.hidden_size,
        intermediate_size: shape.intermediate_size,
        num_hidden_layers: layers,
        num_attention_heads: shape.num_heads,
        num_key_value_heads: shape.num_heads,
        head_dim: shape.head_dim,
        max_position_embeddings: shape.max_position_embeddings,
        norm_eps: shape.norm_eps,
        norm: NormKind::Rms, // unused: the architecture's code picks its norms
        norm_placement: NormPlacement::Pre,
        qk_norm: None,
        rope: None,
        rope_local: None,
        tie_word_embeddings: shape.tie_word_embeddings,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        projections: ProjectionLayout::Separate,
        hidden_act: shape.hidden_act,
        sliding_window: None,
        layer_types: vec![LayerType::FullAttention; layers],
        rope_layers: vec![false; layers],
        embedding_scale: None,
        residual_multiplier: None,
        attention_scaling: (shape.head_dim as f64).powf(-0.5),
        query_scaling: None,
        logits_scaling: None,
        recompute_cache_at: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        bos_token_id: shape.bos_token_id,
        pad_token_id: shape.pad_token_id,
        torch_dtype: shape.torch_dtype,
        moe: None,
        attention_sinks: false,
        attn_output_gate: false,
        linear_attention: None,
        short_conv: None,
        weight_renames: &[],
        gemma4: None,
        whisper: None,
    }
}
