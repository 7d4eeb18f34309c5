//! The `config.json` fields of BART, mBART and Marian, resolved into both stacks' [`Shape`] and
//! the decoder's [`ModelConfig`].

use serde::Deserialize;

use super::{Positions, Variant};
use crate::error::Result;
use crate::models::config::{
    Activation, ConfigFile, ModelConfig, NormPlacement, SavedDtype, TokenIdField,
};
use crate::models::layers::bart_layer::{LayerShape, NormPosition};
use crate::models::llama::nullable;
use crate::models::seq2seq::{decoder_config, DecoderShape};

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
    pub(crate) variant: Variant,
    /// The encoder's vocabulary (`vocab_size`).
    pub(crate) vocab_size: usize,
    /// The decoder's and the LM head's (`decoder_vocab_size`, Marian; else `vocab_size`).
    pub(crate) decoder_vocab_size: usize,
    pub(crate) d_model: usize,
    pub(crate) encoder: LayerShape,
    pub(crate) decoder: LayerShape,
    pub(crate) encoder_layers: usize,
    pub(crate) decoder_layers: usize,
    pub(crate) max_position_embeddings: usize,
    /// `sqrt(d_model)` with `scale_embedding`.
    pub(crate) embed_scale: Option<f64>,
    pub(crate) tie_word_embeddings: bool,
    /// Encoder and decoder read one table (`model.shared`); Marian may keep two.
    pub(crate) share_embeddings: bool,
    pub(crate) bos_token_id: Option<u32>,
    pub(crate) pad_token_id: Option<u32>,
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
            if num_heads == 0 || !d_model.is_multiple_of(num_heads) {
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
        let mut cfg = decoder_config(DecoderShape {
            architecture: self.variant.architecture,
            vocab_size: self.decoder_vocab_size,
            hidden_size: self.d_model,
            intermediate_size: d.ffn_dim,
            num_layers: layers,
            num_heads: d.num_heads,
            head_dim,
            max_position_embeddings: self.max_position_embeddings,
            hidden_act: d.activation,
            norm_eps: 1e-5,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: self.bos_token_id,
            pad_token_id: self.pad_token_id,
            torch_dtype: file.parse::<SavedDtype>()?.into_name(),
        });
        cfg.norm_placement = match self.variant.norm {
            NormPosition::Pre => NormPlacement::Pre,
            NormPosition::Post => NormPlacement::Post,
        };
        (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias) = (true, true, true);
        Ok(cfg)
    }

    /// Rows of a stack's position table.
    pub(crate) fn position_rows(&self) -> usize {
        match self.variant.positions {
            Positions::Learned => self.max_position_embeddings + LEARNED_OFFSET,
            Positions::Sinusoidal => self.max_position_embeddings,
        }
    }
}

/// `BartLearnedPositionalEmbedding.offset`.
pub(super) const LEARNED_OFFSET: usize = 2;
