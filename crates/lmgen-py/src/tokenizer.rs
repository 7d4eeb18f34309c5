//! `NativeTokenizer`: the library's tokenizer (`tokenizer.json`, special tokens, chat template).

use std::sync::Arc;

use lmgen::{TokenId, Tokenizer};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::to_py;

#[pyclass(module = "lmgen._lmgen", frozen)]
pub struct NativeTokenizer {
    pub tokenizer: Arc<Tokenizer>,
}

#[pymethods]
impl NativeTokenizer {
    /// Loads the tokenizer of a checkpoint directory or a model id (HF cache).
    #[new]
    fn new(py: Python<'_>, path_or_id: String) -> PyResult<Self> {
        let tokenizer = py
            .detach(|| {
                let dir = lmgen::load::resolve_model(&path_or_id)?;
                Tokenizer::from_dir(&dir)
            })
            .map_err(to_py)?;
        Ok(Self {
            tokenizer: Arc::new(tokenizer),
        })
    }

    #[pyo3(signature = (text, add_special_tokens=true))]
    fn encode(&self, text: &str, add_special_tokens: bool) -> PyResult<Vec<TokenId>> {
        self.tokenizer
            .encode_with(text, add_special_tokens)
            .map_err(to_py)
    }

    #[pyo3(signature = (ids, skip_special_tokens=false))]
    fn decode(&self, ids: Vec<TokenId>, skip_special_tokens: bool) -> PyResult<String> {
        self.tokenizer
            .decode(&ids, skip_special_tokens)
            .map_err(to_py)
    }

    fn token_to_id(&self, token: &str) -> Option<TokenId> {
        self.tokenizer.token_to_id(token)
    }

    fn id_to_token(&self, id: TokenId) -> Option<String> {
        self.tokenizer.inner().id_to_token(id)
    }

    #[getter]
    fn eos_token_id(&self) -> Option<TokenId> {
        self.tokenizer.eos_token_id()
    }

    #[getter]
    fn bos_token_id(&self) -> Option<TokenId> {
        self.tokenizer.bos_token_id()
    }

    #[getter]
    fn pad_token_id(&self) -> Option<TokenId> {
        self.tokenizer.pad_token_id()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt, **kwargs)`:
    /// `messages_json` and `extra_json` are JSON (a list of messages, an object of template
    /// variables).
    fn apply_chat_template(
        &self,
        messages_json: &str,
        add_generation_prompt: bool,
        extra_json: &str,
    ) -> PyResult<String> {
        let bad = |e: serde_json::Error| PyValueError::new_err(format!("not JSON: {e}"));
        let messages: Vec<serde_json::Value> = serde_json::from_str(messages_json).map_err(bad)?;
        let extra: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(extra_json).map_err(bad)?;
        self.tokenizer
            .apply_chat_template(&messages, add_generation_prompt, &extra)
            .map_err(to_py)
    }
}
