//! BART and mBART (HF `BartForConditionalGeneration`, `models/bart/modeling_bart.py`;
//! `MBartForConditionalGeneration`, `models/mbart/modeling_mbart.py`), and the model that
//! Marian's row runs (`marian.rs`: `MarianMTModel` is BART's code with other embeddings).
//!
//! An encoder and a decoder of `BartEncoderLayer`s and `BartDecoderLayer`s
//! (`layers/bart_layer.rs`) over token embeddings scaled by `sqrt(d_model)` when
//! `scale_embedding`, plus absolute positions: a learned table read at `position + 2`
//! (`BartLearnedPositionalEmbedding`'s offset), or Marian's sinusoidal table. What the three differ in is a [`Variant`]:
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
//!
//! `config.rs` reads `config.json` into both stacks' [`Shape`]; `model.rs` is the model.

mod config;
mod model;

use super::config::{ConfigFile, ModelConfig};
use super::layers::bart_layer::{F16Clamp, NormPosition};
use super::layers::LoadContext;
use super::{Architecture, CausalLM};
use crate::error::Result;
use crate::init::TensorSpec;

pub(crate) use config::Shape;
pub(crate) use model::tensor_specs_of;

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
    Ok(Box::new(model::Bart::load(config, &shape, ctx)?))
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
