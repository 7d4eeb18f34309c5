//! The library's one error type.
//!
//! Every message names what was wrong (the file, the field, the tensor) and, where it helps, what to do.

use std::path::PathBuf;

use crate::generation::GenerationConfig;

/// Errors returned by lmgen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or does not have the expected shape.
    #[error("`{}` is not valid: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message, or what is missing or mistyped.
        message: String,
    },
    /// A safetensors file is truncated or corrupt, or a tensor in it does not match the model.
    #[error("`{}`: {message}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong, naming the tensor when one is at fault.
        message: String,
    },
    /// A model id could not be resolved to a local directory.
    #[error("model `{id}` not found; looked in: {looked}. Pass a checkpoint directory, or download it into the Hugging Face cache first")]
    ModelNotFound {
        /// The model id as given.
        id: String,
        /// The places searched, for the message.
        looked: String,
    },
    /// A model id could not be downloaded from the Hugging Face Hub. `file` is the file being
    /// fetched (`None`: the repository's file list); `message` says why and what to do.
    #[error(
        "cannot download {} of model `{id}` (revision `{revision}`): {message}",
        .file.as_deref().map_or_else(|| "the file list".to_string(), |f| format!("`{f}`"))
    )]
    Download {
        /// The model id.
        id: String,
        /// The revision asked for (branch, tag or commit).
        revision: String,
        /// The file being fetched; `None` for the repository's file list.
        file: Option<String>,
        /// Why, and what to do.
        message: String,
    },
    /// The model's `config.json` has a missing or invalid field.
    #[error("`{}`: {message}", path.display())]
    ModelConfig {
        /// The `config.json` (or the GGUF file whose metadata stands for it).
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// `model_type` names an architecture lmgen does not implement.
    #[error("unknown model_type `{model_type}` in `{}`; supported: {supported}", path.display())]
    UnknownModelType {
        /// The `config.json`.
        path: PathBuf,
        /// Its `model_type`.
        model_type: String,
        /// The `model_type`s lmgen implements, comma-separated.
        supported: String,
    },
    /// A generation setting has a wrong type or a value out of range, or settings that do not go
    /// together. The message names the field; `field` holds it (see [`Error::field`]).
    #[error("invalid generation config: {message}")]
    GenerationConfig {
        /// The `GenerationConfig` field at fault (transformers' name), when the message names one.
        field: Option<String>,
        /// What is wrong and what to do.
        message: String,
    },
    /// A setting that would change the output but whose feature is not built yet.
    #[error("not supported yet: {message}")]
    Unsupported {
        /// The setting at fault (transformers' name), when the message names one.
        field: Option<String>,
        /// What is not built and what to do instead.
        message: String,
    },
    /// Invalid inputs to generate (shapes, lengths, token ids).
    #[error("invalid input: {message}")]
    Input {
        /// The `generate()` argument or `GenerationConfig` field at fault, when the message names one.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
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
    Device {
        /// The device name as given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The GPU ran out of memory (loading weights, or a request too large for what is left: a big
    /// batch, a long prompt). Nothing was generated for the request; smaller ones still work.
    #[error("out of GPU memory: {message}. Lower the batch size, the prompt length or `max_new_tokens`, or use a smaller dtype")]
    OutOfMemory {
        /// The failed allocation, as the driver reported it.
        message: String,
    },
    /// The continuous-batching engine has stopped (it was stopped, or its thread ended): it takes
    /// no new requests, and the requests it still held ended with this error. A condition of the
    /// server, not of the request: the same request succeeds on a running engine.
    #[error("the generation engine has stopped; it takes no new requests")]
    EngineStopped,
    /// A model that cannot be split across the tensor-parallel ranks asked for (a count the
    /// world size does not divide, naming the config field; a layer kind not split yet), or a
    /// collective between the ranks that failed.
    #[error("tensor parallelism over {world_size} ranks: {message}")]
    TensorParallel {
        /// The number of ranks.
        world_size: usize,
        /// What cannot be split, naming the field, or why the collective failed.
        message: String,
    },
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

/// `generate()` arguments that are not `GenerationConfig` fields, which an [`Error::Input`] or
/// [`Error::Unsupported`] may blame (transformers' names).
const GENERATE_ARGUMENTS: &[&str] = &[
    "input_ids",
    "attention_mask",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
    "prefix_allowed_tokens_fn",
    "logits_processor",
    "stopping_criteria",
    "assistant_model",
    "assistant_tokenizer",
    "tokenizer",
    "streamer",
    // Structured output's grammar kinds (`lmgen::generation::structured::Grammar`).
    "json_schema",
    "json_object",
    "regex",
    "grammar",
    "gbnf",
];

/// The field a message blames: its first `` `name` `` (or `` `name=value` ``) that is a
/// `GenerationConfig` field or a `generate()` argument. Every message names the field it is about
/// first, so this reads it once, where the error is made.
fn blamed_field(message: &str) -> Option<String> {
    message.split('`').skip(1).step_by(2).find_map(|quoted| {
        let name: &str = quoted
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()?;
        let known = GenerationConfig::FIELDS.contains(&name) || GENERATE_ARGUMENTS.contains(&name);
        known.then(|| name.to_string())
    })
}

impl Error {
    /// An [`Error::GenerationConfig`]; its `field` is the first field the message names in
    /// backquotes.
    pub fn config(message: impl Into<String>) -> Self {
        let message = message.into();
        Error::GenerationConfig {
            field: blamed_field(&message),
            message,
        }
    }

    /// An [`Error::Unsupported`]; its `field` is the first setting the message names in backquotes.
    pub fn unsupported(message: impl Into<String>) -> Self {
        let message = message.into();
        Error::Unsupported {
            field: blamed_field(&message),
            message,
        }
    }

    /// An [`Error::Input`]; its `field` is the first argument or field the message names in
    /// backquotes.
    pub fn input(message: impl Into<String>) -> Self {
        let message = message.into();
        Error::Input {
            field: blamed_field(&message),
            message,
        }
    }

    /// The `GenerationConfig` field or `generate()` argument this error is about, when it is about
    /// one (a server answers it as the request parameter at fault).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::GenerationConfig { field, .. }
            | Error::Unsupported { field, .. }
            | Error::Input { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_the_first_known_name_in_backquotes() {
        let e = Error::config("`num_return_sequences` (3) must be <= `num_beams` (2)");
        assert_eq!(e.field(), Some("num_return_sequences"));
        let e = Error::config("an assistant with `num_beams=2`; set `num_beams` to 1");
        assert_eq!(e.field(), Some("num_beams"));
        let e = Error::input("`attention_mask` must have the shape of `input_ids` [1, 3]");
        assert_eq!(e.field(), Some("attention_mask"));
        let e = Error::config("unknown generation config field `top_kk`");
        assert_eq!(e.field(), None);
        let e = Error::unsupported("`watermarking_config` for SynthID text watermarking");
        assert_eq!(e.field(), Some("watermarking_config"));
        assert_eq!(Error::input("a prompt has no tokens").field(), None);
    }
}
