//! `ModelArgs`: the model flags every `lmgen` subcommand and the server share (which checkpoint and
//! revision, GGUF file, dtype, device, attention semantics, quantization), turned once into
//! [`LoadOptions`] for [`lmgen::Pipeline::load`].
//!
//! It lives in this crate because both binaries (`lmgen` and `lmgen-server`) parse it, and the CLI
//! already depends on the server.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use lmgen::load::HubOptions;
use lmgen::models::{AttnImplementation, DType, LoadOptions, Quantization};

/// The checkpoint shipped in the repository, used when `--model` is not given: a small Llama
/// trained on Jane Austen's novels (`models/tiny-austen`, made by `tools/train/`).
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tiny-austen");

/// The name of [`DEFAULT_MODEL`] where a model is named rather than loaded (the server's model id).
pub const DEFAULT_MODEL_NAME: &str = "tiny-austen";

/// `--dtype`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
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

/// `--attn-implementation`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnArg {
    Sdpa,
    Eager,
}

impl From<AttnArg> for AttnImplementation {
    fn from(a: AttnArg) -> Self {
        match a {
            AttnArg::Sdpa => AttnImplementation::Sdpa,
            AttnArg::Eager => AttnImplementation::Eager,
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

impl From<QuantizeArg> for Quantization {
    fn from(q: QuantizeArg) -> Self {
        match q {
            QuantizeArg::Q8_0 => Quantization::Q8_0,
            QuantizeArg::Q4K => Quantization::Q4K,
        }
    }
}

/// Which model to load and how (flattened into each subcommand's flags).
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Checkpoint directory or Hugging Face model id (`org/name[@revision]`, from the local HF
    /// cache, downloaded into it when missing: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=1 for the
    /// cache only), or a `.gguf` file (tokenizer.json and generation_config.json are read from its
    /// directory). Defaults to the small model shipped with lmgen (`models/tiny-austen`).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Branch, tag or commit of `--model` on the Hub (transformers' `revision`; default `main`).
    /// Same as `--model org/name@REVISION`.
    #[arg(long, value_name = "REVISION")]
    pub revision: Option<String>,
    /// Load this GGUF file (llama.cpp's format; a file name inside `--model`'s directory or cached
    /// model id, or a path) instead of the safetensors weights: transformers'
    /// `from_pretrained(model, gguf_file=...)`. The tokenizer still comes from `--model`.
    #[arg(long, value_name = "NAME")]
    pub gguf_file: Option<PathBuf>,
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

impl ModelArgs {
    /// `--model`, or the shipped checkpoint.
    pub fn model_or_default(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| DEFAULT_MODEL.to_string())
    }

    /// `--model` as given, or [`DEFAULT_MODEL_NAME`]: how to name the model to users.
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL_NAME)
    }

    /// The load options for a model other than `--model` (an assistant model, a request's own
    /// `model`): the same dtype, device and quantization, without `--gguf-file` and `--revision`,
    /// which name `--model`'s files.
    pub fn other_model_options(options: &LoadOptions) -> LoadOptions {
        LoadOptions {
            gguf_file: None,
            hub: HubOptions {
                revision: None,
                ..options.hub.clone()
            },
            ..options.clone()
        }
    }

    /// The load options these flags describe; a bad `--device` is an error naming the flag.
    pub fn load_options(&self) -> lmgen::Result<LoadOptions> {
        let device = lmgen::device::parse(&self.device).map_err(|e| match e {
            lmgen::Error::Device { name, message } => {
                lmgen::Error::input(format!("`--device {name}` {message}"))
            }
            other => other,
        })?;
        Ok(LoadOptions {
            dtype: Some(self.dtype.into()),
            device,
            attn_implementation: self.attn_implementation.into(),
            quantize: self.quantize.map(Quantization::from),
            gguf_file: self.gguf_file.clone(),
            hub: HubOptions {
                revision: self.revision.clone(),
                // Bars for large downloads, drawn only when stderr is a terminal.
                progress: true,
                ..HubOptions::default()
            },
        })
    }
}

/// Loads `id_or_dir` with `options`, then lets freed activation buffers stay in the heap for the
/// next op ([`lmgen::allocator::reuse_freed_memory`]): a process-wide allocator setting, made by
/// the binaries after their weights are loaded, never by the library.
pub fn load_pipeline(id_or_dir: &str, options: &LoadOptions) -> lmgen::Result<lmgen::Pipeline> {
    let pipe = lmgen::Pipeline::load(id_or_dir, options)?;
    lmgen::allocator::reuse_freed_memory();
    Ok(pipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    fn parse(argv: &[&str]) -> Result<ModelArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("lmgen").chain(argv.iter().copied())).map(|c| c.model)
    }

    #[test]
    fn defaults_are_the_shipped_model_in_f32_on_cpu() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.model_or_default(), DEFAULT_MODEL);
        assert_eq!(args.model_name(), DEFAULT_MODEL_NAME);
        let options = args.load_options().unwrap();
        assert_eq!(options.dtype, Some(DType::F32));
        assert!(options.device.is_cpu());
        assert_eq!(options.attn_implementation, AttnImplementation::Sdpa);
        assert_eq!(options.quantize, None);
        assert_eq!(options.gguf_file, None);
        assert_eq!(options.hub.revision, None);
        assert!(options.hub.progress);
    }

    #[test]
    fn every_flag_reaches_the_load_options() {
        let args = parse(&[
            "-m",
            "dir",
            "--gguf-file",
            "w.gguf",
            "--dtype",
            "bf16",
            "--attn-implementation",
            "eager",
            "--quantize",
            "q4_k",
            "--revision",
            "v1.0",
        ])
        .unwrap();
        assert_eq!(args.model_or_default(), "dir");
        assert_eq!(args.model_name(), "dir");
        let options = args.load_options().unwrap();
        assert_eq!(options.dtype, Some(DType::BF16));
        assert_eq!(options.attn_implementation, AttnImplementation::Eager);
        assert_eq!(options.quantize, Some(Quantization::Q4K));
        assert_eq!(options.gguf_file, Some(PathBuf::from("w.gguf")));
        assert_eq!(options.hub.revision.as_deref(), Some("v1.0"));
        let options = parse(&["--quantize", "q8_0"]).unwrap().load_options();
        assert_eq!(options.unwrap().quantize, Some(Quantization::Q8_0));
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (flag, value) in [
            ("--dtype", "f8"),
            ("--attn-implementation", "flash"),
            ("--quantize", "q2"),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e}");
            let message = e.to_string();
            assert!(
                message.contains(flag) && message.contains(value),
                "{message}"
            );
        }
        let e = parse(&["--device", "tpu"]).unwrap().load_options();
        let message = e.unwrap_err().to_string();
        assert!(
            message.contains("`--device tpu` is not a device"),
            "{message}"
        );
    }
}
