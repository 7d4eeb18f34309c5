//! Marian (HF `MarianMTModel`, `models/marian/modeling_marian.py`): BART's layers and LM head
//! (`bart.rs`), with
//! - sinusoidal positions (`MarianSinusoidalPositionalEmbedding`): a fixed table that
//!   transformers 5 computes at load ([`sinusoidal_table`]) and does not save; a file that stores
//!   `embed_positions.weight` (as older conversions did) is read as stored, as transformers does;
//! - no `layernorm_embedding`;
//! - `MarianConfig`'s defaults (`vocab_size` 58101, `pad_token_id` 58100, which is also the
//!   decoder's start token, no `bos_token_id`), typically with `scale_embedding` and `swish`;
//! - `share_encoder_decoder_embeddings: false`: the encoder reads
//!   `model.encoder.embed_tokens` (`vocab_size` rows) and the decoder and LM head
//!   `model.decoder.embed_tokens` (`decoder_vocab_size` rows).

use super::bart::{self, Positions, Shape, Variant};
use super::config::{ConfigFile, ModelConfig};
use super::layers::bart_layer::{F16Clamp, NormPosition};
use super::layers::LoadContext;
use super::{Architecture, CausalLM};
use crate::error::Result;
use crate::init::TensorSpec;

/// `MarianConfig`.
const MARIAN: Variant = Variant {
    architecture: Architecture::Marian,
    norm: NormPosition::Post,
    final_layer_norm: false,
    layernorm_embedding: false,
    positions: Positions::Sinusoidal,
    f16_clamp: F16Clamp::IfNotFinite,
    vocab_size: 58101,
    pad_token_id: Some(58100),
    bos_token_id: None,
};

/// `marian`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    Shape::parse(file, MARIAN)?.model_config(file)
}

/// Builds Marian (the registry's loader for `marian`).
pub fn load(
    config: ModelConfig,
    file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
) -> Result<Box<dyn CausalLM>> {
    bart::load_variant(config, file, ctx, MARIAN)
}

/// `marian`'s tensors (for `init_random`; the position tables are computed, not stored).
pub(crate) fn tensor_specs(_: &ModelConfig, file: &ConfigFile<'_>) -> Result<Vec<TensorSpec>> {
    bart::tensor_specs_of(file, MARIAN)
}

/// HF `MarianSinusoidalPositionalEmbedding.create_weight`: `[n_pos, dim]` row-major, row `p`
/// holding `sin(p / 10000^(2k / dim))` in its first `ceil(dim / 2)` columns and
/// `cos(p / 10000^(2k / dim))` in the rest (not interleaved), computed in f64 as numpy does and
/// rounded to f32.
pub(crate) fn sinusoidal_table(n_pos: usize, dim: usize) -> Vec<f32> {
    let sentinel = dim.div_ceil(2);
    let mut out = vec![0f32; n_pos * dim];
    for (pos, row) in out.chunks_exact_mut(dim.max(1)).enumerate() {
        // Column j of `position_enc` is pos / 10000^(2 (j // 2) / dim): the even columns go
        // to the sines, the odd ones to the cosines.
        let angle = |j: usize| pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
        let (sines, cosines) = row.split_at_mut(sentinel);
        for (k, v) in sines.iter_mut().enumerate() {
            *v = angle(2 * k).sin() as f32;
        }
        for (k, v) in cosines.iter_mut().enumerate() {
            *v = angle(2 * k + 1).cos() as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' table for 4 positions of 5 dimensions (an odd width: 3 sine columns, 2
    /// cosine ones), `MarianSinusoidalPositionalEmbedding(4, 5).create_weight()`.
    #[test]
    fn sinusoidal_table_matches_transformers() {
        let t = sinusoidal_table(4, 5);
        assert_eq!(&t[..5], &[0.0, 0.0, 0.0, 1.0, 1.0]);
        let row2 = [
            0.909_297_4,
            0.050_216_6,
            0.001_261_914_4,
            -0.416_146_84,
            0.998_738_35,
        ];
        for (got, want) in t[10..15].iter().zip(&row2) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
