//! T5, Flan-T5 and mT5 (HF `T5ForConditionalGeneration`, `MT5ForConditionalGeneration`,
//! `models/t5/modeling_t5.py`): an encoder-decoder transformer (see [`super::seq2seq`]).
//!
//! What it does differently: no position embeddings but a learned bias on the attention scores
//! per relative-position bucket and head (`relative_attention_bias`, computed by the first layer
//! of each stack and shared by the others; bidirectional buckets in the encoder, causal ones in
//! the decoder; none in cross-attention), unscaled `q k^T` (the scale is folded into the
//! weights), RMS norms without bias before each sub-layer, a ReLU feed-forward (`relu`) or a gated
//! GeLU one (`gated-gelu`, Flan-T5 and mT5), no biases anywhere, and an LM head tied to the
//! shared embedding whose input is scaled by `d_model^-0.5` (`scale_decoder_outputs`, which
//! transformers 5 derives from `tie_word_embeddings`; mT5 never scales).

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::config::{Activation, ConfigFile, ModelConfig, NormKind, SavedDtype, TokenIdField};
use super::layers::embedding::Embedding;
use super::layers::linear::Linear;
use super::layers::mask::{self, ForwardMasks, MaskSpec, PackedSequence};
use super::layers::mlp::activate;
use super::layers::norm::RmsNorm;
use super::layers::seq2seq_attention::{
    cross_attention, dtype_min, padding_mask, ProjectionBias, ProjectionNames, Seq2SeqAttention,
};
use super::layers::LoadContext;
use super::seq2seq::{decoder_config, DecoderShape, Encoder, EncoderInput, EncoderOutput};
use super::{Architecture, CausalLM, ForwardInput, LogitsToKeep, ModelOutput};
use crate::cache::{KvCache, SequenceSpan};
use crate::error::{Error, Result};
use crate::init::{Init, TensorSpec};

/// The `config.json` fields of `T5Config` / `MT5Config` that lmgen reads.
#[derive(Debug, Deserialize)]
struct Config {
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_layers: usize,
    num_decoder_layers: Option<usize>,
    num_heads: usize,
    #[serde(default = "default_buckets")]
    relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    feed_forward_proj: Option<String>,
    tie_word_embeddings: Option<bool>,
    scale_decoder_outputs: Option<bool>,
    pad_token_id: Option<TokenIdField>,
    bos_token_id: Option<TokenIdField>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}

/// What T5 reads beyond the decoder's [`ModelConfig`].
#[derive(Debug, Clone, Copy)]
struct T5Spec {
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_heads: usize,
    encoder_layers: usize,
    decoder_layers: usize,
    buckets: usize,
    max_distance: usize,
    eps: f64,
    /// `gated-*`: `wo(act(wi_0 x) * wi_1 x)`; else `wo(act(wi x))`.
    gated: bool,
    act: Activation,
    /// Multiply the decoder's output by `d_model^-0.5` before the LM head.
    scale_decoder_outputs: bool,
}

impl T5Spec {
    /// Reads and checks `config.json`; `mt5` never scales the decoder's output.
    fn parse(file: &ConfigFile<'_>, architecture: Architecture) -> Result<Self> {
        let c: Config = file.parse()?;
        let proj = c
            .feed_forward_proj
            .as_deref()
            .unwrap_or(match architecture {
                Architecture::Mt5 => "gated-gelu",
                _ => "relu",
            });
        // T5Config: "gated-{act}" or "{act}"; "gated-gelu" means gelu_new.
        let (gated, act_name) = match proj.split_once('-') {
            Some(("gated", act)) if !act.contains('-') => (true, act),
            None => (false, proj),
            _ => {
                return Err(file.err(format!(
                    "`feed_forward_proj`: {proj} is not a valid activation function of the dense layer; \
                     it must be `gated-{{ACT_FN}}` or `{{ACT_FN}}`, e.g. 'gated-gelu' or 'relu'"
                )))
            }
        };
        let act_name = if proj == "gated-gelu" {
            "gelu_new"
        } else {
            act_name
        };
        let act = Activation::from_hf(act_name, "feed_forward_proj", file)?;
        if c.num_heads == 0 || c.d_kv == 0 || c.d_model == 0 {
            return Err(file.err("`num_heads`, `d_kv` and `d_model` must be positive".into()));
        }
        if c.relative_attention_num_buckets < 4 || c.relative_attention_max_distance < 2 {
            return Err(file.err(format!(
                "`relative_attention_num_buckets` ({}) must be at least 4 and \
                 `relative_attention_max_distance` ({}) at least 2",
                c.relative_attention_num_buckets, c.relative_attention_max_distance
            )));
        }
        let scale_decoder_outputs = match architecture {
            Architecture::Mt5 => false,
            _ => c
                .scale_decoder_outputs
                .unwrap_or(c.tie_word_embeddings != Some(false)),
        };
        Ok(Self {
            d_model: c.d_model,
            d_kv: c.d_kv,
            d_ff: c.d_ff,
            num_heads: c.num_heads,
            encoder_layers: c.num_layers,
            decoder_layers: c.num_decoder_layers.unwrap_or(c.num_layers),
            buckets: c.relative_attention_num_buckets,
            max_distance: c.relative_attention_max_distance,
            eps: c.layer_norm_epsilon,
            gated,
            act,
            scale_decoder_outputs,
        })
    }
}

fn parse_as(file: &ConfigFile<'_>, architecture: Architecture) -> Result<ModelConfig> {
    let spec = T5Spec::parse(file, architecture)?;
    let c: Config = file.parse()?;
    Ok(decoder_config(DecoderShape {
        architecture,
        vocab_size: c.vocab_size,
        hidden_size: spec.d_model,
        intermediate_size: spec.d_ff,
        num_layers: spec.decoder_layers,
        num_heads: spec.num_heads,
        head_dim: spec.d_kv,
        max_position_embeddings: usize::MAX, // relative position buckets
        hidden_act: spec.act,
        norm_eps: spec.eps,
        tie_word_embeddings: true,
        bos_token_id: c.bos_token_id.as_ref().and_then(TokenIdField::first),
        pad_token_id: c.pad_token_id.as_ref().and_then(TokenIdField::first),
        torch_dtype: file.parse::<SavedDtype>()?.into_name(),
    }))
}

/// `t5`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    parse_as(file, Architecture::T5)
}

/// `mt5`.
pub fn parse_mt5(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    parse_as(file, Architecture::Mt5)
}

/// HF `T5Attention._relative_position_bucket`: the bucket of `relative_position` (key position
/// minus query position). Bidirectional: half the buckets for keys after the query; causal:
/// keys after the query share bucket 0. Distances below half the (remaining) buckets get their
/// own bucket, longer ones logarithmic bins up to `max_distance`, computed in f32 as torch does.
fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative_position > 0 {
            bucket += buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = buckets / 2;
    bucket += if distance < max_exact {
        distance
    } else {
        // torch: log(rp.float() / max_exact) / math.log(max_distance / max_exact) * (nb - max_exact)
        let ratio = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact
            + ((distance as f32 / max_exact as f32).ln() / ratio * (buckets - max_exact) as f32)
                as i64;
        large.min(buckets - 1)
    };
    bucket as usize
}

/// A stack's relative position bias table (HF `relative_attention_bias`, `[buckets, heads]`).
#[derive(Debug, Clone)]
struct RelativeBias {
    table: Tensor,
    bidirectional: bool,
    buckets: usize,
    max_distance: usize,
}

impl RelativeBias {
    /// HF `compute_bias`: `[1, heads, t, s]` for `t` queries at positions `past..past + t` over `s`
    /// keys at `0..s`.
    fn compute(&self, t: usize, s: usize, past: usize) -> Result<Tensor> {
        let idx: Vec<u32> = (0..t)
            .flat_map(|i| {
                (0..s).map(move |j| {
                    let rel = j as i64 - (past + i) as i64;
                    relative_position_bucket(
                        rel,
                        self.bidirectional,
                        self.buckets,
                        self.max_distance,
                    ) as u32
                })
            })
            .collect();
        let idx = Tensor::from_vec(idx, t * s, self.table.device())?;
        let heads = self.table.dim(1)?;
        Ok(self
            .table
            .index_select(&idx, 0)? // [t * s, heads]
            .reshape((t, s, heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()?) // [1, heads, t, s]
    }
}

/// HF `T5LayerFF`'s `DenseReluDense`.
#[derive(Debug, Clone)]
enum FeedForward {
    /// `wo(act(wi x))`.
    Dense { wi: Linear, wo: Linear },
    /// `wo(act(wi_0 x) * wi_1 x)`.
    Gated {
        wi_0: Linear,
        wi_1: Linear,
        wo: Linear,
    },
}

impl FeedForward {
    fn load(ctx: &LoadContext<'_>, prefix: &str, spec: &T5Spec) -> Result<Self> {
        let (h, f) = (spec.d_model, spec.d_ff);
        // Split across tensor-parallel ranks: `wi` column-parallel, `wo` row-parallel.
        let wi = |name: &str| {
            Linear::load_out_split(ctx, &format!("{prefix}.{name}"), (h, f), false, "d_ff")
        };
        let wo = Linear::load_in_split(ctx, &format!("{prefix}.wo"), (f, h), false, "d_ff")?;
        Ok(if spec.gated {
            Self::Gated {
                wi_0: wi("wi_0")?,
                wi_1: wi("wi_1")?,
                wo,
            }
        } else {
            Self::Dense { wi: wi("wi")?, wo }
        })
    }

    fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match self {
            Self::Dense { wi, wo } => wo.forward(&activate(&wi.forward(x)?, act)?),
            Self::Gated { wi_0, wi_1, wo } => {
                let gate = activate(&wi_0.forward(x)?, act)?;
                wo.forward(&(gate * wi_1.forward(x)?)?)
            }
        }
    }
}

/// One block of either stack: self-attention, cross-attention (decoder only), feed-forward, each
/// after its RMS norm and added to the residual.
#[derive(Debug, Clone)]
struct Block {
    self_norm: RmsNorm,
    self_attn: Seq2SeqAttention,
    cross: Option<(RmsNorm, Seq2SeqAttention)>,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

impl Block {
    fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        spec: &T5Spec,
        i: usize,
        decoder: bool,
    ) -> Result<Self> {
        let norm = |name: String| RmsNorm::load(ctx, &name, spec.d_model, spec.eps, NormKind::Rms);
        let attn = |name: String| {
            Seq2SeqAttention::load(
                ctx,
                &name,
                ProjectionNames::T5,
                ProjectionBias::NONE,
                spec.d_model,
                spec.num_heads,
                spec.d_kv,
                1.0, // T5 does not scale q k^T
                i,
            )
        };
        let p = format!("{prefix}.block.{i}.layer");
        let ff_layer = if decoder { 2 } else { 1 };
        Ok(Self {
            self_norm: norm(format!("{p}.0.layer_norm"))?,
            self_attn: attn(format!("{p}.0.SelfAttention"))?,
            cross: decoder
                .then(|| -> Result<_> {
                    Ok((
                        norm(format!("{p}.1.layer_norm"))?,
                        attn(format!("{p}.1.EncDecAttention"))?,
                    ))
                })
                .transpose()?,
            ff_norm: norm(format!("{p}.{ff_layer}.layer_norm"))?,
            ff: FeedForward::load(ctx, &format!("{p}.{ff_layer}.DenseReluDense"), spec)?,
        })
    }
}

/// HF's fp16 guard in `T5Block`: hidden states that overflowed to infinity are clamped to the
/// largest f16 minus 1000. Other dtypes pass through.
fn clamp_f16(x: Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F16 {
        return Ok(x);
    }
    let max: f32 = x
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F32)?
        .to_scalar()?;
    if max.is_finite() {
        return Ok(x);
    }
    let limit = 65504.0 - 1000.0;
    Ok(x.clamp(-limit, limit)?)
}

/// T5 with its LM head.
#[derive(Debug, Clone)]
pub struct T5 {
    shared: Embedding,
    encoder: Vec<Block>,
    encoder_bias: RelativeBias,
    encoder_norm: RmsNorm,
    decoder: Vec<Block>,
    decoder_bias: RelativeBias,
    decoder_norm: RmsNorm,
    lm_head: Linear,
    spec: T5Spec,
    config: ModelConfig,
    device: Device,
    /// Which thread runs [`CausalLM::forward`].
    thread: crate::models::pool::ForwardThread,
    dtype: DType,
}

/// Builds T5 or mT5 (the registry's loader for `t5` and `mt5`).
pub fn load(
    config: ModelConfig,
    file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
) -> Result<Box<dyn CausalLM>> {
    let spec = T5Spec::parse(file, config.architecture)?;
    Ok(Box::new(T5::load(config, spec, ctx)?))
}

impl T5 {
    fn load(config: ModelConfig, spec: T5Spec, ctx: &LoadContext<'_>) -> Result<Self> {
        let shared = Embedding::load(ctx, "shared.weight", config.vocab_size, spec.d_model)?;
        let stack = |prefix: &str, layers: usize, decoder: bool| -> Result<_> {
            let blocks = (0..layers)
                .map(|i| Block::load(ctx, prefix, &spec, i, decoder))
                .collect::<Result<Vec<_>>>()?;
            let table = ctx.tensor(
                &format!("{prefix}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                &[spec.buckets, spec.num_heads],
            )?;
            // Split across tensor-parallel ranks, the bias of this rank's heads.
            let table = match ctx.shard {
                Some(shard) => {
                    let heads = shard.split(spec.num_heads, "num_heads")?;
                    table.narrow(1, heads.start, heads.len())?.contiguous()?
                }
                None => table,
            };
            let bias = RelativeBias {
                table,
                bidirectional: !decoder,
                buckets: spec.buckets,
                max_distance: spec.max_distance,
            };
            let norm = RmsNorm::load(
                ctx,
                &format!("{prefix}.final_layer_norm"),
                spec.d_model,
                spec.eps,
                NormKind::Rms,
            )?;
            Ok((blocks, bias, norm))
        };
        if spec.encoder_layers == 0 || spec.decoder_layers == 0 {
            return Err(Error::input(
                "T5 needs at least one encoder and one decoder layer (`num_layers`, `num_decoder_layers`)",
            ));
        }
        let (encoder, encoder_bias, encoder_norm) = stack("encoder", spec.encoder_layers, false)?;
        let (decoder, decoder_bias, decoder_norm) = stack("decoder", spec.decoder_layers, true)?;
        // transformers 5 ties `lm_head` to `shared` unless the checkpoint holds its own.
        let lm_head = if ctx.contains("lm_head.weight") {
            let dims = (spec.d_model, config.vocab_size);
            Linear::load_lm_head(ctx, "lm_head", dims, "vocab_size")?
        } else {
            shared.tied_head(ctx)?
        };
        Ok(Self {
            shared,
            encoder,
            encoder_bias,
            encoder_norm,
            decoder,
            decoder_bias,
            decoder_norm,
            lm_head,
            spec,
            device: ctx.device.clone(),
            thread: crate::models::pool::ForwardThread::for_model(ctx),
            dtype: ctx.dtype,
            config,
        })
    }
}

impl Encoder for T5 {
    fn encode(&self, input: &EncoderInput<'_>) -> Result<EncoderOutput> {
        let EncoderInput::Ids {
            input_ids,
            attention_mask,
        } = *input
        else {
            return Err(Error::input(
                "T5's encoder reads `input_ids`, not audio features",
            ));
        };
        let s = input_ids.dim(1)?;
        let mut x = self.shared.forward(input_ids)?; // [b, s, h]
        let bias = self.encoder_bias.compute(s, s, 0)?.to_dtype(self.dtype)?; // [1, nh, s, s]
        let mask = match padding_mask(attention_mask, self.dtype, &self.device)? {
            Some(pad) => bias.broadcast_add(&pad)?, // [b, nh, s, s]
            None => bias,
        };
        for block in &self.encoder {
            let a = block
                .self_attn
                .forward_encoder(&block.self_norm.forward(&x)?, Some(&mask))?;
            x = clamp_f16((x + a)?)?;
            let f = block
                .ff
                .forward(&block.ff_norm.forward(&x)?, self.spec.act)?;
            x = clamp_f16((x + f)?)?;
        }
        Ok(EncoderOutput {
            last_hidden_state: self.encoder_norm.forward(&x)?,
            attention_mask: attention_mask.map(<[Vec<u8>]>::to_vec),
        })
    }
}

/// How the decoder's attention is masked in one forward.
enum DecoderMasks {
    /// A dense `[b, t]` batch: the self-attention mask (relative position bias and causal
    /// mask) `[b or 1, heads, t, past + t]` and the encoder's padding mask `[b, 1, 1, s]`.
    Dense {
        self_mask: Tensor,
        cross_mask: Option<Tensor>,
    },
    /// A packed batch (the continuous batching engine): each sequence's own self-attention
    /// mask, `[1, heads, new, past + new]` (see [`T5::packed_masks`]).
    Packed(Vec<PackedSequence>),
}

impl T5 {
    /// The self-attention mask of `t` queries after `past` cached tokens: the decoder's relative
    /// position bias, plus the causal (and padding) mask of `padding`'s rows when anything is
    /// masked; `[1 or b, heads, t, past + t]`.
    fn self_mask(
        &self,
        padding: Option<&[Vec<u8>]>,
        batch: usize,
        t: usize,
        past: usize,
    ) -> Result<Tensor> {
        let bias = self
            .decoder_bias
            .compute(t, past + t, past)?
            .to_dtype(self.dtype)?; // [1, nh, t, past + t]
        let causal = mask::build(
            &MaskSpec {
                padding,
                batch,
                q_len: t,
                kv_len: past + t,
            },
            None,
            self.dtype,
            &self.device,
        )?;
        Ok(match causal {
            // [1, nh, t, s] + [b, 1, t, s]; masked scores stay at the dtype's minimum.
            Some(causal) => bias
                .broadcast_add(&causal)?
                .maximum(dtype_min(self.dtype) as f64)?,
            None => bias,
        })
    }

    /// A packed batch's masks: each sequence's bias and causal mask over its own `past + new`
    /// positions, as a dense batch of that one sequence gets them.
    fn packed_masks(
        &self,
        input: &ForwardInput<'_>,
        spans: &[SequenceSpan],
    ) -> Result<Vec<PackedSequence>> {
        mask::packed_sequences(input, spans, |span| {
            Ok(Some(self.self_mask(None, 1, span.new, span.past)?))
        })
    }
}

impl T5 {
    /// [`CausalLM::forward`] on the calling thread.
    fn forward_here(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        let (b, t) = input.input_ids.dims2()?;
        let mut x = self.shared.forward(input.input_ids)?; // [b, t, h]
        let masks = match cache.spans() {
            Some(spans) => DecoderMasks::Packed(self.packed_masks(input, spans)?),
            None => {
                let self_mask = self.self_mask(input.attention_mask, b, t, cache.seq_len())?;
                let cross = cross_attention(cache)?;
                cross.fit_rows(b)?;
                let cross_mask = cross.additive_mask(self.dtype)?; // [b, 1, 1, s]
                DecoderMasks::Dense {
                    self_mask,
                    cross_mask,
                }
            }
        };
        let mut hidden = input.output_hidden_states.then(Vec::new);
        let n = super::layers_to_run(input, self.decoder.len());
        for block in &self.decoder[..n] {
            if let Some(states) = hidden.as_mut() {
                states.push(x.clone());
            }
            let h = block.self_norm.forward(&x)?;
            let a = match &masks {
                DecoderMasks::Dense { self_mask, .. } => {
                    block.self_attn.forward_self(&h, Some(self_mask), cache)?
                }
                DecoderMasks::Packed(sequences) => {
                    block.self_attn.forward_self_packed(&h, sequences, cache)?
                }
            };
            x = clamp_f16((x + a)?)?;
            if let Some((norm, attn)) = &block.cross {
                let h = norm.forward(&x)?;
                let c = match &masks {
                    DecoderMasks::Dense { cross_mask, .. } => {
                        attn.forward_cross(&h, cross_mask.as_ref(), cross_attention(cache)?)?
                    }
                    DecoderMasks::Packed(sequences) => {
                        attn.forward_cross_packed(&h, sequences, cache)?
                    }
                };
                x = clamp_f16((x + c)?)?;
            }
            let f = block
                .ff
                .forward(&block.ff_norm.forward(&x)?, self.spec.act)?;
            x = clamp_f16((x + f)?)?;
        }
        let x = self.decoder_norm.forward(&x)?;
        if let Some(states) = hidden.as_mut() {
            states.push(x.clone());
        }
        let x = match (masks, input.logits_to_keep) {
            // Each sequence's last token, `[1, sequences, h]`.
            (DecoderMasks::Packed(sequences), which) => {
                ForwardMasks::Packed(sequences).keep(x, which)?
            }
            (DecoderMasks::Dense { .. }, LogitsToKeep::All) => x,
            (DecoderMasks::Dense { .. }, LogitsToKeep::Last) => x.narrow(1, t - 1, 1)?,
            (DecoderMasks::Dense { .. }, LogitsToKeep::LastN(k)) => {
                x.narrow(1, t - k.min(t), k.min(t))?
            }
        };
        Ok(ModelOutput {
            logits: self.lm_head(&x)?,
            hidden_states: hidden,
            attentions: input.output_attentions.then(Vec::new),
        })
    }
}

impl CausalLM for T5 {
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        self.thread.run(|| self.forward_here(input, cache))
    }

    fn lm_head(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let x = if self.spec.scale_decoder_outputs {
            (hidden_states * (self.spec.d_model as f64).powf(-0.5))?
        } else {
            hidden_states.clone()
        };
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
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
        Some(self)
    }
}

/// Every tensor T5 loads (for `init_random`): the shared embedding, both stacks with their
/// relative position bias tables; the LM head is tied.
pub(crate) fn tensor_specs(cfg: &ModelConfig, file: &ConfigFile<'_>) -> Result<Vec<TensorSpec>> {
    let spec = T5Spec::parse(file, cfg.architecture)?;
    let (h, f, v, nh, d) = (
        spec.d_model,
        spec.d_ff,
        cfg.vocab_size,
        spec.num_heads,
        spec.d_kv,
    );
    let random = |name: String, shape: Vec<usize>| TensorSpec::new(&name, shape, Init::Random);
    let ones = |name: String| TensorSpec::new(&name, vec![h], Init::Ones);
    let mut t = vec![random("shared.weight".into(), vec![v, h])];
    for (stack, layers, decoder) in [
        ("encoder", spec.encoder_layers, false),
        ("decoder", spec.decoder_layers, true),
    ] {
        for i in 0..layers {
            let p = format!("{stack}.block.{i}.layer");
            let attentions: &[&str] = if decoder {
                &["0.SelfAttention", "1.EncDecAttention"]
            } else {
                &["0.SelfAttention"]
            };
            for name in attentions {
                for proj in ["q", "k", "v"] {
                    t.push(random(format!("{p}.{name}.{proj}.weight"), vec![nh * d, h]));
                }
                t.push(random(format!("{p}.{name}.o.weight"), vec![h, nh * d]));
            }
            let ff = if decoder { 2 } else { 1 };
            t.extend((0..=ff).map(|l| ones(format!("{p}.{l}.layer_norm.weight"))));
            let dense = format!("{p}.{ff}.DenseReluDense");
            let wi: &[&str] = if spec.gated {
                &["wi_0", "wi_1"]
            } else {
                &["wi"]
            };
            for name in wi {
                t.push(random(format!("{dense}.{name}.weight"), vec![f, h]));
            }
            t.push(random(format!("{dense}.wo.weight"), vec![h, f]));
        }
        t.push(random(
            format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            vec![spec.buckets, nh],
        ));
        t.push(ones(format!("{stack}.final_layer_norm.weight")));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets as transformers computes them for the default 32 buckets / 128 distance.
    #[test]
    fn relative_buckets_match_transformers() {
        // From transformers 5.17: T5Attention._relative_position_bucket(torch.tensor([...]), True/False, 32, 128).
        let bi: Vec<usize> = [-140i64, -100, -20, -8, -7, -1, 0, 1, 7, 8, 20, 100, 140]
            .iter()
            .map(|&r| relative_position_bucket(r, true, 32, 128))
            .collect();
        assert_eq!(bi, [15, 15, 10, 8, 7, 1, 0, 17, 23, 24, 26, 31, 31]);
        let causal: Vec<usize> = [-140i64, -100, -20, -16, -15, -1, 0, 5]
            .iter()
            .map(|&r| relative_position_bucket(r, false, 32, 128))
            .collect();
        assert_eq!(causal, [31, 30, 17, 16, 15, 1, 0, 0]);
    }
}
