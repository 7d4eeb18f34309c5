//! The models JSON-lines requests name (`"model"`, `"assistant_model"`), each loaded once for a
//! whole file of requests.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use lmgen::generation::structured::StructuredOutput;
use lmgen::load::{fetch_model, FileSet, HubOptions};
use lmgen::models::LoadOptions;
use lmgen::Pipeline;
use lmgen_server::ModelArgs;

/// Grammar compilers kept at most; past this the cache starts over (each one indexes the
/// vocabulary, and a file of requests with ever other end-of-sequence ids would grow it forever).
const MAX_COMPILERS: usize = 16;

/// Which models requests may name.
#[derive(Debug)]
enum Catalog {
    /// Any checkpoint directory or Hub id (downloaded when missing): the CLI.
    Any {
        /// Loaded for requests that name none.
        default: String,
    },
    /// One local checkpoint under one name, and nothing else (offline; the fuzz targets).
    One { name: String, dir: PathBuf },
}

/// Loaded pipelines by the name requests give them, so a file of requests loads each model once.
pub struct Models {
    loaded: HashMap<String, Pipeline>,
    /// Grammar compilers by model and end-of-sequence ids (building one indexes the vocabulary).
    structured: HashMap<(String, Vec<u32>), StructuredOutput>,
    catalog: Catalog,
    /// The default model's load options (`--dtype`, `--device`, `--gguf-file`...); other models
    /// get [`ModelArgs::other_model_options`] of them.
    options: LoadOptions,
}

impl Models {
    /// Any model a request names, `--model` (or the shipped one) for those naming none.
    pub fn new(args: &ModelArgs, options: &LoadOptions) -> Self {
        Self::any(args.model_or_default(), options.clone())
    }

    /// Any model a request names, `default` for those naming none.
    pub fn any(default: String, options: LoadOptions) -> Self {
        Self::with(Catalog::Any { default }, options)
    }

    /// Only the checkpoint in `dir`, named `name` (or not named) by requests; any other name is
    /// an error, and nothing is downloaded.
    pub fn only(name: &str, dir: PathBuf) -> Self {
        let name = name.to_string();
        Self::with(Catalog::One { name, dir }, LoadOptions::default())
    }

    fn with(catalog: Catalog, options: LoadOptions) -> Self {
        Self {
            loaded: HashMap::new(),
            structured: HashMap::new(),
            catalog,
            options,
        }
    }

    /// The name of a request's model (`None`: the default one).
    pub(crate) fn key(&self, model: Option<&str>) -> String {
        match (model, &self.catalog) {
            (Some(m), _) => m.to_string(),
            (None, Catalog::Any { default }) => default.clone(),
            (None, Catalog::One { name, .. }) => name.clone(),
        }
    }

    /// What to load for `key`, and with which options.
    fn source(&self, key: &str) -> Result<(String, LoadOptions)> {
        match &self.catalog {
            Catalog::Any { default } if key == default => {
                Ok((key.to_string(), self.options.clone()))
            }
            Catalog::Any { .. } => Ok((
                key.to_string(),
                ModelArgs::other_model_options(&self.options),
            )),
            Catalog::One { name, dir } if key == name => {
                Ok((dir.display().to_string(), self.options.clone()))
            }
            Catalog::One { name, .. } => {
                bail!("model `{key}` is not available here (only `{name}`)")
            }
        }
    }

    /// The checkpoint directory of a model (downloaded when missing), without loading it.
    pub(crate) fn checkpoint_dir(&self, model: &str) -> Result<PathBuf> {
        match &self.catalog {
            Catalog::Any { .. } => {
                let downloads = HubOptions {
                    progress: true,
                    ..HubOptions::default()
                };
                Ok(fetch_model(model, FileSet::Checkpoint, &downloads)?)
            }
            Catalog::One { name, dir } if model == name => Ok(dir.clone()),
            Catalog::One { name, .. } => {
                bail!("model `{model}` is not available here (only `{name}`)")
            }
        }
    }

    pub(crate) fn load(&mut self, key: &str) -> Result<()> {
        if !self.loaded.contains_key(key) {
            let (source, options) = self.source(key)?;
            let pipe = lmgen_server::model_args::load_pipeline(&source, &options)
                .with_context(|| format!("loading `{key}`"))?;
            self.loaded.insert(key.to_string(), pipe);
        }
        Ok(())
    }

    /// A request's model (`None`: the default one), loaded on first use.
    pub(crate) fn get(&mut self, model: Option<&str>) -> Result<&Pipeline> {
        let key = self.key(model);
        self.load(&key)?;
        self.loaded
            .get(&key)
            .ok_or_else(|| anyhow!("model `{key}` not loaded"))
    }

    /// The request's model and its assistant model.
    pub(crate) fn get_pair(
        &mut self,
        model: Option<&str>,
        assistant: &str,
    ) -> Result<(&Pipeline, &Pipeline)> {
        let key = self.key(model);
        self.load(&key)?;
        self.load(assistant).context("`assistant_model`")?;
        match (self.loaded.get(&key), self.loaded.get(assistant)) {
            (Some(target), Some(draft)) => Ok((target, draft)),
            _ => bail!("model `{key}` or `{assistant}` not loaded"),
        }
    }

    /// The grammar compiler of a loaded model for a generation config (its end-of-sequence
    /// ids), built on first use.
    pub(crate) fn structured_output(
        &mut self,
        key: &str,
        config: &lmgen::GenerationConfig,
    ) -> Result<StructuredOutput> {
        self.load(key)?;
        let pipe = self
            .loaded
            .get(key)
            .ok_or_else(|| anyhow!("model `{key}` not loaded"))?;
        let cache_key = (key.to_string(), pipe.config_with(config).eos_token_ids());
        if let Some(c) = self.structured.get(&cache_key) {
            return Ok(c.clone());
        }
        let c = pipe.structured_output(config).context("`structured`")?;
        if self.structured.len() >= MAX_COMPILERS {
            self.structured.clear();
        }
        self.structured.insert(cache_key, c.clone());
        Ok(c)
    }
}
