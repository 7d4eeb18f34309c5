//! Whisper's audio encoder (HF `WhisperEncoder`, `WhisperEncoderLayer`): a two-convolution stem
//! over the log-mel spectrogram, stored sinusoidal positions, pre-norm transformer layers.

use candle_core::{DType, Tensor};

use super::{WhisperSpec, LAYER_NORM_EPS};
use crate::error::{Error, Result};
use crate::models::config::ModelConfig;
use crate::models::layers::conv::Conv1d;
use crate::models::layers::linear::Linear;
use crate::models::layers::mlp::Mlp;
use crate::models::layers::norm::LayerNorm;
use crate::models::layers::seq2seq_attention::{ProjectionBias, ProjectionNames, Seq2SeqAttention};
use crate::models::layers::LoadContext;
use crate::models::seq2seq::{Encoder, EncoderInput, EncoderOutput};

/// One encoder layer: `x + attn(ln(x))`, then `x + fc2(act(fc1(ln(x))))`.
#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: Seq2SeqAttention,
    self_attn_layer_norm: LayerNorm,
    mlp: Mlp,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    /// `[b, s, d] -> [b, s, d]`; in f16 the output is clamped to the dtype's range minus 1000,
    /// as transformers does.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward_encoder(&self.self_attn_layer_norm.forward(x)?, None)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&self.final_layer_norm.forward(&x)?)?;
        let x = (x + h)?;
        if x.dtype() == DType::F16 {
            let clamp = 65504f64 - 1000.0;
            return Ok(x.clamp(-clamp, clamp)?);
        }
        Ok(x)
    }
}

/// HF `WhisperEncoder`.
#[derive(Debug, Clone)]
pub struct WhisperEncoder {
    conv1: Conv1d,
    conv2: Conv1d,
    /// `[max_source_positions, d]`.
    embed_positions: Tensor,
    layers: Vec<EncoderLayer>,
    layer_norm: LayerNorm,
    num_mel_bins: usize,
    /// Input frames expected: `2 * max_source_positions`.
    frames: usize,
    dtype: DType,
}

/// The encoder's feed-forward width, for errors.
const FFN: &str = "encoder_ffn_dim";

impl WhisperEncoder {
    /// Loads `model.encoder.*`.
    pub fn load(ctx: &LoadContext<'_>, cfg: &ModelConfig, spec: &WhisperSpec) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = "model.encoder";
        let heads = spec.encoder_attention_heads;
        let head_dim = d / heads;
        let layers = (0..spec.encoder_layers)
            .map(|i| {
                let l = format!("{p}.layers.{i}");
                let ffn = spec.encoder_ffn_dim;
                Ok(EncoderLayer {
                    self_attn: Seq2SeqAttention::load(
                        ctx,
                        &format!("{l}.self_attn"),
                        ProjectionNames::BART,
                        ProjectionBias::NO_KEY,
                        d,
                        heads,
                        head_dim,
                        (head_dim as f64).powf(-0.5),
                        i,
                    )?
                    .scaling_queries(),
                    self_attn_layer_norm: LayerNorm::load(
                        ctx,
                        &format!("{l}.self_attn_layer_norm"),
                        d,
                        LAYER_NORM_EPS,
                    )?,
                    mlp: Mlp::new(
                        Linear::load_out_split(ctx, &format!("{l}.fc1"), (d, ffn), true, FFN)?,
                        Linear::load_in_split(ctx, &format!("{l}.fc2"), (ffn, d), true, FFN)?,
                        cfg.hidden_act,
                    ),
                    final_layer_norm: LayerNorm::load(
                        ctx,
                        &format!("{l}.final_layer_norm"),
                        d,
                        LAYER_NORM_EPS,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: Conv1d::load(
                ctx,
                &format!("{p}.conv1"),
                (spec.num_mel_bins, d, 3),
                (1, 1),
            )?,
            conv2: Conv1d::load(ctx, &format!("{p}.conv2"), (d, d, 3), (2, 1))?,
            embed_positions: ctx.tensor(
                &format!("{p}.embed_positions.weight"),
                &[spec.max_source_positions, d],
            )?,
            layers,
            layer_norm: LayerNorm::load(ctx, &format!("{p}.layer_norm"), d, LAYER_NORM_EPS)?,
            num_mel_bins: spec.num_mel_bins,
            frames: spec.input_frames(),
            dtype: ctx.dtype,
        })
    }

    /// `[b, n_mels, 2 * max_source_positions]` features -> `[b, max_source_positions, d]`.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let (_, mels, frames) = features.dims3().map_err(|_| {
            Error::input(format!(
                "`input_features` must be [batch, n_mels, frames], got {:?}",
                features.dims()
            ))
        })?;
        if frames != self.frames {
            // WhisperEncoder.forward's ValueError.
            return Err(Error::input(format!(
                "Whisper expects the mel input features to be of length {e}, but found {frames}. \
                 Make sure to pad the input mel features to {e}.",
                e = self.frames
            )));
        }
        if mels != self.num_mel_bins {
            return Err(Error::input(format!(
                "`input_features` has {mels} mel bins but this model's `num_mel_bins` is {}",
                self.num_mel_bins
            )));
        }
        let x = features.to_dtype(self.dtype)?;
        // The stem's GELU is always exact (`nn.functional.gelu`); the layers' MLPs use
        // `activation_function`.
        let x = self.conv1.forward(&x)?.gelu_erf()?; // [b, d, frames]
        let x = self.conv2.forward(&x)?.gelu_erf()?; // [b, d, frames / 2]
        let x = x.transpose(1, 2)?; // [b, s, d]
        let mut x = x.broadcast_add(&self.embed_positions)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.layer_norm.forward(&x)
    }
}

impl Encoder for WhisperEncoder {
    fn encode(&self, input: &EncoderInput<'_>) -> Result<EncoderOutput> {
        let EncoderInput::Features(features) = input else {
            return Err(Error::input(
                "Whisper's encoder reads `input_features` (a log-mel spectrogram), not token ids",
            ));
        };
        Ok(EncoderOutput {
            last_hidden_state: self.forward(features)?,
            attention_mask: None,
        })
    }

    fn main_input_name(&self) -> &'static str {
        "input_features"
    }

    fn prepends_decoder_start(&self) -> bool {
        false
    }
}
