//! The model: embeddings, the encoder (HF `BartEncoder`), the decoder (`BartDecoder`) and the LM
//! head, with the tensors they load.

use candle_core::{DType, Device, Tensor};

use super::config::{Shape, LEARNED_OFFSET};
use super::Positions;
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::init::{Init, TensorSpec};
use crate::models::config::{ConfigFile, LayerType, ModelConfig};
use crate::models::layers::bart_layer::{BartDecoderLayer, BartEncoderLayer, DecoderMasks};
use crate::models::layers::embedding::Embedding;
use crate::models::layers::linear::Linear;
use crate::models::layers::mask::{ForwardMasks, LayerMask};
use crate::models::layers::norm::LayerNorm;
use crate::models::layers::seq2seq_attention::{cross_attention, padding_mask};
use crate::models::layers::LoadContext;
use crate::models::seq2seq::{Encoder, EncoderInput, EncoderOutput};
use crate::models::{layers_to_run, marian, CausalLM, ForwardInput, ModelOutput};

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
        self.check_position(start + t)?;
        let pos = self.positions.narrow(0, start + self.offset, t)?; // [t, h]
        self.add_positions(ids, &pos)
    }

    /// A packed batch's `ids [1, T]` at their own `positions` (u32 `[1, T]`, each sequence
    /// continuing its cache) -> `[1, T, d_model]`.
    fn forward_packed(&self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let positions: Vec<u32> = positions.flatten_all()?.to_vec1()?;
        let last = positions.iter().max().map_or(0, |&p| p as usize + 1);
        self.check_position(last)?;
        let rows: Vec<u32> = positions.iter().map(|&p| p + self.offset as u32).collect();
        let rows = Tensor::new(rows, self.positions.device())?;
        self.add_positions(ids, &self.positions.index_select(&rows, 0)?) // [T, h]
    }

    /// An error when positions `0..end` do not all have an embedding.
    fn check_position(&self, end: usize) -> Result<()> {
        if end > self.max_positions {
            return Err(Error::input(format!(
                "position {} is past the {} positions this model has (`max_position_embeddings`)",
                end - 1,
                self.max_positions
            )));
        }
        Ok(())
    }

    /// The scaled token embeddings of `ids` `[b, t]` plus `pos` `[t, h]`, then the layer norm.
    fn add_positions(&self, ids: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let mut x = self.tokens.forward(ids)?; // [b, t, h]
        if let Some(scale) = self.scale {
            x = (x * scale)?;
        }
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
    /// Which thread runs [`CausalLM::forward`].
    thread: crate::models::pool::ForwardThread,
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
    /// Loads both stacks and the head for `shape`.
    pub(super) fn load(config: ModelConfig, shape: &Shape, ctx: &LoadContext<'_>) -> Result<Self> {
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
            let dims = (h, shape.decoder_vocab_size);
            Linear::load_lm_head(ctx, "lm_head", dims, "decoder_vocab_size")?
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
            thread: crate::models::pool::ForwardThread::for_model(ctx),
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
pub(crate) fn tensor_specs_of(
    file: &ConfigFile<'_>,
    variant: super::Variant,
) -> Result<Vec<TensorSpec>> {
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

impl Bart {
    /// [`CausalLM::forward`] on the calling thread.
    fn forward_here(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        if input.output_attentions {
            return Err(Error::unsupported(
                "`output_attentions` on an encoder-decoder model is not built yet",
            ));
        }
        let (b, _) = input.input_ids.dims2()?;
        let masks = ForwardMasks::build(input, &self.config, cache, self.dtype, &self.device)?;
        // A dense batch masks with the causal mask and the encoder's padding; a packed one (the
        // continuous batching engine) runs each sequence's attention over its own keys and
        // values and its own encoder output.
        let layer_mask = masks.for_layer(LayerType::FullAttention);
        let ids = input.input_ids.to_device(&self.device)?;
        let (mut x, cross_mask) = match layer_mask {
            LayerMask::Dense(_) | LayerMask::Causal(_) => {
                let cross = cross_attention(cache)?;
                cross.fit_rows(b)?; // beams and copies: each encoder row repeated in place
                let cross_mask = cross.additive_mask(self.dtype)?; // [b, 1, 1, s]
                (
                    self.decoder.embed.forward(&ids, cache.seq_len())?,
                    cross_mask,
                ) // [b, t, h]
            }
            LayerMask::Packed { .. } => {
                let positions = input.position_ids.to_device(&self.device)?;
                (self.decoder.embed.forward_packed(&ids, &positions)?, None) // [1, T, h]
            }
        };
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let n = layers_to_run(input, self.decoder.layers.len());
        for layer in &self.decoder.layers[..n] {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            x = match layer_mask {
                LayerMask::Dense(_) | LayerMask::Causal(_) => {
                    let masks_in = DecoderMasks {
                        causal: layer_mask.dense()?,
                        cross: cross_mask.as_ref(),
                    };
                    layer.forward(&x, masks_in, cache)?
                }
                LayerMask::Packed { sequences, .. } => {
                    layer.forward_packed(&x, sequences, cache)?
                }
            };
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
}

impl CausalLM for Bart {
    /// The decoder over `input` (decoder token ids), attending to the encoder's output that the
    /// cache carries (see [`super::seq2seq`]).
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        self.thread.run(|| self.forward_here(input, cache))
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
