//! The library's `TextIteratorStreamer` for Python: `generate()` feeds it on the engine's thread
//! without the GIL; Python iterates its chunks on another thread (`__next__` waits without the GIL).

use std::sync::Mutex;
use std::time::Duration;

use lmgen::generation::streamer::{TextIterator, TextIteratorStreamer, TextStreamerOptions};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::tokenizer::NativeTokenizer;

/// HF `TextIteratorStreamer(tokenizer, skip_prompt, timeout, skip_special_tokens=...)`.
#[pyclass(module = "lmgen._lmgen", frozen)]
pub struct NativeTextIteratorStreamer {
    pub streamer: Mutex<TextIteratorStreamer>,
    chunks: Mutex<TextIterator>,
}

#[pymethods]
impl NativeTextIteratorStreamer {
    #[new]
    #[pyo3(signature = (tokenizer, skip_prompt, skip_special_tokens, timeout=None))]
    fn new(
        tokenizer: &NativeTokenizer,
        skip_prompt: bool,
        skip_special_tokens: bool,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let timeout = match timeout {
            Some(t) if !(t.is_finite() && t >= 0.0) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "`timeout` must be a non-negative number of seconds, got {t}"
                )))
            }
            t => t.map(Duration::from_secs_f64),
        };
        let options = TextStreamerOptions {
            skip_prompt,
            skip_special_tokens,
        };
        let (streamer, chunks) =
            TextIteratorStreamer::channel(tokenizer.tokenizer.clone(), options, timeout);
        Ok(Self {
            streamer: Mutex::new(streamer),
            chunks: Mutex::new(chunks),
        })
    }

    /// The next chunk, or `None` at the end (or on timeout: see `timed_out`).
    fn next_chunk(&self, py: Python<'_>) -> PyResult<Option<String>> {
        py.detach(|| {
            let mut chunks = self
                .chunks
                .lock()
                .map_err(|_| PyRuntimeError::new_err("the streamer's iterator was poisoned"))?;
            Ok(chunks.next())
        })
    }

    /// Whether the last `next_chunk` ended because the timeout passed.
    fn timed_out(&self) -> bool {
        self.chunks.lock().map(|c| c.timed_out()).unwrap_or(false)
    }
}
