//! Whisper (HF `WhisperForConditionalGeneration`, `models/whisper/modeling_whisper.py`): a speech
//! encoder over a log-mel spectrogram and a text decoder that cross-attends to it.
//!
//! - Encoder ([`encoder`]): `conv1` (kernel 3, stride 1) and `conv2` (kernel 3, stride 2), each
//!   followed by exact GELU, so `2 * max_source_positions` frames become `max_source_positions`
//!   positions; the sinusoidal `embed_positions` stored in the checkpoint
//!   (`model.encoder.embed_positions.weight`); pre-norm layers (LayerNorm, bidirectional
//!   self-attention, LayerNorm, `fc2(gelu(fc1))`), a final `layer_norm`.
//! - Decoder ([`decoder`]): token embeddings plus learned positions (`embed_positions`), pre-norm
//!   layers with causal self-attention, cross-attention (`encoder_attn`) and the MLP, a final
//!   `layer_norm`; the LM head `proj_out` is tied to `embed_tokens` (`tie_word_embeddings`,
//!   default true).
//! - Attention (`WhisperAttention`): `q_proj`, `v_proj` and `out_proj` carry a bias, `k_proj`
//!   does not; scores scaled by `head_dim^-0.5`.
//!
//! The model's [`CausalLM::forward`] runs the decoder; [`CausalLM::encoder`] returns the encoder,
//! which `generate()` runs once per call. Whisper's own generate (language, task, timestamps,
//! long-form) is `crate::generation::whisper`.
//!
//! Deliberate differences: `scale_embedding` is read but, as in transformers 5 (whose
//! `embed_scale` is never applied), changes nothing; `init-random` draws the encoder's positions
//! at random rather than as sinusoids.

pub(crate) mod decoder;
pub(crate) mod encoder;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::config::{Activation, ConfigFile, ModelConfig, SavedDtype, TokenIdField};
use super::layers::LoadContext;
use super::seq2seq::{decoder_config, DecoderShape, Encoder};
use super::{Architecture, CausalLM, ForwardInput, ModelOutput};
use crate::cache::KvCache;
use crate::error::Result;
use crate::init::{Init, TensorSpec};

/// `nn.LayerNorm`'s default epsilon, which every Whisper norm uses.
const LAYER_NORM_EPS: f64 = 1e-5;

/// The `config.json` fields of `WhisperConfig` that lmgen reads (defaults: `WhisperConfig`'s,
/// i.e. whisper-tiny's).
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default = "defaults::vocab_size")]
    vocab_size: usize,
    #[serde(default = "defaults::num_mel_bins")]
    num_mel_bins: usize,
    #[serde(default = "defaults::layers")]
    encoder_layers: usize,
    #[serde(default = "defaults::heads")]
    encoder_attention_heads: usize,
    #[serde(default = "defaults::layers")]
    decoder_layers: usize,
    #[serde(default = "defaults::heads")]
    decoder_attention_heads: usize,
    #[serde(default = "defaults::ffn_dim")]
    decoder_ffn_dim: usize,
    #[serde(default = "defaults::ffn_dim")]
    encoder_ffn_dim: usize,
    #[serde(default = "defaults::d_model")]
    d_model: usize,
    activation_function: Option<String>,
    #[serde(default = "defaults::max_source_positions")]
    max_source_positions: usize,
    #[serde(default = "defaults::max_target_positions")]
    max_target_positions: usize,
    #[serde(default)]
    scale_embedding: bool,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<TokenIdField>,
    pad_token_id: Option<TokenIdField>,
}

mod defaults {
    pub fn vocab_size() -> usize {
        51865
    }
    pub fn num_mel_bins() -> usize {
        80
    }
    pub fn layers() -> usize {
        4
    }
    pub fn heads() -> usize {
        6
    }
    pub fn ffn_dim() -> usize {
        1536
    }
    pub fn d_model() -> usize {
        384
    }
    pub fn max_source_positions() -> usize {
        1500
    }
    pub fn max_target_positions() -> usize {
        448
    }
}

/// What the encoder needs beyond the decoder's [`ModelConfig`], resolved at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperSpec {
    /// Mel bins of the input features (`num_mel_bins`): `conv1`'s input channels.
    pub num_mel_bins: usize,
    /// `encoder_layers`.
    pub encoder_layers: usize,
    /// `encoder_attention_heads`.
    pub encoder_attention_heads: usize,
    /// `encoder_ffn_dim`.
    pub encoder_ffn_dim: usize,
    /// `max_source_positions`: encoder positions, half the input frames (`conv2`'s stride 2).
    pub max_source_positions: usize,
}

impl WhisperSpec {
    /// The input frames the encoder takes: `max_source_positions * conv1.stride * conv2.stride`.
    pub fn input_frames(&self) -> usize {
        2 * self.max_source_positions
    }
}

/// `whisper`.
pub fn parse(file: &ConfigFile<'_>) -> Result<ModelConfig> {
    let c: Config = file.parse()?;
    let d = c.d_model;
    for (key, heads) in [
        ("encoder_attention_heads", c.encoder_attention_heads),
        ("decoder_attention_heads", c.decoder_attention_heads),
    ] {
        if heads == 0 || !d.is_multiple_of(heads) {
            // WhisperAttention raises the same ValueError.
            return Err(file.err(format!(
                "embed_dim must be divisible by num_heads (got `embed_dim`: {d} and `num_heads`: {heads}) (`d_model`, `{key}`)"
            )));
        }
    }
    for (key, n) in [
        ("num_mel_bins", c.num_mel_bins),
        ("encoder_layers", c.encoder_layers),
        ("encoder_ffn_dim", c.encoder_ffn_dim),
        ("max_source_positions", c.max_source_positions),
        ("max_target_positions", c.max_target_positions),
    ] {
        if n == 0 {
            return Err(file.err(format!("`{key}` must be greater than 0")));
        }
    }
    if c.scale_embedding {
        tracing::debug!("scale_embedding is set; transformers 5 never applies it, nor does lmgen");
    }
    let layers = c.decoder_layers;
    let heads = c.decoder_attention_heads;
    let head_dim = d / heads;
    let act = c.activation_function.as_deref().unwrap_or("gelu");
    let mut cfg = decoder_config(DecoderShape {
        architecture: Architecture::Whisper,
        vocab_size: c.vocab_size,
        hidden_size: d,
        intermediate_size: c.decoder_ffn_dim,
        num_layers: layers,
        num_heads: heads,
        head_dim,
        max_position_embeddings: c.max_target_positions,
        hidden_act: Activation::from_hf(act, "activation_function", file)?,
        norm_eps: LAYER_NORM_EPS,
        tie_word_embeddings: c.tie_word_embeddings.unwrap_or(true),
        bos_token_id: c.bos_token_id.as_ref().and_then(TokenIdField::first),
        pad_token_id: c.pad_token_id.as_ref().and_then(TokenIdField::first),
        torch_dtype: file.parse::<SavedDtype>()?.into_name(),
    });
    (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias) = (true, true, true);
    cfg.whisper = Some(Box::new(WhisperSpec {
        num_mel_bins: c.num_mel_bins,
        encoder_layers: c.encoder_layers,
        encoder_attention_heads: c.encoder_attention_heads,
        encoder_ffn_dim: c.encoder_ffn_dim,
        max_source_positions: c.max_source_positions,
    }));
    Ok(cfg)
}

/// Whisper with its LM head (`proj_out`).
#[derive(Debug, Clone)]
pub struct Whisper {
    encoder: encoder::WhisperEncoder,
    decoder: decoder::WhisperDecoder,
    config: ModelConfig,
    device: Device,
    /// Which thread runs [`CausalLM::forward`].
    thread: crate::models::pool::ForwardThread,
    dtype: DType,
}

/// The encoder description of a config lowered by [`parse`].
fn spec(config: &ModelConfig) -> Result<&WhisperSpec> {
    config.whisper.as_deref().ok_or_else(|| {
        crate::error::Error::unsupported("a Whisper model needs a config lowered by whisper::parse")
    })
}

/// Builds Whisper (the registry's loader for `whisper`).
pub fn load(
    config: ModelConfig,
    _file: &ConfigFile<'_>,
    ctx: &LoadContext<'_>,
) -> Result<Box<dyn CausalLM>> {
    let encoder = encoder::WhisperEncoder::load(ctx, &config, spec(&config)?)?;
    let decoder = decoder::WhisperDecoder::load(ctx, &config)?;
    Ok(Box::new(Whisper {
        encoder,
        decoder,
        device: ctx.device.clone(),
        thread: crate::models::pool::ForwardThread::for_model(ctx),
        dtype: ctx.dtype,
        config,
    }))
}

/// Every tensor Whisper loads (for `init_random`).
pub(crate) fn tensor_specs(cfg: &ModelConfig, _file: &ConfigFile<'_>) -> Result<Vec<TensorSpec>> {
    Ok(tensor_specs_of(cfg))
}

fn tensor_specs_of(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let d = cfg.hidden_size;
    let mut t = Vec::new();
    let norm = |t: &mut Vec<TensorSpec>, p: &str| {
        t.push(TensorSpec::new(&format!("{p}.weight"), vec![d], Init::Ones));
        t.push(TensorSpec::new(&format!("{p}.bias"), vec![d], Init::Zeros));
    };
    let attention = |t: &mut Vec<TensorSpec>, p: &str| {
        for (name, bias) in [
            ("q_proj", true),
            ("k_proj", false),
            ("v_proj", true),
            ("out_proj", true),
        ] {
            t.extend(TensorSpec::linear(
                &format!("{p}.{name}"),
                [d, d],
                bias.then_some(d),
            ));
        }
    };
    let mlp = |t: &mut Vec<TensorSpec>, p: &str, ffn: usize| {
        t.extend(TensorSpec::linear(&format!("{p}.fc1"), [ffn, d], Some(ffn)));
        t.extend(TensorSpec::linear(&format!("{p}.fc2"), [d, ffn], Some(d)));
    };
    if let Some(s) = cfg.whisper.as_deref() {
        let e = "model.encoder";
        for (conv, in_channels) in [("conv1", s.num_mel_bins), ("conv2", d)] {
            t.push(TensorSpec::new(
                &format!("{e}.{conv}.weight"),
                vec![d, in_channels, 3], // [out, in, kernel]
                Init::Random,
            ));
            t.push(TensorSpec::new(
                &format!("{e}.{conv}.bias"),
                vec![d],
                Init::Zeros,
            ));
        }
        t.push(TensorSpec::new(
            &format!("{e}.embed_positions.weight"),
            vec![s.max_source_positions, d],
            Init::Random,
        ));
        for l in 0..s.encoder_layers {
            let p = format!("{e}.layers.{l}");
            attention(&mut t, &format!("{p}.self_attn"));
            norm(&mut t, &format!("{p}.self_attn_layer_norm"));
            mlp(&mut t, &p, s.encoder_ffn_dim);
            norm(&mut t, &format!("{p}.final_layer_norm"));
        }
        norm(&mut t, &format!("{e}.layer_norm"));
    }
    let dec = "model.decoder";
    t.push(TensorSpec::new(
        &format!("{dec}.embed_tokens.weight"),
        vec![cfg.vocab_size, d],
        Init::Random,
    ));
    t.push(TensorSpec::new(
        &format!("{dec}.embed_positions.weight"),
        vec![cfg.max_position_embeddings, d],
        Init::Random,
    ));
    for l in 0..cfg.num_hidden_layers {
        let p = format!("{dec}.layers.{l}");
        attention(&mut t, &format!("{p}.self_attn"));
        norm(&mut t, &format!("{p}.self_attn_layer_norm"));
        attention(&mut t, &format!("{p}.encoder_attn"));
        norm(&mut t, &format!("{p}.encoder_attn_layer_norm"));
        mlp(&mut t, &p, cfg.intermediate_size);
        norm(&mut t, &format!("{p}.final_layer_norm"));
    }
    norm(&mut t, &format!("{dec}.layer_norm"));
    if !cfg.tie_word_embeddings {
        t.push(TensorSpec::new(
            "proj_out.weight",
            vec![cfg.vocab_size, d],
            Init::Random,
        ));
    }
    t
}

impl Whisper {
    /// [`CausalLM::forward`] on the calling thread.
    fn forward_here(
        &self,
        input: &ForwardInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<ModelOutput> {
        self.decoder.forward(input, cache, self.dtype, &self.device)
    }
}

impl CausalLM for Whisper {
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput> {
        self.thread.run(|| self.forward_here(input, cache))
    }

    fn lm_head(&self, hidden_states: &Tensor) -> Result<Tensor> {
        self.decoder.lm_head(hidden_states)
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
