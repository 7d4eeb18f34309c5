//! `lmgen._lmgen`: the native half of the `lmgen` Python package (transformers' `generate()` API
//! on lmgen). It converts Python values into the library's types and calls its public API; the
//! transformers-shaped classes (`AutoModelForCausalLM`, `GenerationConfig`, output objects,
//! `pipeline`) are thin Python in `python/lmgen/`.
//!
//! The GIL is released while the library runs; Python callables (logits processors, stopping
//! criteria, streamers) take it back for each call.

use pyo3::prelude::*;

mod batch;
mod callbacks;
mod errors;
mod model;
mod streamer;
mod tokenizer;

#[pymodule]
fn _lmgen(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::NativeModel>()?;
    m.add_class::<streamer::NativeTextIteratorStreamer>()?;
    m.add_class::<batch::NativeManager>()?;
    m.add_class::<tokenizer::NativeTokenizer>()?;
    m.add_function(wrap_pyfunction!(model::parse_generation_config, m)?)?;
    m.add_function(wrap_pyfunction!(
        model::generation_config_from_pretrained,
        m
    )?)?;
    Ok(())
}
