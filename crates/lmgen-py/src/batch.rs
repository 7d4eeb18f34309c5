//! HF `ContinuousBatchingManager` for Python (`model.init_continuous_batching()`): requests go to
//! the library's engine, which runs on its own worker thread; `get_result` waits without the GIL.

use std::time::Duration;

use lmgen::engine::{ContinuousBatchingManager, EngineConfig, GenerationOutput, Request};
use lmgen::GenerationConfig;
use lmgen::TokenId;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::to_py;
use crate::model::NativeModel;

/// The engine's defaults with the caller's pool size and token budget.
pub fn engine_config(num_blocks: Option<usize>, max_batch_tokens: Option<usize>) -> EngineConfig {
    let mut engine = EngineConfig::default();
    if let Some(n) = num_blocks {
        engine.cache.num_blocks = n;
    }
    if let Some(n) = max_batch_tokens {
        engine.max_batch_tokens = n;
    }
    engine
}

fn duration(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        Some(t) if !(t.is_finite() && t >= 0.0) => Err(PyValueError::new_err(format!(
            "`timeout` must be a non-negative number of seconds, got {t}"
        ))),
        t => Ok(t.map(Duration::from_secs_f64)),
    }
}

/// The library's continuous-batching manager with the generation config requests start from.
#[pyclass(module = "lmgen._lmgen", frozen)]
pub struct NativeManager {
    manager: ContinuousBatchingManager,
    generation_config: GenerationConfig,
}

#[pymethods]
impl NativeManager {
    #[new]
    #[pyo3(signature = (model, config_json, num_blocks=None, max_batch_tokens=None))]
    fn new(
        model: &NativeModel,
        config_json: &str,
        num_blocks: Option<usize>,
        max_batch_tokens: Option<usize>,
    ) -> PyResult<Self> {
        let value: serde_json::Value = serde_json::from_str(config_json)
            .map_err(|e| PyValueError::new_err(format!("generation config is not JSON: {e}")))?;
        let overrides =
            GenerationConfig::from_json(&value, lmgen::generation::config::UnknownFields::Reject)
                .map_err(to_py)?;
        let mut generation_config = model.generation_config.clone();
        generation_config.update(&overrides);
        let manager = ContinuousBatchingManager::new(
            model.model.clone(),
            engine_config(num_blocks, max_batch_tokens),
            model.model.dtype(),
            Some(model.tokenizer.as_ref()),
        )
        .map_err(to_py)?;
        Ok(Self {
            manager,
            generation_config,
        })
    }

    fn start(&self) -> PyResult<()> {
        self.manager.start().map_err(to_py)
    }

    fn is_running(&self) -> bool {
        self.manager.is_running()
    }

    /// Queues a prompt; `max_new_tokens` overrides the manager's config for this request.
    #[pyo3(signature = (input_ids, request_id=None, max_new_tokens=None, seed=None))]
    fn add_request(
        &self,
        input_ids: Vec<TokenId>,
        request_id: Option<String>,
        max_new_tokens: Option<usize>,
        seed: Option<u64>,
    ) -> PyResult<String> {
        let mut config = self.generation_config.clone();
        if max_new_tokens.is_some() {
            config.max_new_tokens = max_new_tokens;
        }
        let mut request = Request::new(input_ids, config);
        request.request_id = request_id;
        request.seed = seed;
        self.manager.add_request(request).map_err(to_py)
    }

    fn cancel_request(&self, request_id: &str) {
        self.manager.cancel_request(request_id);
    }

    /// The result of `request_id` (`None`: the next to finish) as a dict, or `None` on timeout.
    #[pyo3(signature = (request_id=None, timeout=None))]
    fn get_result<'py>(
        &self,
        py: Python<'py>,
        request_id: Option<String>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let timeout = duration(timeout)?;
        let out = py.detach(|| self.manager.get_result(request_id.as_deref(), timeout));
        out.map(|o| result_dict(py, o)).transpose()
    }

    #[pyo3(signature = (block=true, timeout=None))]
    fn stop(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<()> {
        let timeout = duration(timeout)?;
        py.detach(|| self.manager.stop(block, timeout));
        Ok(())
    }
}

fn result_dict(py: Python<'_>, out: GenerationOutput) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("request_id", out.request_id)?;
    d.set_item("prompt_ids", out.prompt_ids)?;
    d.set_item("generated_tokens", out.generated_tokens)?;
    d.set_item("status", format!("{:?}", out.status).to_lowercase())?;
    d.set_item("finish_reason", out.finish_reason.map(|r| r.as_str()))?;
    d.set_item("error", out.error.map(|e| e.to_string()))?;
    Ok(d)
}
