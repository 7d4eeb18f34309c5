//! The library's one error type.
//!
//! Every message names what was wrong (the file, the field, the tensor) and, where it helps, what to do.

use std::path::PathBuf;

/// Errors returned by lmgen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or does not have the expected shape.
    #[error("`{}` is not valid: {message}", path.display())]
    Json { path: PathBuf, message: String },
    /// A safetensors file is truncated or corrupt, or a tensor in it does not match the model.
    #[error("`{}`: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    /// A model id could not be resolved to a local directory.
    #[error("model `{id}` not found; looked in: {looked}. Pass a checkpoint directory, or download it into the Hugging Face cache first")]
    ModelNotFound { id: String, looked: String },
    /// A model id could not be downloaded from the Hugging Face Hub. `file` is the file being
    /// fetched (`None`: the repository's file list); `message` says why and what to do.
    #[error(
        "cannot download {} of model `{id}` (revision `{revision}`): {message}",
        .file.as_deref().map_or_else(|| "the file list".to_string(), |f| format!("`{f}`"))
    )]
    Download {
        id: String,
        revision: String,
        file: Option<String>,
        message: String,
    },
    /// The model's `config.json` has a missing or invalid field.
    #[error("`{}`: {message}", path.display())]
    ModelConfig { path: PathBuf, message: String },
    /// `model_type` names an architecture lmgen does not implement.
    #[error("unknown model_type `{model_type}` in `{}`; supported: {supported}", path.display())]
    UnknownModelType {
        path: PathBuf,
        model_type: String,
        supported: String,
    },
    /// A generation setting has a wrong type or a value out of range. The message names the field.
    #[error("invalid generation config: {0}")]
    GenerationConfig(String),
    /// A setting that would change the output but whose feature is not built yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    /// Invalid inputs to generate (shapes, lengths, token ids).
    #[error("invalid input: {0}")]
    Input(String),
    /// The tokenizer could not be loaded or failed to encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A streamer could not pass text on (stdout closed, the receiving iterator dropped).
    #[error("streamer: {0}")]
    Streamer(String),
    /// A chat template could not be loaded or rendered, or raised an error by design
    /// (`raise_exception`, whose message is kept as is).
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A device name that is not one, a GPU that could not be opened, or CUDA asked of a build
    /// without the `cuda` feature. `message` reads after the name: "is not a device; ...".
    #[error("device `{name}` {message}")]
    Device { name: String, message: String },
    /// The GPU ran out of memory (loading weights, or a request too large for what is left: a big
    /// batch, a long prompt). Nothing was generated for the request; smaller ones still work.
    #[error("out of GPU memory: {message}. Lower the batch size, the prompt length or `max_new_tokens`, or use a smaller dtype")]
    OutOfMemory { message: String },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(candle_core::Error),
}

impl From<candle_core::Error> for Error {
    /// Allocation failures on the GPU become [`Error::OutOfMemory`]; everything else stays a
    /// tensor error.
    fn from(err: candle_core::Error) -> Self {
        if crate::device::is_out_of_memory(&err) {
            Error::OutOfMemory {
                message: err
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            }
        } else {
            Error::Tensor(err)
        }
    }
}

/// lmgen's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
