//! `generate_batch`: a list of prompts through the continuous batching engine in one call, with a
//! progress bar (transformers' `ContinuousMixin.generate_batch`).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::manager::ContinuousBatchingManager;
use super::request::{GenerationOutput, Request};
use super::EngineConfig;
use crate::error::{Error, Result};
use crate::generation::GenerationConfig;
use crate::models::{CausalLM, DType};
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// What `generate_batch` takes besides the model and the prompts.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions<'a> {
    /// The engine's pool, scheduler and budgets.
    pub engine: EngineConfig,
    /// Keys and values dtype (the model's compute dtype); `None` = f32.
    pub dtype: Option<DType>,
    /// For `stop_strings`.
    pub tokenizer: Option<&'a Tokenizer>,
    /// Draw a progress bar on stderr (transformers' `progress_bar=True`).
    pub progress_bar: bool,
    /// Seed of request `i` is `seed + i` when sampling.
    pub seed: Option<u64>,
}

/// Generates for every prompt with one `generation_config`, all continuously batched; the outputs
/// come back in prompt order (transformers returns a dict keyed by request id `req_<i>`; the ids
/// here are the same).
pub fn generate_batch(
    model: Arc<dyn CausalLM>,
    inputs: &[Vec<TokenId>],
    generation_config: &GenerationConfig,
    options: BatchOptions<'_>,
) -> Result<Vec<GenerationOutput>> {
    let dtype = options.dtype.unwrap_or(DType::F32);
    let manager = ContinuousBatchingManager::new(model, options.engine, dtype, options.tokenizer)?;
    manager.start()?;
    let mut ids = Vec::with_capacity(inputs.len());
    for (i, prompt) in inputs.iter().enumerate() {
        let mut request = Request::new(prompt.clone(), generation_config.clone());
        request.request_id = Some(format!("req_{i}"));
        request.seed = options.seed.map(|s| s.wrapping_add(i as u64));
        ids.push(manager.add_request(request)?);
    }
    let bar = if options.progress_bar {
        let bar = ProgressBar::new(inputs.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{elapsed_precise}] {bar:40} {pos}/{len} requests")
        {
            bar.set_style(style);
        }
        bar.set_message("generate_batch");
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut outputs = Vec::with_capacity(ids.len());
    for id in &ids {
        let out = manager.get_result(Some(id), None).ok_or_else(|| {
            Error::input(format!("request `{id}` got no result (engine stopped)"))
        })?;
        bar.inc(1);
        outputs.push(out);
    }
    bar.finish_and_clear();
    manager.stop(true, Some(Duration::from_secs(10)));
    Ok(outputs)
}
