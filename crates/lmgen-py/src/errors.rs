//! lmgen errors as the Python exceptions transformers raises in the same places.

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

/// `ValueError` for a bad generation config or bad inputs (the message names the field, as
/// transformers' messages do), `OSError` for a checkpoint that cannot be found or read (as
/// `from_pretrained`), `RuntimeError` otherwise.
pub fn to_py(e: lmgen::Error) -> PyErr {
    use lmgen::Error as E;
    let message = e.to_string();
    match e {
        E::GenerationConfig { .. } | E::Unsupported { .. } | E::Input { .. } | E::Device { .. } => {
            PyValueError::new_err(message)
        }
        E::Io { .. } | E::ModelNotFound { .. } | E::Download { .. } | E::Json { .. } => {
            PyOSError::new_err(message)
        }
        _ => PyRuntimeError::new_err(message),
    }
}
