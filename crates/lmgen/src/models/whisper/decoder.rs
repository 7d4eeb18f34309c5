//! Whisper's text decoder (HF `WhisperDecoder`, `WhisperDecoderLayer`) and its LM head
//! (`proj_out`): learned positions, pre-norm layers of causal self-attention, cross-attention to
//! the encoder's output (kept in the cache) and the MLP.

use candle_core::{DType, Device, Module, Tensor};

use super::LAYER_NORM_EPS;
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::models::config::ModelConfig;
use crate::models::layers::embedding::Embedding;
use crate::models::layers::linear::Linear;
use crate::models::layers::mask::{self, ForwardMasks, MaskSpec};
use crate::models::layers::mlp::Mlp;
use crate::models::layers::norm::LayerNorm;
use crate::models::layers::seq2seq_attention::{
    cross_attention, ProjectionBias, ProjectionNames, Seq2SeqAttention,
};
use crate::models::layers::LoadContext;
use crate::models::{layers_to_run, ForwardInput, LogitsToKeep, ModelOutput};

/// One decoder layer: self-attention, cross-attention and the MLP, each `x + f(ln(x))`.
#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Seq2SeqAttention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Seq2SeqAttention,
    encoder_attn_layer_norm: LayerNorm,
    mlp: Mlp,
    final_layer_norm: LayerNorm,
}

/// HF `WhisperDecoder` with `proj_out`.
#[derive(Debug, Clone)]
pub struct WhisperDecoder {
    embed_tokens: Embedding,
    /// `[max_target_positions, d]`.
    embed_positions: candle_nn::Embedding,
    max_target_positions: usize,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    proj_out: Linear,
}

/// The decoder's feed-forward width, for errors.
const FFN: &str = "decoder_ffn_dim";

impl WhisperDecoder {
    /// Loads `model.decoder.*` and `proj_out` (the token embeddings when tied or absent).
    pub fn load(ctx: &LoadContext<'_>, cfg: &ModelConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = "model.decoder";
        let attention = |prefix: String, i| {
            Seq2SeqAttention::load(
                ctx,
                &prefix,
                ProjectionNames::BART,
                ProjectionBias::NO_KEY,
                d,
                cfg.num_attention_heads,
                cfg.head_dim,
                cfg.attention_scaling,
                i,
            )
            .map(Seq2SeqAttention::scaling_queries)
        };
        let norm = |prefix: String| LayerNorm::load(ctx, &prefix, d, LAYER_NORM_EPS);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = format!("{p}.layers.{i}");
                let ffn = cfg.intermediate_size;
                Ok(DecoderLayer {
                    self_attn: attention(format!("{l}.self_attn"), i)?,
                    self_attn_layer_norm: norm(format!("{l}.self_attn_layer_norm"))?,
                    encoder_attn: attention(format!("{l}.encoder_attn"), i)?,
                    encoder_attn_layer_norm: norm(format!("{l}.encoder_attn_layer_norm"))?,
                    mlp: Mlp::new(
                        Linear::load_out_split(ctx, &format!("{l}.fc1"), (d, ffn), true, FFN)?,
                        Linear::load_in_split(ctx, &format!("{l}.fc2"), (ffn, d), true, FFN)?,
                        cfg.hidden_act,
                    ),
                    final_layer_norm: norm(format!("{l}.final_layer_norm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed_tokens =
            Embedding::load(ctx, &format!("{p}.embed_tokens.weight"), cfg.vocab_size, d)?;
        let proj_out = if cfg.tie_word_embeddings || !ctx.contains("proj_out.weight") {
            embed_tokens.tied_head(ctx)?
        } else {
            Linear::load_lm_head(ctx, "proj_out", (d, cfg.vocab_size), "vocab_size")?
        };
        let positions = ctx.tensor(
            &format!("{p}.embed_positions.weight"),
            &[cfg.max_position_embeddings, d],
        )?;
        Ok(Self {
            embed_tokens,
            embed_positions: candle_nn::Embedding::new(positions, d),
            max_target_positions: cfg.max_position_embeddings,
            layers,
            layer_norm: norm(format!("{p}.layer_norm"))?,
            proj_out,
        })
    }

    /// The decoder over `input` (`[b, t]` ids continuing the cache), cross-attending to the
    /// encoder's output that the cache holds -> `[b, t_kept, vocab]` f32 logits.
    pub fn forward(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut dyn KvCache,
        dtype: DType,
        device: &Device,
    ) -> Result<ModelOutput> {
        if input.output_attentions {
            return Err(Error::unsupported(
                "`output_attentions` is not built for Whisper",
            ));
        }
        // A packed batch (the continuous batching engine): each sequence attends to its own
        // keys and values and cross-attends to its own encoder output.
        let packed = match cache.spans() {
            Some(spans) => Some(mask::packed_sequences(input, spans, |span| {
                mask::causal_of(span, dtype, device)
            })?),
            None => None,
        };
        let (b, t) = input.input_ids.dims2()?;
        let positions = input.position_ids.to_device(device)?; // [b, t]
        let last = positions.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if last >= self.max_target_positions {
            return Err(Error::input(format!(
                "Whisper's decoder has {n} positions (`max_target_positions`), but position {last} \
                 was asked for: the decoder prompt and the generated tokens must fit in {n}",
                n = self.max_target_positions
            )));
        }
        let embeds = self.embed_tokens.forward(input.input_ids)?; // [b, t, d]
        let mut x = (embeds + self.embed_positions.forward(&positions)?)?;
        let (causal, cross_mask) = match &packed {
            Some(_) => (None, None),
            None => {
                let spec = MaskSpec {
                    padding: input.attention_mask,
                    batch: b,
                    q_len: t,
                    kv_len: cache.seq_len() + t,
                };
                let causal = mask::build(&spec, None, dtype, device)?; // [b, 1, t, past + t]
                let cross = cross_attention(cache)?;
                cross.fit_rows(b)?;
                (causal, cross.additive_mask(dtype)?) // [b, 1, 1, s] or None
            }
        };
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let n = layers_to_run(input, self.layers.len());
        for layer in &self.layers[..n] {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            let h = layer.self_attn_layer_norm.forward(&x)?;
            let h = match &packed {
                Some(sequences) => layer.self_attn.forward_self_packed(&h, sequences, cache)?,
                None => layer.self_attn.forward_self(&h, causal.as_ref(), cache)?,
            };
            x = (x + h)?;
            let h = layer.encoder_attn_layer_norm.forward(&x)?;
            let h = match &packed {
                Some(sequences) => layer
                    .encoder_attn
                    .forward_cross_packed(&h, sequences, cache)?,
                None => {
                    let cross = cross_attention(cache)?;
                    layer
                        .encoder_attn
                        .forward_cross(&h, cross_mask.as_ref(), cross)?
                }
            };
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.final_layer_norm.forward(&x)?)?;
            x = (x + h)?;
        }
        let kept = |x: Tensor| match &packed {
            // Each sequence's last token (or every token), `[1, kept, d]`.
            Some(sequences) => {
                ForwardMasks::Packed(sequences.clone()).keep(x, input.logits_to_keep)
            }
            None => keep(x, input.logits_to_keep),
        };
        let x = match hidden.as_mut() {
            Some(states) => {
                let normed = self.layer_norm.forward(&x)?;
                states.push(normed.clone());
                kept(normed)?
            }
            None => self.layer_norm.forward(&kept(x)?)?,
        };
        Ok(ModelOutput {
            logits: self.lm_head(&x)?, // [b, t_kept, vocab]
            hidden_states: hidden,
            attentions: None,
        })
    }

    /// `proj_out`: `[.., d] -> [.., vocab]` f32.
    pub fn lm_head(&self, hidden_states: &Tensor) -> Result<Tensor> {
        Ok(self.proj_out.forward(hidden_states)?.to_dtype(DType::F32)?)
    }
}

/// The positions that get logits: `[b, t, d] -> [b, t_kept, d]`.
fn keep(x: Tensor, which: LogitsToKeep) -> Result<Tensor> {
    let t = x.dim(1)?;
    Ok(match which {
        LogitsToKeep::All => x,
        LogitsToKeep::Last => x.narrow(1, t - 1, 1)?,
        LogitsToKeep::LastN(n) => {
            let n = n.clamp(1, t);
            x.narrow(1, t - n, n)?
        }
    })
}
