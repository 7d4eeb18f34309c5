//! Options shared by subcommands: model location, dtype, device.

use anyhow::Result;
use clap::{Args, ValueEnum};
use lmgen::models::{AttnImplementation, DType, LoadOptions, Quantization};

/// The checkpoint shipped in the repository, used when `--model` is not given: a small Llama
/// trained on Jane Austen's novels (`models/tiny-austen`, made by `tools/train/`).
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny-austen");

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint directory or Hugging Face model id (`org/name`, read from the local HF cache),
    /// or a `.gguf` file (tokenizer.json and generation_config.json are read from its directory).
    /// Defaults to the small model shipped with lmgen (`models/tiny-austen`).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Load this GGUF file (llama.cpp's format; a file name inside `--model`'s directory or cached
    /// model id, or a path) instead of the safetensors weights: transformers'
    /// `from_pretrained(model, gguf_file=...)`. The tokenizer still comes from `--model`.
    #[arg(long, value_name = "NAME")]
    pub gguf_file: Option<std::path::PathBuf>,
    /// Compute dtype (weights are converted on load).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Device: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Attention semantics of transformers' `attn_implementation`: `sdpa` (its default) or `eager`
    /// (differs only for Gemma 2, where eager applies attention logit soft-capping).
    #[arg(long, value_enum, default_value = "sdpa")]
    pub attn_implementation: AttnArg,
    /// Quantize every linear weight and the token embedding table at load to llama.cpp's Q8_0 or
    /// Q4_K blocks (transformers' `load_in_8bit` / `load_in_4bit`; a tied LM head shares the
    /// table's blocks, as in llama.cpp); activations then run in f32.
    #[arg(long, value_enum)]
    pub quantize: Option<QuantizeArg>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnArg {
    Sdpa,
    Eager,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::BF16,
        }
    }
}

/// `--quantize`: quantize linear weights and the token table at load.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantizeArg {
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k")]
    Q4K,
}

impl ModelArgs {
    /// `--model`, or the shipped checkpoint.
    pub fn model_or_default(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| DEFAULT_MODEL.to_string())
    }

    pub fn load_options(&self) -> Result<LoadOptions> {
        let dtype = self.dtype.into();
        let device = lmgen::device::parse(&self.device).map_err(|e| -> anyhow::Error {
            match e {
                lmgen::Error::Device { name, message } => {
                    anyhow::anyhow!("`--device {name}` {message}")
                }
                other => other.into(),
            }
        })?;
        Ok(LoadOptions {
            dtype: Some(dtype),
            device,
            attn_implementation: match self.attn_implementation {
                AttnArg::Sdpa => AttnImplementation::Sdpa,
                AttnArg::Eager => AttnImplementation::Eager,
            },
            quantize: self.quantize.map(|q| match q {
                QuantizeArg::Q8_0 => Quantization::Q8_0,
                QuantizeArg::Q4K => Quantization::Q4K,
            }),
            gguf_file: self.gguf_file.clone(),
        })
    }
}
