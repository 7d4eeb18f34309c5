//! Python callables behind the library's seams: [`LogitsProcessor`], [`StoppingCriterion`] and
//! [`TokenStreamer`]. Each call takes the GIL; a Python exception is kept in a [`Raised`] slot and
//! the library sees an error, which stops generation; `generate()` then re-raises the original.

use std::sync::{Arc, Mutex};

use lmgen::generation::streamer::TokenStreamer;
use lmgen::generation::{FinishReason, LogitsProcessor, Scores, StoppingCriterion};
use lmgen::TokenId;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The first Python exception a callback raised during one `generate()`.
#[derive(Clone, Default)]
pub struct Raised(Arc<Mutex<Option<PyErr>>>);

impl Raised {
    /// Keeps `err` (the first one wins) and returns the library error that stops generation.
    fn keep(&self, what: &str, err: PyErr) -> lmgen::Error {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(err);
        }
        lmgen::Error::input(format!("`{what}` raised a Python exception"))
    }

    /// The kept exception, if any.
    pub fn take(&self) -> Option<PyErr> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// A Python `logits_processor(input_ids, scores)`. The Python side (`lmgen._adapters`) receives
/// `input_ids` `[b][t]` as lists and `scores` `[b, vocab]` as little-endian f32 bytes, and returns
/// the new scores as bytes of the same size.
pub struct PyLogitsProcessor {
    pub callback: Py<PyAny>,
    pub raised: Raised,
}

impl LogitsProcessor for PyLogitsProcessor {
    fn process(&self, input_ids: &[Vec<TokenId>], scores: &mut Scores) -> lmgen::Result<()> {
        Python::attach(|py| {
            let bytes: Vec<u8> = scores.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            let out = self
                .callback
                .call1(
                    py,
                    (
                        input_ids.to_vec(),
                        PyBytes::new(py, &bytes),
                        scores.batch,
                        scores.vocab,
                    ),
                )
                .and_then(|o| Ok(o.bind(py).cast::<PyBytes>()?.as_bytes().to_vec()));
            let out = out.map_err(|e| self.raised.keep("logits_processor", e))?;
            if out.len() != bytes.len() {
                return Err(lmgen::Error::input(format!(
                    "`logits_processor` returned scores of {} values; expected [{}, {}]",
                    out.len() / 4,
                    scores.batch,
                    scores.vocab
                )));
            }
            for (x, b) in scores.data.iter_mut().zip(out.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            Ok(())
        })
    }

    fn type_name(&self) -> &'static str {
        "python"
    }
}

/// A Python stopping criterion, asked per row: `callback(tokens) -> bool` with the row's tokens
/// (prompt and generated). A true answer finishes the row as a stop.
pub struct PyStoppingCriterion {
    pub callback: Py<PyAny>,
    pub raised: Raised,
}

impl StoppingCriterion for PyStoppingCriterion {
    fn check(&mut self, tokens: &[TokenId]) -> Option<FinishReason> {
        Python::attach(|py| {
            let out = self
                .callback
                .call1(py, (tokens.to_vec(),))
                .and_then(|o| o.is_truthy(py));
            match out {
                Ok(true) => Some(FinishReason::StopString),
                Ok(false) => None,
                Err(e) => {
                    // The trait cannot fail: keep the exception and stop the row; generate()
                    // raises it afterwards.
                    self.raised.keep("stopping_criteria", e);
                    Some(FinishReason::StopString)
                }
            }
        })
    }
}

/// Any Python object with transformers' streamer protocol: `put(token_ids)` and `end()`.
pub struct PyStreamer {
    pub streamer: Py<PyAny>,
    pub raised: Raised,
}

impl TokenStreamer for PyStreamer {
    fn put(&mut self, tokens: &[TokenId]) -> lmgen::Result<()> {
        Python::attach(|py| {
            self.streamer
                .call_method1(py, "put", (tokens.to_vec(),))
                .map(drop)
                .map_err(|e| self.raised.keep("streamer", e))
        })
    }

    fn end(&mut self) -> lmgen::Result<()> {
        Python::attach(|py| {
            self.streamer
                .call_method0(py, "end")
                .map(drop)
                .map_err(|e| self.raised.keep("streamer", e))
        })
    }
}
