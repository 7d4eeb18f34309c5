//! `NativeModel`: a loaded checkpoint (model, tokenizer, generation defaults) and `generate()`.

use std::path::Path;
use std::sync::Arc;

use lmgen::generation::config::UnknownFields;
use lmgen::generation::streamer::TokenStreamer;
use lmgen::generation::{
    generate_seq2seq, EncoderInputs, GenerateOptions, Scores, Seq2SeqInput, StoppingCriterion,
};
use lmgen::models::{AttnImplementation, CausalLM, DType, LoadOptions, Quantization};
use lmgen::{GenerateInput, GenerateOutput, GenerationConfig, Pipeline, TokenId, Tokenizer};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::callbacks::{PyLogitsProcessor, PyStoppingCriterion, PyStreamer, Raised};
use crate::errors::to_py;
use crate::streamer::NativeTextIteratorStreamer;
use crate::tokenizer::NativeTokenizer;

/// A checkpoint loaded for generation. The model is shared (`Arc`) so that the batching engine
/// can hold it too.
#[pyclass(module = "lmgen._lmgen", frozen)]
pub struct NativeModel {
    pub model: Arc<dyn CausalLM>,
    pub tokenizer: Arc<Tokenizer>,
    pub generation_config: GenerationConfig,
    dir: String,
}

/// A torch / transformers dtype name (`"float32"`, `"torch.bfloat16"`, `"auto"`) as a candle dtype;
/// `None` keeps the checkpoint's `torch_dtype` / `dtype`.
fn parse_dtype(name: &str) -> PyResult<Option<DType>> {
    let name = name.strip_prefix("torch.").unwrap_or(name);
    Ok(Some(match name {
        "auto" => return Ok(None),
        "float32" | "float" | "fp32" | "f32" => DType::F32,
        "bfloat16" | "bf16" => DType::BF16,
        "float16" | "half" | "fp16" | "f16" => DType::F16,
        other => {
            return Err(PyValueError::new_err(format!(
                "`dtype` must be \"auto\", \"float32\", \"bfloat16\" or \"float16\", got {other:?}"
            )))
        }
    }))
}

/// A caller's `generate()` config overrides: JSON of the set fields, parsed by the library
/// (unknown keys are rejected with the key's name, as transformers rejects unused kwargs).
fn parse_overrides(json: &str) -> PyResult<GenerationConfig> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| PyValueError::new_err(format!("generation config is not JSON: {e}")))?;
    GenerationConfig::from_json(&value, UnknownFields::Reject).map_err(to_py)
}

/// Checks a generation config (JSON of the set fields) the way `generate()` will read it, and
/// returns it normalised (the library's JSON of the set fields).
#[pyfunction]
pub fn parse_generation_config(json: &str) -> PyResult<String> {
    parse_overrides(json)?.to_json_string().map_err(to_py)
}

/// A directory's `generation_config.json` (or `config.json`'s generation fields) as JSON.
#[pyfunction]
pub fn generation_config_from_pretrained(dir: &str) -> PyResult<String> {
    GenerationConfig::from_pretrained(Path::new(dir))
        .and_then(|c| c.to_json_string())
        .map_err(to_py)
}

/// Little-endian f32 bytes of `[steps][b, vocab]` scores.
fn steps_bytes<'py>(py: Python<'py>, steps: &[Scores]) -> Bound<'py, PyBytes> {
    let bytes: Vec<u8> = steps
        .iter()
        .flat_map(|s| s.data.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    PyBytes::new(py, &bytes)
}

/// A tensor for Python: the bytes of its f32 values and its shape.
type TensorBytes<'py> = (Bound<'py, PyBytes>, Vec<usize>);

/// `[steps][layers]` tensors as nested lists of [`TensorBytes`].
fn per_step_tensors<'py>(
    py: Python<'py>,
    steps: &[Vec<candle_core::Tensor>],
) -> PyResult<Vec<Vec<TensorBytes<'py>>>> {
    steps
        .iter()
        .map(|layers| {
            layers
                .iter()
                .map(|t| {
                    let values: Vec<f32> = t
                        .to_dtype(candle_core::DType::F32)
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_vec1())
                        .map_err(|e| to_py(lmgen::Error::from(e)))?;
                    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Ok((PyBytes::new(py, &bytes), t.dims().to_vec()))
                })
                .collect()
        })
        .collect()
}

/// The Python callbacks of one `generate()` call.
struct Callbacks {
    logits_processors: Vec<Py<PyAny>>,
    stopping_criteria: Vec<Py<PyAny>>,
    streamer: Option<Py<PyAny>>,
}

#[pymethods]
impl NativeModel {
    /// Loads a checkpoint directory, a `.gguf` file or a model id (HF cache).
    #[new]
    #[pyo3(signature = (path_or_id, dtype=None, device=None, quantize=None, attn_implementation=None))]
    fn new(
        py: Python<'_>,
        path_or_id: String,
        dtype: Option<String>,
        device: Option<String>,
        quantize: Option<String>,
        attn_implementation: Option<String>,
    ) -> PyResult<Self> {
        let attn_implementation = match attn_implementation.as_deref() {
            None | Some("sdpa") => AttnImplementation::Sdpa,
            Some("eager") => AttnImplementation::Eager,
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "`attn_implementation` must be \"sdpa\" or \"eager\", got {other:?}"
                )))
            }
        };
        let options = LoadOptions {
            attn_implementation,
            dtype: match &dtype {
                Some(d) => parse_dtype(d)?,
                None => None,
            },
            device: lmgen::device::parse(device.as_deref().unwrap_or("cpu")).map_err(to_py)?,
            quantize: quantize
                .as_deref()
                .map(Quantization::parse)
                .transpose()
                .map_err(to_py)?,
            ..LoadOptions::default()
        };
        let pipe = py
            .detach(|| Pipeline::load(&path_or_id, &options))
            .map_err(to_py)?;
        let Pipeline {
            model,
            tokenizer,
            generation_config,
            dir,
        } = pipe;
        Ok(Self {
            model: Arc::from(model),
            tokenizer: Arc::new(tokenizer),
            generation_config,
            dir: dir.display().to_string(),
        })
    }

    /// The checkpoint directory.
    #[getter]
    fn dir(&self) -> &str {
        &self.dir
    }

    /// The checkpoint's generation defaults as JSON (the set fields).
    fn generation_config_json(&self) -> PyResult<String> {
        self.generation_config.to_json_string().map_err(to_py)
    }

    /// Whether the model is an encoder-decoder one (T5, BART, Marian, Whisper).
    #[getter]
    fn is_encoder_decoder(&self) -> bool {
        self.model.encoder().is_some()
    }

    /// `config.json`'s `vocab_size`.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// The checkpoint's tokenizer (shared, not reloaded).
    #[getter]
    fn tokenizer(&self) -> NativeTokenizer {
        NativeTokenizer {
            tokenizer: self.tokenizer.clone(),
        }
    }

    /// `generate()`: `config_json` holds the caller's overrides (JSON of the set fields) applied on
    /// top of the checkpoint's generation config. Returns a dict: `sequences`, `prompt_len`, and,
    /// when requested, `scores` / `logits` (bytes of `[steps][b, vocab]` f32), `sequences_scores`,
    /// `beam_indices`, `finish_reasons`.
    ///
    /// Encoder-decoder models take `input_ids` as the encoder's input, or `input_features` (the
    /// bytes of a `[b, n_mels, frames]` f32 array and that shape) for audio, and optionally
    /// `decoder_input_ids`.
    #[pyo3(signature = (input_ids, attention_mask, config_json, seed=None, logits_processors=Vec::new(),
        stopping_criteria=Vec::new(), streamer=None, assistant=None, decoder_input_ids=None,
        input_features=None))]
    #[allow(clippy::too_many_arguments)] // transformers' generate() arguments, one for one
    fn generate<'py>(
        &self,
        py: Python<'py>,
        input_ids: Option<Vec<Vec<TokenId>>>,
        attention_mask: Option<Vec<Vec<u8>>>,
        config_json: &str,
        seed: Option<u64>,
        logits_processors: Vec<Py<PyAny>>,
        stopping_criteria: Vec<Py<PyAny>>,
        streamer: Option<Bound<'py, PyAny>>,
        assistant: Option<PyRef<'py, NativeModel>>,
        decoder_input_ids: Option<Vec<Vec<TokenId>>>,
        input_features: Option<(Vec<u8>, (usize, usize, usize))>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let overrides = parse_overrides(config_json)?;
        let mut config = self.generation_config.clone();
        config.update(&overrides);
        let input = match (input_ids, input_features) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "pass either `input_ids` or `input_features`, not both",
                ))
            }
            (None, None) => {
                return Err(PyValueError::new_err(
                    "`input_ids` is required (or `input_features` for an audio model)",
                ))
            }
            (Some(input_ids), None) => {
                let prompt = GenerateInput {
                    input_ids,
                    attention_mask,
                };
                match decoder_input_ids {
                    None => Input::Prompt(prompt),
                    Some(decoder) => Input::Seq2Seq(Seq2SeqInput {
                        encoder: EncoderInputs::Ids(prompt),
                        decoder_input_ids: Some(decoder),
                        decoder_attention_mask: None,
                    }),
                }
            }
            (None, Some((bytes, shape))) => {
                let (b, mels, frames) = shape;
                if bytes.len() != b * mels * frames * 4 {
                    return Err(PyValueError::new_err(format!(
                        "`input_features`: {} bytes do not hold a float32 [{b}, {mels}, {frames}] array",
                        bytes.len()
                    )));
                }
                let values: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let features = candle_core::Tensor::from_vec(
                    values,
                    (b, mels, frames),
                    &candle_core::Device::Cpu,
                )
                .map_err(|e| to_py(lmgen::Error::from(e)))?;
                Input::Seq2Seq(Seq2SeqInput {
                    encoder: EncoderInputs::Features(features),
                    decoder_input_ids,
                    decoder_attention_mask: None,
                })
            }
        };
        // The library's own streamer runs without the GIL; any other object is called through it.
        let native = match &streamer {
            Some(s) => s.cast::<NativeTextIteratorStreamer>().ok().map(|b| b.get()),
            None => None,
        };
        let callbacks = Callbacks {
            logits_processors,
            stopping_criteria,
            streamer: match (&native, &streamer) {
                (None, Some(s)) => Some(s.clone().unbind()),
                _ => None,
            },
        };
        let assistant = assistant.as_deref();
        let raised = Raised::default();
        let result = py.detach(|| {
            self.run(
                &input,
                &config,
                seed,
                callbacks,
                native,
                assistant,
                raised.clone(),
            )
        });
        if let Some(err) = raised.take() {
            return Err(err);
        }
        let out = result.map_err(to_py)?;
        output_dict(py, &out)
    }

    /// `generate_batch()`: each prompt through the continuous-batching engine; returns the
    /// generated tokens of each (prompt excluded), in order.
    #[pyo3(signature = (inputs, config_json, seed=None, num_blocks=None, max_batch_tokens=None))]
    fn generate_batch(
        &self,
        py: Python<'_>,
        inputs: Vec<Vec<TokenId>>,
        config_json: &str,
        seed: Option<u64>,
        num_blocks: Option<usize>,
        max_batch_tokens: Option<usize>,
    ) -> PyResult<Vec<Vec<TokenId>>> {
        let mut config = self.generation_config.clone();
        config.update(&parse_overrides(config_json)?);
        let engine = crate::batch::engine_config(num_blocks, max_batch_tokens);
        let options = lmgen::engine::BatchOptions {
            engine,
            dtype: Some(self.model.dtype()),
            tokenizer: Some(self.tokenizer.as_ref()),
            progress_bar: false,
            seed,
        };
        let outs = py
            .detach(|| lmgen::engine::generate_batch(self.model.clone(), &inputs, &config, options))
            .map_err(to_py)?;
        outs.into_iter()
            .map(|o| match o.error {
                Some(e) => Err(PyValueError::new_err(e.to_string())),
                None => Ok(o.generated_tokens),
            })
            .collect()
    }

    /// HF `compute_transition_scores(sequences, scores, beam_indices, normalize_logits)`, by the
    /// library's `GenerateOutput::compute_transition_scores`. `scores`: f32 bytes of
    /// `[steps][rows, vocab]`.
    #[pyo3(signature = (sequences, scores, rows, vocab, beam_indices=None, normalize_logits=false))]
    fn compute_transition_scores(
        &self,
        sequences: Vec<Vec<TokenId>>,
        scores: &[u8],
        rows: usize,
        vocab: usize,
        beam_indices: Option<Vec<Vec<i64>>>,
        normalize_logits: bool,
    ) -> PyResult<Vec<Vec<f32>>> {
        let step = rows * vocab * 4;
        if step == 0 || !scores.len().is_multiple_of(step) {
            return Err(PyValueError::new_err(format!(
                "`scores` must be steps of [{rows}, {vocab}] scores"
            )));
        }
        let steps: Vec<Scores> = scores
            .chunks_exact(step)
            .map(|c| {
                let data = c
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Scores::new(data, rows, vocab)
            })
            .collect();
        let seq_len = sequences.first().map_or(0, Vec::len);
        let Some(prompt_len) = seq_len.checked_sub(steps.len()) else {
            return Err(PyValueError::new_err(format!(
                "`sequences` of length {seq_len} are shorter than the {} steps of `scores`",
                steps.len()
            )));
        };
        if beam_indices.is_none() && sequences.len() != rows {
            return Err(PyValueError::new_err(format!(
                "`sequences` has {} rows but `scores` has {rows}",
                sequences.len()
            )));
        }
        let out = GenerateOutput {
            finish_reasons: vec![None; sequences.len()],
            sequences,
            scores: Some(steps),
            logits: None,
            prompt_len,
            sequences_scores: None,
            beam_indices,
            assisted: None,
            hidden_states: None,
            attentions: None,
        };
        out.compute_transition_scores(normalize_logits)
            .map_err(to_py)
    }
}

impl NativeModel {
    /// Runs `generate_with` with the Python callbacks behind the library's seams (no GIL held).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        input: &Input,
        config: &GenerationConfig,
        seed: Option<u64>,
        callbacks: Callbacks,
        native: Option<&NativeTextIteratorStreamer>,
        assistant: Option<&NativeModel>,
        raised: Raised,
    ) -> lmgen::Result<GenerateOutput> {
        let mut py_streamer = callbacks.streamer.map(|streamer| PyStreamer {
            streamer,
            raised: raised.clone(),
        });
        let mut native_guard = match native {
            Some(n) => Some(n.streamer.lock().map_err(|_| {
                lmgen::Error::input("`streamer` is in use by another generate() call")
            })?),
            None => None,
        };
        let streamer: Option<&mut dyn TokenStreamer> = match (&mut native_guard, &mut py_streamer) {
            (Some(g), _) => Some(&mut **g),
            (None, Some(p)) => Some(p),
            (None, None) => None,
        };
        let logits_processors = callbacks
            .logits_processors
            .into_iter()
            .map(|callback| {
                Box::new(PyLogitsProcessor {
                    callback,
                    raised: raised.clone(),
                }) as Box<dyn lmgen::generation::LogitsProcessor>
            })
            .collect();
        let stopping_criteria = callbacks
            .stopping_criteria
            .into_iter()
            .map(|callback| {
                Box::new(PyStoppingCriterion {
                    callback,
                    raised: raised.clone(),
                }) as Box<dyn StoppingCriterion>
            })
            .collect();
        let same_vocab = |a: &NativeModel| a.model.config().vocab_size == self.vocab_size();
        let options = GenerateOptions {
            seed,
            tokenizer: Some(self.tokenizer.as_ref()),
            model_generation_config: Some(&self.generation_config),
            logits_processors,
            stopping_criteria,
            streamer,
            assistant_model: assistant.map(|a| a.model.as_ref()),
            assistant_tokenizer: assistant
                .filter(|a| !same_vocab(a))
                .map(|a| a.tokenizer.as_ref()),
            ..GenerateOptions::default()
        };
        match input {
            Input::Prompt(input) => {
                lmgen::generation::generate_with(self.model.as_ref(), input, config, options)
            }
            Input::Seq2Seq(input) => generate_seq2seq(self.model.as_ref(), input, config, options),
        }
    }
}

/// `GenerateOutput` as a dict for the Python output classes.
fn output_dict<'py>(py: Python<'py>, out: &GenerateOutput) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("sequences", &out.sequences)?;
    d.set_item("prompt_len", out.prompt_len)?;
    let vocab = |s: &Option<Vec<Scores>>| {
        s.as_ref()
            .and_then(|s| s.first())
            .map(|s| (s.batch, s.vocab))
    };
    if let Some(steps) = &out.scores {
        d.set_item("scores", steps_bytes(py, steps))?;
        d.set_item("scores_shape", vocab(&out.scores))?;
    }
    if let Some(steps) = &out.logits {
        d.set_item("logits", steps_bytes(py, steps))?;
        d.set_item("logits_shape", vocab(&out.logits))?;
    }
    for (key, steps) in [
        ("hidden_states", &out.hidden_states),
        ("attentions", &out.attentions),
    ] {
        if let Some(steps) = steps {
            d.set_item(key, per_step_tensors(py, steps)?)?;
        }
    }
    d.set_item("sequences_scores", &out.sequences_scores)?;
    d.set_item("beam_indices", &out.beam_indices)?;
    let reasons: Vec<Option<&str>> = out
        .finish_reasons
        .iter()
        .map(|r| r.map(|r| r.as_str()))
        .collect();
    d.set_item("finish_reasons", reasons)?;
    Ok(d)
}

/// What a `generate()` call generates from.
enum Input {
    /// A prompt: a decoder-only model's, or an encoder-decoder model's encoder input.
    Prompt(GenerateInput),
    /// An encoder-decoder model's encoder input with a decoder prompt, or audio features.
    Seq2Seq(Seq2SeqInput),
}
