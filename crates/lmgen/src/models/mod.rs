//! Decoder-only causal language models: one file per architecture (its `config.json` fields and
//! what it changes), one row per architecture in `registry`, the shared `decoder` that runs
//! them, and building blocks in `layers/`.
//!
//! A model is immutable once loaded; all per-sequence state lives in the [`KvCache`] passed to
//! [`CausalLM::forward`], so one model serves many sequences (and threads).

pub(crate) mod bart;
pub mod config;
pub(crate) mod decoder;
pub(crate) mod gemma2;
pub(crate) mod gemma3;
pub(crate) mod gemma4;
pub(crate) mod gpt2;
pub(crate) mod gpt_oss;
pub(crate) mod granite;
pub(crate) mod layers;
pub(crate) mod lfm2;
pub(crate) mod llama;
pub(crate) mod marian;
pub(crate) mod ministral3;
pub(crate) mod mistral;
pub(crate) mod mixtral;
pub(crate) mod olmo2;
pub(crate) mod phi3;
pub(crate) mod pool;
pub(crate) mod quantize;
pub(crate) mod quantize_avx2;
pub(crate) mod quantize_int8;
pub(crate) mod quantize_k_avx2;
pub(crate) mod qwen2;
pub(crate) mod qwen3;
pub(crate) mod qwen3_5;
pub(crate) mod qwen3_5_moe;
pub(crate) mod qwen3_moe;
pub(crate) mod qwen3_next;
pub(crate) mod registry;
pub mod seq2seq;
pub(crate) mod smollm3;
pub(crate) mod t5;
pub(crate) mod whisper;

use std::path::PathBuf;

use candle_core::Tensor;

use crate::cache::KvCache;
use crate::error::Result;
use crate::load::{Checkpoint, HubOptions};

pub use candle_core::{DType, Device};
pub use config::ModelConfig;
pub use quantize::{Quantization, QuantizedWeight};

/// Which positions of the input get logits. Generation only needs the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsToKeep {
    /// Every input position: `[b, t, vocab]`.
    All,
    /// Only the last input position: `[b, 1, vocab]`.
    Last,
    /// The last `n` input positions, `[b, n, vocab]` (HF `logits_to_keep=n`; assisted decoding scores
    /// the drafted tokens and the one after them). `n` is at most the step length.
    LastN(usize),
}

/// One forward step over `t` new tokens per row (the whole prompt at prefill, 1 token at decode).
#[derive(Debug, Clone, Copy)]
pub struct ForwardInput<'a> {
    /// `[b, t]` u32 token ids.
    pub input_ids: &'a Tensor,
    /// `[b, t]` u32 position ids (RoPE angles / learned positions), as transformers computes them
    /// from the attention mask: `cumsum(mask) - 1`. On any device: the decoding loops keep them on
    /// the host, where RoPE angles are computed, so a GPU step needs no copy back.
    pub position_ids: &'a Tensor,
    /// Padding mask over the cached and new tokens, one row per sequence, each of length
    /// `past + t` (1 = attend, 0 = padding). `None` means no padding at all.
    pub attention_mask: Option<&'a [Vec<u8>]>,
    /// Which positions to compute logits for.
    pub logits_to_keep: LogitsToKeep,
    /// Also return every layer's hidden states ([`ModelOutput::hidden_states`]), as transformers'
    /// `output_hidden_states=True`. Off for plain decoding, which then keeps none of them.
    pub output_hidden_states: bool,
    /// Also return every attention layer's weights ([`ModelOutput::attentions`]), as transformers'
    /// `output_attentions=True`: only a model loaded with [`AttnImplementation::Eager`] computes
    /// them (transformers' `sdpa` returns none).
    pub output_attentions: bool,
    /// Early exit: run only the first `n` decoder layers, then the final norm and the LM head (HF's
    /// `EarlyExitCandidateGenerator` lowers `config.num_hidden_layers` for the draft pass). Only those
    /// layers' keys and values are appended to the cache. `None`: every layer.
    pub num_hidden_layers: Option<usize>,
    /// `[b, 1]` u32 on the model's device: the same positions as `position_ids`, which are
    /// also each row's cache slot (no padding), for a one-token step that must read them from
    /// device memory: a step captured as a CUDA graph ([`crate::cuda::graph`]) and replayed at
    /// later positions. Only a model whose [`CausalLM::takes_device_positions`] says so reads
    /// them; `None` for every other step.
    pub device_positions: Option<&'a Tensor>,
}

impl<'a> ForwardInput<'a> {
    /// A plain step: no padding, the last position's logits, every layer, no hidden states or
    /// attention weights.
    pub fn last(input_ids: &'a Tensor, position_ids: &'a Tensor) -> Self {
        Self {
            input_ids,
            position_ids,
            attention_mask: None,
            logits_to_keep: LogitsToKeep::Last,
            output_hidden_states: false,
            output_attentions: false,
            num_hidden_layers: None,
            device_positions: None,
        }
    }
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct ModelOutput {
    /// `[b, t_kept, vocab]` f32 logits.
    pub logits: Tensor,
    /// With [`ForwardInput::output_hidden_states`]: `num_hidden_layers + 1` tensors `[b, t, hidden]`
    /// in the compute dtype, every input position (HF `hidden_states`): the embedding output (the
    /// input of layer 0), then each layer's output; the last one is after the final norm, i.e.
    /// the last hidden state that the LM head reads.
    pub hidden_states: Option<Vec<Tensor>>,
    /// With [`ForwardInput::output_attentions`]: one `[b, num_heads, t, past + t]` f32 tensor per
    /// attention layer (HF `attentions`), the softmax weights; empty unless the model was loaded
    /// with eager attention.
    pub attentions: Option<Vec<Tensor>>,
}

impl ModelOutput {
    /// The final hidden state after the last norm, `[b, t, hidden]` (HF `hidden_states[-1]`), when
    /// hidden states were requested.
    pub fn last_hidden_state(&self) -> Option<&Tensor> {
        self.hidden_states.as_ref().and_then(|h| h.last())
    }
}

/// A causal language model (HF `*ForCausalLM`).
pub trait CausalLM: Send + Sync {
    /// Runs the model over `input` and appends the new keys and values to `cache`.
    fn forward(&self, input: &ForwardInput<'_>, cache: &mut dyn KvCache) -> Result<ModelOutput>;
    /// The output projection alone (HF `get_output_embeddings()(hidden_states)`): `[.., hidden]`
    /// -> `[.., vocab]` f32, without the final norm and without soft-capping. DoLa reads
    /// intermediate layers through it.
    #[doc(alias = "get_output_embeddings")]
    fn lm_head(&self, hidden_states: &Tensor) -> Result<Tensor>;
    /// The parsed `config.json`.
    fn config(&self) -> &ModelConfig;
    /// The device the weights live on.
    fn device(&self) -> &Device;
    /// The compute dtype of activations and the KV cache.
    fn dtype(&self) -> DType;
    /// The encoder of an encoder-decoder model (HF `get_encoder()`), whose decoder this model's
    /// [`CausalLM::forward`] runs; `None` (the default) for a decoder-only model. See
    /// [`seq2seq`].
    fn encoder(&self) -> Option<&dyn seq2seq::Encoder> {
        None
    }
    /// Whether a one-token step of this model, with [`ForwardInput::device_positions`], reads
    /// everything that changes from step to step (positions, cache lengths) from device memory
    /// at every position below `max_len`, so that it can be captured once as a CUDA graph and
    /// replayed. `false` (the default): the model reads some of it on the host.
    fn takes_device_positions(&self, max_len: usize) -> bool {
        let _ = max_len;
        false
    }
}

/// The architectures lmgen implements; `registry::ARCHITECTURES` maps `config.json`'s
/// `model_type` to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `gpt2` (HF `GPT2LMHeadModel`).
    Gpt2,
    /// `llama` (HF `LlamaForCausalLM`).
    Llama,
    /// `mistral` (HF `MistralForCausalLM`).
    Mistral,
    /// `qwen2` (HF `Qwen2ForCausalLM`).
    Qwen2,
    /// `gemma2` (HF `Gemma2ForCausalLM`).
    Gemma2,
    /// `qwen3` (HF `Qwen3ForCausalLM`).
    Qwen3,
    /// `gemma3_text` (HF `Gemma3ForCausalLM`).
    Gemma3,
    /// `phi3` (HF `Phi3ForCausalLM`).
    Phi3,
    /// `smollm3` (HF `SmolLM3ForCausalLM`).
    SmolLM3,
    /// `olmo2` (HF `Olmo2ForCausalLM`).
    Olmo2,
    /// `granite` (HF `GraniteForCausalLM`).
    Granite,
    /// `ministral3` (HF `Ministral3ForCausalLM`).
    Ministral3,
    /// `qwen3_moe` (HF `Qwen3MoeForCausalLM`).
    Qwen3Moe,
    /// `mixtral` (HF `MixtralForCausalLM`).
    Mixtral,
    /// `gpt_oss` (HF `GptOssForCausalLM`).
    GptOss,
    /// `qwen3_5_text` (HF `Qwen3_5ForCausalLM`; the language model of `Qwen3_5ForConditionalGeneration`).
    Qwen3_5,
    /// `qwen3_5_moe_text` (HF `Qwen3_5MoeForCausalLM`; the language model of
    /// `Qwen3_5MoeForConditionalGeneration`).
    Qwen3_5Moe,
    /// `qwen3_next` (HF `Qwen3NextForCausalLM`).
    Qwen3Next,
    /// `lfm2` (HF `Lfm2ForCausalLM`).
    Lfm2,
    /// `gemma4_text` (HF `Gemma4ForCausalLM`).
    Gemma4,
    /// `t5` (HF `T5ForConditionalGeneration`; T5 and Flan-T5), encoder-decoder.
    T5,
    /// `mt5` (HF `MT5ForConditionalGeneration`), encoder-decoder.
    Mt5,
    /// `bart` (HF `BartForConditionalGeneration`), an encoder-decoder model.
    Bart,
    /// `mbart` (HF `MBartForConditionalGeneration`), an encoder-decoder model.
    MBart,
    /// `marian` (HF `MarianMTModel`), an encoder-decoder model.
    Marian,
    /// `whisper` (HF `WhisperForConditionalGeneration`): an encoder-decoder speech model.
    Whisper,
}

impl Architecture {
    /// The `model_type` string of `config.json`.
    pub fn model_type(self) -> &'static str {
        registry::entry_of(self).model_type
    }
}

/// Which attention semantics to reproduce (transformers' `attn_implementation`).
///
/// The two differ only for Gemma 2: transformers' default, `sdpa`, does not apply
/// `attn_logit_softcapping` (torch's `scaled_dot_product_attention` has no soft-capping), while
/// `eager` does. lmgen follows transformers' default so that outputs match a plain
/// `from_pretrained`; pick `Eager` to reproduce `attn_implementation="eager"` (the semantics Gemma 2
/// was trained with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AttnImplementation {
    /// `torch.nn.functional.scaled_dot_product_attention` semantics (transformers' default).
    #[default]
    Sdpa,
    /// `eager_attention_forward`: applies attention logit soft-capping.
    Eager,
}

/// How to load weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype; `None` = f32 on CPU.
    pub dtype: Option<DType>,
    /// Where the weights and the KV cache live.
    pub device: Device,
    /// Attention semantics (see [`AttnImplementation`]).
    pub attn_implementation: AttnImplementation,
    /// Quantize every linear weight and the token embedding table at load (HF `load_in_8bit` /
    /// `load_in_4bit`; a tied LM head shares the table's blocks); `None` keeps
    /// the weights in `dtype`. Weights that a GGUF file already stores in Q8_0, Q4_K or Q6_K keep
    /// their blocks either way.
    pub quantize: Option<Quantization>,
    /// Load this GGUF file (llama.cpp's format) instead of safetensors: transformers'
    /// `from_pretrained(model_id, gguf_file=...)`. A file name inside the checkpoint directory or
    /// cached model id, or a path. The config comes from the file's metadata (architectures
    /// `llama`, which covers Mistral, and `qwen2`); the tokenizer and `generation_config.json`
    /// from the directory: lmgen does not build a tokenizer from GGUF metadata, so the directory
    /// needs the original model's `tokenizer.json`. Q8_0, Q4_K and Q6_K tensors run on the
    /// quantized layers in their blocks, other block types are dequantized to `dtype`. Used by
    /// [`crate::Pipeline::load`]; [`load_model`] takes an opened [`Checkpoint`] (see
    /// [`Checkpoint::from_pretrained`]).
    pub gguf_file: Option<PathBuf>,
    /// How a model id is downloaded from the Hugging Face Hub when it is not in the local cache
    /// (revision, token, cache root, offline), as transformers' `from_pretrained` arguments.
    pub hub: HubOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: None,
            device: Device::Cpu,
            attn_implementation: AttnImplementation::default(),
            quantize: None,
            gguf_file: None,
            hub: HubOptions::default(),
        }
    }
}

/// Builds the model that `config.json` describes, with its weights from the checkpoint.
pub fn load_model(checkpoint: &Checkpoint, options: &LoadOptions) -> Result<Box<dyn CausalLM>> {
    build(checkpoint, options, None)
}

#[cfg(test)]
/// A checkpoint of `tests/fixtures` (`"golden/models/llama"`, ...), loaded with the defaults.
pub(crate) fn fixture_model(dir: &str) -> Box<dyn CausalLM> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    load_model(&Checkpoint::open(&path).unwrap(), &LoadOptions::default()).unwrap()
}

/// [`load_model`] for one rank of a model split across tensor-parallel ranks ([`crate::parallel`]):
/// each rank loads its part of every weight and calls [`CausalLM::forward`] with the same inputs
/// in step with the others (the forward exchanges activations through `shard`'s communicator);
/// every rank gets the whole model's logits. Each rank keeps its own cache of its own key/value
/// heads (a [`crate::cache::DynamicCache`]; caches sized from the config's head counts do not
/// fit a part). A world size of 1 loads the whole model, as [`load_model`].
///
/// Every registered architecture splits (encoder-decoder models: both stacks by heads and
/// feed-forward width; a vocabulary the world size does not divide leaves the last ranks fewer
/// rows). Dense safetensors weights only: `quantize` and GGUF files are refused; a config whose
/// head, channel, expert or width counts the world size does not divide is an error naming the
/// field.
pub fn load_model_sharded(
    checkpoint: &Checkpoint,
    options: &LoadOptions,
    shard: &crate::parallel::Shard,
) -> Result<Box<dyn CausalLM>> {
    if shard.world_size() == 1 {
        return load_model(checkpoint, options);
    }
    if options.quantize.is_some() {
        return Err(shard.unsupported("a model quantized at load (`quantize`)"));
    }
    if checkpoint.weights.gguf_path().is_some() {
        return Err(shard.unsupported("a GGUF file"));
    }
    build(checkpoint, options, Some(shard))
}

fn build(
    checkpoint: &Checkpoint,
    options: &LoadOptions,
    shard: Option<&crate::parallel::Shard>,
) -> Result<Box<dyn CausalLM>> {
    let path = checkpoint.config_path();
    let resolved = registry::resolve(&config::ConfigFile::new(&checkpoint.config, &path))?;
    let config = resolved.parse()?;
    let weight_dtype = options.dtype.unwrap_or(DType::F32);
    let ctx = layers::LoadContext {
        weights: &checkpoint.weights,
        names: resolved.weight_names(|n| checkpoint.weights.contains(n)),
        dtype: layers::compute_dtype(weight_dtype, &options.device),
        weight_dtype,
        device: &options.device,
        attn_implementation: options.attn_implementation,
        quantize: options.quantize,
        shard,
    };
    resolved.build(config, &ctx)
}

/// The decoder layers a forward runs: all of them, or the first `num_hidden_layers` (early exit).
pub(crate) fn layers_to_run(input: &ForwardInput<'_>, num_layers: usize) -> usize {
    input
        .num_hidden_layers
        .map_or(num_layers, |n| n.min(num_layers))
}
