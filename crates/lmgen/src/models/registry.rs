//! The architecture registry: one row per `config.json` `model_type`, saying how to parse its
//! config, build the model, describe its tensors for `init_random`, and how llama.cpp writes its
//! GGUF files (the `general.architecture` name and what differs from Llama: a
//! [`crate::load::GgufArch`]). Vision-language checkpoints whose language model lmgen runs are
//! listed in [`WRAPPERS`]: their `text_config` is parsed by the text model's row and their
//! weights are read under the language model's prefix.
//!
//! Adding an architecture is its file in `models/` and one row here (`docs/adding-a-model.md`).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::config::{ConfigFile, ModelConfig};
use super::layers::{LoadContext, WeightNames};
use super::{
    bart, decoder, gemma2, gemma3, gemma4, gpt2, gpt_oss, granite, lfm2, llama, marian, ministral3,
    mistral, mixtral, olmo2, phi3, qwen2, qwen3, qwen3_5, qwen3_5_moe, qwen3_moe, qwen3_next,
    smollm3, t5, whisper, Architecture, CausalLM,
};
use crate::error::{Error, Result};
use crate::init::TensorSpec;
use crate::load::gguf::arch as gguf;
use crate::load::GgufArch;

/// How a row's model is built.
#[derive(Debug, Clone, Copy)]
pub enum Build {
    /// The shared [`decoder::Decoder`] runs the lowered config.
    Decoder,
    /// The architecture's own model code (encoder-decoder models too: their [`ModelConfig`]
    /// describes the decoder, so the tensors they list also read `config.json`'s encoder fields).
    Custom {
        /// Builds the model; split across tensor-parallel ranks where [`LoadContext::shard`] says
        /// so (or refused with [`crate::parallel::Shard::unsupported`]).
        load: fn(ModelConfig, &ConfigFile<'_>, &LoadContext<'_>) -> Result<Box<dyn CausalLM>>,
        /// Every tensor the model reads, from the parsed config and `config.json` (for fields
        /// only the architecture's own code reads).
        tensors: fn(&ModelConfig, &ConfigFile<'_>) -> Result<Vec<TensorSpec>>,
    },
}

/// One architecture.
#[derive(Debug)]
pub struct Entry {
    pub architecture: Architecture,
    /// `config.json`'s `model_type`.
    pub model_type: &'static str,
    /// `config.json` -> the concrete description (the architecture file's `parse`).
    pub parse: fn(&ConfigFile<'_>) -> Result<ModelConfig>,
    pub build: Build,
    /// How llama.cpp writes this architecture's GGUF files: its `general.architecture` name, tensor
    /// names and metadata (`None`: not read from GGUF).
    pub gguf: Option<&'static GgufArch>,
}

const fn decoder_row(
    architecture: Architecture,
    model_type: &'static str,
    parse: fn(&ConfigFile<'_>) -> Result<ModelConfig>,
    gguf: Option<&'static GgufArch>,
) -> Entry {
    Entry {
        architecture,
        model_type,
        parse,
        build: Build::Decoder,
        gguf,
    }
}

/// Every architecture lmgen runs.
pub static ARCHITECTURES: &[Entry] = &[
    Entry {
        architecture: Architecture::Gpt2,
        model_type: "gpt2",
        parse: gpt2::parse,
        build: Build::Custom {
            load: gpt2::load,
            tensors: gpt2::tensor_specs,
        },
        gguf: None,
    },
    decoder_row(
        Architecture::Llama,
        "llama",
        llama::parse,
        Some(&gguf::LLAMA),
    ),
    decoder_row(Architecture::Mistral, "mistral", mistral::parse, None),
    decoder_row(
        Architecture::Qwen2,
        "qwen2",
        qwen2::parse,
        Some(&gguf::QWEN2),
    ),
    decoder_row(Architecture::Gemma2, "gemma2", gemma2::parse, None),
    decoder_row(
        Architecture::Qwen3,
        "qwen3",
        qwen3::parse,
        Some(&gguf::QWEN3),
    ),
    decoder_row(
        Architecture::Gemma3,
        "gemma3_text",
        gemma3::parse,
        Some(&gguf::GEMMA3),
    ),
    decoder_row(Architecture::Phi3, "phi3", phi3::parse, Some(&gguf::PHI3)),
    decoder_row(Architecture::SmolLM3, "smollm3", smollm3::parse, None),
    decoder_row(
        Architecture::Olmo2,
        "olmo2",
        olmo2::parse,
        Some(&gguf::OLMO2),
    ),
    decoder_row(
        Architecture::Granite,
        "granite",
        granite::parse,
        Some(&gguf::GRANITE),
    ),
    decoder_row(
        Architecture::Ministral3,
        "ministral3",
        ministral3::parse,
        None,
    ),
    decoder_row(
        Architecture::Qwen3Moe,
        "qwen3_moe",
        qwen3_moe::parse,
        Some(&gguf::QWEN3MOE),
    ),
    decoder_row(
        Architecture::Mixtral,
        "mixtral",
        mixtral::parse,
        Some(&gguf::MIXTRAL),
    ),
    decoder_row(Architecture::GptOss, "gpt_oss", gpt_oss::parse, None),
    decoder_row(Architecture::Qwen3_5, "qwen3_5_text", qwen3_5::parse, None),
    decoder_row(
        Architecture::Qwen3_5Moe,
        "qwen3_5_moe_text",
        qwen3_5_moe::parse,
        None,
    ),
    decoder_row(
        Architecture::Qwen3Next,
        "qwen3_next",
        qwen3_next::parse,
        None,
    ),
    decoder_row(Architecture::Lfm2, "lfm2", lfm2::parse, None),
    Entry {
        architecture: Architecture::Gemma4,
        model_type: "gemma4_text",
        parse: gemma4::parse,
        build: Build::Custom {
            load: gemma4::load,
            tensors: gemma4::tensor_specs,
        },
        gguf: None,
    },
    Entry {
        architecture: Architecture::T5,
        model_type: "t5",
        parse: t5::parse,
        build: Build::Custom {
            load: t5::load,
            tensors: t5::tensor_specs,
        },
        gguf: None,
    },
    Entry {
        architecture: Architecture::Mt5,
        model_type: "mt5",
        parse: t5::parse_mt5,
        build: Build::Custom {
            load: t5::load,
            tensors: t5::tensor_specs,
        },
        gguf: None,
    },
    Entry {
        architecture: Architecture::Bart,
        model_type: "bart",
        parse: bart::parse,
        build: Build::Custom {
            load: bart::load,
            tensors: bart::tensor_specs,
        },
        gguf: None,
    },
    Entry {
        architecture: Architecture::MBart,
        model_type: "mbart",
        parse: bart::parse_mbart,
        build: Build::Custom {
            load: bart::load_mbart,
            tensors: bart::tensor_specs_mbart,
        },
        gguf: None,
    },
    Entry {
        architecture: Architecture::Marian,
        model_type: "marian",
        parse: marian::parse,
        build: Build::Custom {
            load: marian::load,
            tensors: marian::tensor_specs,
        },
        gguf: None,
    },
    Entry {
        architecture: Architecture::Whisper,
        model_type: "whisper",
        parse: whisper::parse,
        build: Build::Custom {
            load: whisper::load,
            tensors: whisper::tensor_specs,
        },
        gguf: None,
    },
];

/// A vision-language checkpoint whose language model lmgen runs (text in, text out; the vision
/// tower's weights are left unread).
#[derive(Debug)]
pub struct Wrapper {
    /// The top-level `model_type`.
    pub model_type: &'static str,
    /// The text model's `model_type` when `text_config` does not say.
    pub text_model_type: &'static str,
    /// The wrapper config's `tie_word_embeddings` default: a wrapper ties (or not) its own head.
    pub tie_word_embeddings: bool,
}

/// Vision-language checkpoints lmgen runs as text models.
pub static WRAPPERS: &[Wrapper] = &[
    // Gemma3ForConditionalGeneration (Gemma 3 4B and up).
    Wrapper {
        model_type: "gemma3",
        text_model_type: "gemma3_text",
        tie_word_embeddings: true,
    },
    // Qwen3_5ForConditionalGeneration (Qwen3.5 dense models).
    Wrapper {
        model_type: "qwen3_5",
        text_model_type: "qwen3_5_text",
        tie_word_embeddings: false,
    },
    // Qwen3_5MoeForConditionalGeneration (Qwen3.5-35B-A3B and the other sparse ones).
    Wrapper {
        model_type: "qwen3_5_moe",
        text_model_type: "qwen3_5_moe_text",
        tie_word_embeddings: false,
    },
    // Gemma4ForConditionalGeneration (Gemma 4 E2B, E4B, 26B-A4B, 31B).
    Wrapper {
        model_type: "gemma4",
        text_model_type: "gemma4_text",
        tie_word_embeddings: true,
    },
    // Mistral3ForConditionalGeneration (Mistral Small 3.1+, Ministral 3).
    Wrapper {
        model_type: "mistral3",
        text_model_type: "mistral",
        tie_word_embeddings: true,
    },
];

/// The row for a `model_type`.
pub fn entry(model_type: &str) -> Option<&'static Entry> {
    ARCHITECTURES.iter().find(|e| e.model_type == model_type)
}

/// The row of an architecture.
pub fn entry_of(architecture: Architecture) -> &'static Entry {
    ARCHITECTURES
        .iter()
        .find(|e| e.architecture == architecture)
        .unwrap_or(&ARCHITECTURES[0])
}

/// Every supported `model_type`, for errors.
pub fn supported() -> String {
    ARCHITECTURES
        .iter()
        .map(|e| e.model_type)
        .chain(WRAPPERS.iter().map(|w| w.model_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every GGUF `general.architecture` lmgen reads, for errors.
pub fn gguf_supported() -> String {
    let mut names: Vec<&str> = Vec::new();
    for name in ARCHITECTURES.iter().filter_map(|e| e.gguf.map(|g| g.name)) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(", ")
}

/// A `config.json` matched to its row.
#[derive(Debug)]
pub struct Resolved<'a> {
    pub entry: &'static Entry,
    /// The text model's config: the file, or its `text_config`.
    text: &'a Value,
    path: &'a Path,
    wrapper: Option<(&'static Wrapper, &'a Value)>,
}

#[derive(Deserialize)]
struct WrapperFields {
    tie_word_embeddings: Option<bool>,
}

impl<'a> Resolved<'a> {
    /// The text model's config, for parsing.
    pub fn file(&self) -> ConfigFile<'a> {
        ConfigFile {
            value: self.text,
            path: self.path,
            prefix: if self.wrapper.is_some() {
                "text_config."
            } else {
                ""
            },
        }
    }

    /// The concrete description; a wrapper's own `tie_word_embeddings` and `dtype` win.
    pub fn parse(&self) -> Result<ModelConfig> {
        let mut cfg = (self.entry.parse)(&self.file())?;
        if let Some((wrapper, top)) = self.wrapper {
            let top_file = ConfigFile::new(top, self.path);
            let fields: WrapperFields = top_file.parse()?;
            cfg.tie_word_embeddings = fields
                .tie_word_embeddings
                .unwrap_or(wrapper.tie_word_embeddings);
            if let Some(dtype) = top_file.parse::<super::config::SavedDtype>()?.into_name() {
                cfg.torch_dtype = Some(dtype);
            }
            cfg.check(&top_file)?;
        } else {
            cfg.check(&self.file())?;
        }
        Ok(cfg)
    }

    /// Where the text model's tensors are stored: at the top, or under the language model's
    /// prefix of a wrapper (`language_model.model.` + `language_model.lm_head.` as transformers 4
    /// saved them, or `model.language_model.` + `lm_head.` as transformers 5 does).
    /// `stored` says whether the file holds a tensor (none yet: transformers 5's layout).
    pub fn weight_names(&self, stored: impl Fn(&str) -> bool) -> WeightNames<'static> {
        if self.wrapper.is_none() {
            return WeightNames::default();
        }
        if stored("language_model.model.embed_tokens.weight") {
            WeightNames {
                model: Some("language_model.model."),
                lm_head: "language_model.",
                renames: &[],
            }
        } else {
            WeightNames {
                model: Some("model.language_model."),
                lm_head: "",
                renames: &[],
            }
        }
    }

    /// Builds the model.
    pub fn build(&self, config: ModelConfig, ctx: &LoadContext<'_>) -> Result<Box<dyn CausalLM>> {
        match self.entry.build {
            Build::Decoder => Ok(Box::new(decoder::Decoder::load(config, ctx)?)),
            Build::Custom { load, .. } => load(config, &self.file(), ctx),
        }
    }

    /// The tensors the model reads, under their stored names.
    pub fn tensor_specs(&self, config: &ModelConfig) -> Result<Vec<TensorSpec>> {
        match self.entry.build {
            Build::Decoder => Ok(decoder::tensor_specs(config)),
            Build::Custom { tensors, .. } => tensors(config, &self.file()),
        }
    }
}

/// Finds the row for `file`'s `model_type` (through `text_config` for a wrapper), or an error
/// listing the supported ones.
pub fn resolve<'a>(file: &ConfigFile<'a>) -> Result<Resolved<'a>> {
    if !file.value.is_object() {
        return Err(file.err("expected a JSON object".into()));
    }
    let model_type = file
        .str_field("model_type")?
        .ok_or_else(|| file.err("`model_type` is missing".into()))?;
    let unknown = |model_type: &str| Error::UnknownModelType {
        path: file.path.to_path_buf(),
        model_type: model_type.to_string(),
        supported: supported(),
    };
    if let Some(entry) = entry(model_type) {
        return Ok(Resolved {
            entry,
            text: file.value,
            path: file.path,
            wrapper: None,
        });
    }
    let wrapper = WRAPPERS
        .iter()
        .find(|w| w.model_type == model_type)
        .ok_or_else(|| unknown(model_type))?;
    let text = match file.value.get("text_config") {
        Some(t @ Value::Object(_)) => t,
        Some(other) => {
            return Err(file.err(format!("`text_config` must be an object, got {other}")))
        }
        None => return Err(file.err("`text_config` is missing".into())),
    };
    let text_file = ConfigFile {
        value: text,
        path: file.path,
        prefix: "text_config.",
    };
    let text_type = text_file
        .str_field("model_type")?
        .unwrap_or(wrapper.text_model_type);
    let entry = entry(text_type).ok_or_else(|| unknown(text_type))?;
    Ok(Resolved {
        entry,
        text,
        path: file.path,
        wrapper: Some((wrapper, file.value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_has_exactly_one_row() {
        use Architecture::*;
        let all = [
            Gpt2, Llama, Mistral, Qwen2, Gemma2, Qwen3, Gemma3, Phi3, SmolLM3, Olmo2, Granite,
            Ministral3, Qwen3Moe, Mixtral, GptOss, Qwen3_5, Qwen3_5Moe, Qwen3Next, Lfm2, Gemma4,
            T5, Mt5, Bart, MBart, Marian, Whisper,
        ];
        for a in all {
            // Exhaustive: a new variant does not compile until it is listed above.
            match a {
                Gpt2 | Llama | Mistral | Qwen2 | Gemma2 | Qwen3 | Gemma3 | Phi3 | SmolLM3
                | Olmo2 | Granite | Ministral3 | Qwen3Moe | Mixtral | GptOss | Qwen3_5
                | Qwen3_5Moe | Qwen3Next | Lfm2 | Gemma4 | T5 | Mt5 | Bart | MBart | Marian
                | Whisper => {}
            }
            let rows = ARCHITECTURES.iter().filter(|e| e.architecture == a).count();
            assert_eq!(rows, 1, "{a:?}");
            assert_eq!(entry_of(a).architecture, a);
        }
        let mut types: Vec<&str> = ARCHITECTURES.iter().map(|e| e.model_type).collect();
        types.extend(WRAPPERS.iter().map(|w| w.model_type));
        let n = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), n, "a model_type appears twice");
    }
}
