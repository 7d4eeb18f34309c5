//! Reading and writing generation configs: `generation_config.json`, or a model's `config.json`.
//!
//! Port of `GenerationConfig.from_pretrained`, `from_model_config` and `save_pretrained`
//! (`src/transformers/generation/configuration_utils.py`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{
    as_object, GenerationConfig, UnknownFields, DECODER_CONFIG_KEYS, GENERATION_CONFIG_NAME,
    MODEL_CONFIG_NAME,
};
use crate::error::{Error, Result};

impl GenerationConfig {
    /// Builds a generation config from a model's `config.json`, as transformers'
    /// `GenerationConfig.from_model_config` does for checkpoints without `generation_config.json`.
    ///
    /// Takes the non-null keys that are fields (token ids, and any generation setting stored there),
    /// then fills fields still unset from the first non-empty `decoder`, `generator` or `text_config`
    /// sub-object (multimodal and encoder-decoder configs), and sets `_from_model_config`. Other keys are
    /// ignored. As in transformers, `force_bos_token_to_be_generated` sets `forced_bos_token_id` to the
    /// BOS id, and any `output_*` flag set to true turns on `return_dict_in_generate`.
    pub(crate) fn from_model_config(model_config: &Value) -> Result<Self> {
        let object = as_object(model_config)?;
        let mut config = Self::default();
        for (key, value) in object {
            if key != "_from_model_config" {
                config.set_field(key, value)?;
            }
        }
        config.from_model_config = Some(true);
        if object
            .get("force_bos_token_to_be_generated")
            .is_some_and(is_truthy)
        {
            config.forced_bos_token_id = config.bos_token_id;
        }

        let decoder = DECODER_CONFIG_KEYS.iter().find_map(|key| {
            object
                .get(*key)
                .and_then(Value::as_object)
                .filter(|sub| !sub.is_empty())
        });
        if let Some(decoder) = decoder {
            let mut inner = Self::default();
            for (key, value) in decoder {
                if key != "_from_model_config" {
                    inner.set_field(key, value)?;
                }
            }
            config.fill_unset_from(&inner);
        }

        let output_flags = [
            config.output_attentions,
            config.output_hidden_states,
            config.output_scores,
            config.output_logits,
        ];
        if config.return_dict_in_generate != Some(true) && output_flags.contains(&Some(true)) {
            config.return_dict_in_generate = Some(true);
        }
        Ok(config)
    }

    /// Loads `dir/generation_config.json` (unknown keys kept), or, if that file is absent, builds the
    /// config from `dir/config.json` (transformers' `GenerationConfig.from_model_config`).
    ///
    /// Errors name the file. The result is not validated: validate the merged config
    /// ([`GenerationConfig::validate`]) once the caller's overrides are applied, as transformers does in
    /// `generate()`.
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let path = dir.join(GENERATION_CONFIG_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let json = parse_json_file(&path, &text)?;
                Self::from_json(&json, UnknownFields::Keep).map_err(|e| in_file(&path, e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let path = dir.join(MODEL_CONFIG_NAME);
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let json = parse_json_file(&path, &text)?;
                Self::from_model_config(&json).map_err(|e| in_file(&path, e))
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes `dir/generation_config.json` (creating `dir`): the set fields and the extra keys, as
    /// pretty JSON with sorted keys, like transformers' `save_pretrained` (which writes only the fields
    /// that differ from the all-unset default). Unlike transformers, `transformers_version` is written
    /// as it is, not stamped with a version.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(GENERATION_CONFIG_NAME);
        let text = self.to_json_string().map_err(|e| in_file(&path, e))?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }

    /// The set fields and extra keys as pretty JSON with sorted keys and a final newline.
    pub fn to_json_string(&self) -> Result<String> {
        let to_error = |e: serde_json::Error| Error::config(e.to_string());
        let value = serde_json::to_value(self).map_err(to_error)?;
        let sorted: BTreeMap<String, Value> = match value {
            Value::Object(object) => object.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        let mut text = serde_json::to_string_pretty(&sorted).map_err(to_error)?;
        text.push('\n');
        Ok(text)
    }
}

fn parse_json_file(path: &Path, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A field error found while reading `path`, reported against that file.
fn in_file(path: &Path, error: Error) -> Error {
    match error {
        Error::GenerationConfig { message, .. } => Error::Json {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

/// Python truthiness of a JSON value.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{EarlyStopping, TokenIds};
    use super::*;

    fn write(dir: &Path, name: &str, value: &Value) -> anyhow::Result<()> {
        std::fs::write(dir.join(name), serde_json::to_string(value)?)?;
        Ok(())
    }

    #[test]
    fn reads_generation_config_json_and_keeps_unknown_keys() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file =
            json!({"do_sample": true, "temperature": 0.6, "eos_token_id": [1, 2], "custom": "x"});
        write(dir.path(), GENERATION_CONFIG_NAME, &file)?;
        write(dir.path(), MODEL_CONFIG_NAME, &json!({"bos_token_id": 9}))?;
        let c = GenerationConfig::from_pretrained(dir.path())?;
        assert_eq!(c.do_sample, Some(true));
        assert_eq!(c.eos_token_id, Some(TokenIds::Many(vec![1, 2])));
        assert_eq!(c.extra.get("custom"), Some(&json!("x")));
        assert_eq!(
            c.bos_token_id, None,
            "config.json is not read when generation_config.json exists"
        );
        assert_eq!(c.from_model_config, None);
        Ok(())
    }

    #[test]
    fn falls_back_to_config_json() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let model = json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "bos_token_id": 1,
            "eos_token_id": 2, "pad_token_id": null, "max_length": 30, "use_cache": true,
            "output_hidden_states": true, "transformers_version": "4.40.0", "rope_scaling": null,
        });
        write(dir.path(), MODEL_CONFIG_NAME, &model)?;
        let c = GenerationConfig::from_pretrained(dir.path())?;
        let expected = GenerationConfig {
            bos_token_id: Some(1),
            eos_token_id: Some(TokenIds::One(2)),
            max_length: Some(30),
            use_cache: Some(true),
            output_hidden_states: Some(true),
            return_dict_in_generate: Some(true),
            transformers_version: Some("4.40.0".into()),
            from_model_config: Some(true),
            ..GenerationConfig::default()
        };
        assert_eq!(c, expected);
        Ok(())
    }

    #[test]
    fn fills_unset_fields_from_the_text_config() -> anyhow::Result<()> {
        let model = json!({
            "eos_token_id": 106, "force_bos_token_to_be_generated": true, "bos_token_id": 2,
            "vision_config": {"pad_token_id": 5},
            "text_config": {"eos_token_id": 1, "pad_token_id": 0, "hidden_size": 8},
        });
        let c = GenerationConfig::from_model_config(&model)?;
        assert_eq!(
            c.eos_token_id,
            Some(TokenIds::One(106)),
            "the outer config wins"
        );
        assert_eq!(c.pad_token_id, Some(0));
        assert_eq!(c.forced_bos_token_id, Some(2));
        assert_eq!(c.from_model_config, Some(true));
        Ok(())
    }

    #[test]
    fn errors_name_the_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let missing = GenerationConfig::from_pretrained(dir.path());
        assert!(
            matches!(&missing, Err(Error::Io { path, .. }) if path.ends_with(MODEL_CONFIG_NAME))
        );

        std::fs::write(dir.path().join(MODEL_CONFIG_NAME), "{not json")?;
        let invalid = GenerationConfig::from_pretrained(dir.path());
        assert!(
            matches!(&invalid, Err(Error::Json { path, .. }) if path.ends_with(MODEL_CONFIG_NAME))
        );

        write(
            dir.path(),
            GENERATION_CONFIG_NAME,
            &json!({"top_k": "many"}),
        )?;
        let err = GenerationConfig::from_pretrained(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(GENERATION_CONFIG_NAME) && err.contains("`top_k` must be"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn save_and_load_round_trip() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut c = GenerationConfig {
            early_stopping: Some(EarlyStopping::Never),
            eos_token_id: Some(TokenIds::Many(vec![1, 2])),
            sequence_bias: Some(vec![(vec![3, 4], -2.5)]),
            exponential_decay_length_penalty: Some((4, 1.1)),
            stop_strings: Some(vec!["\n\n".into()]),
            temperature: Some(0.7),
            transformers_version: Some("5.0.0".into()),
            ..GenerationConfig::default()
        };
        c.extra.insert("custom".into(), json!({"a": 1}));
        let out = dir.path().join("saved");
        c.save_pretrained(&out)?;
        assert_eq!(GenerationConfig::from_pretrained(&out)?, c);

        let text = std::fs::read_to_string(out.join(GENERATION_CONFIG_NAME))?;
        assert!(text.ends_with("}\n") && !text.contains("null"), "{text}");
        let custom = text.find("\"custom\"").unwrap_or(usize::MAX);
        let temperature = text.find("\"temperature\"").unwrap_or(0);
        assert!(custom < temperature, "keys are sorted: {text}");
        Ok(())
    }
}
