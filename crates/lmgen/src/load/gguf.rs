//! GGUF files (llama.cpp's format), read with candle's `quantized::gguf_file`: the metadata becomes
//! an HF `config.json`, the tensors are served under their HF names.
//!
//! transformers' `from_pretrained(model_id, gguf_file=...)` (`integrations/ggml.py`,
//! `modeling_gguf_pytorch_utils.py`) does the same mapping, then dequantizes everything; lmgen keeps
//! Q8_0, Q4_K and Q6_K weights in their blocks (see [`crate::models::quantize`]) and widens the
//! other block types to the compute dtype.
//!
//! Architectures: `llama` (which also covers Mistral, as llama.cpp writes it; GGUF keeps no sliding
//! window) and `qwen2`. llama.cpp's `convert_hf_to_gguf.py` permutes the rows of Llama's q and k
//! projections for its rotary layout (`LlamaModel.permute`: per head, HF's two halves
//! `[x0..x(d/2), y0..y(d/2)]` become interleaved pairs `[x0, y0, x1, y1, ..]`); lmgen computes
//! RoPE in HF's layout, so those rows are put back on load. A row permutation moves whole rows, and
//! a quantized row is a whole number of blocks, so quantized tensors are unpermuted exactly, block
//! rows moved as bytes. Qwen2 is not permuted.
//!
//! The vocabulary in the metadata is not read: the tokenizer comes from `tokenizer.json` in the
//! checkpoint directory.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value as Meta};
use candle_core::quantized::{ggml_file, GgmlDType};
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use serde_json::{json, Map, Value};

use super::{map_file, weights_error};
use crate::error::{Error, Result};
use crate::models::quantize::QuantizedWeight;

/// The `general.architecture` values lmgen loads.
const SUPPORTED: &str = "llama, qwen2";

/// GGUF per-layer tensor names (`blk.N.{gguf}`) and the HF module they hold (`model.layers.N.{hf}`).
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Top-level tensors: GGUF name, HF name.
const TOP_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// A GGUF architecture lmgen runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Llama,
    Qwen2,
}

/// An opened, validated GGUF file.
pub(crate) struct GgufWeights {
    path: PathBuf,
    mmap: Mmap,
    content: Content,
    arch: Arch,
    /// HF name -> GGUF name, for every tensor in the file.
    names: HashMap<String, String>,
    /// `attention.head_count` and `attention.head_count_kv`: the q and k row permutations.
    n_head: usize,
    n_kv_head: usize,
}

impl std::fmt::Debug for GgufWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWeights")
            .field("path", &self.path)
            .field("arch", &self.arch)
            .field("tensors", &self.names.len())
            .finish()
    }
}

/// The GGUF name of an HF tensor name, if it has one.
fn gguf_name(hf: &str) -> Option<String> {
    if let Some((g, _)) = TOP_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some((*g).to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, h)| *h == module)?;
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// The HF name of a GGUF tensor name, if lmgen's model has one.
fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, h)) = TOP_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some((*h).to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (_, h) = LAYER_NAMES.iter().find(|(g, _)| *g == module)?;
    Some(format!("model.layers.{layer}.{h}.{kind}"))
}

fn meta_u64(v: &Meta) -> Option<u64> {
    match v {
        Meta::U8(n) => Some(u64::from(*n)),
        Meta::U16(n) => Some(u64::from(*n)),
        Meta::U32(n) => Some(u64::from(*n)),
        Meta::U64(n) => Some(*n),
        Meta::I8(n) => u64::try_from(*n).ok(),
        Meta::I16(n) => u64::try_from(*n).ok(),
        Meta::I32(n) => u64::try_from(*n).ok(),
        Meta::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn meta_f64(v: &Meta) -> Option<f64> {
    match v {
        Meta::F32(x) => Some(f64::from(*x)),
        Meta::F64(x) => Some(*x),
        other => meta_u64(other).map(|n| n as f64),
    }
}

impl GgufWeights {
    /// Maps and parses `path`, checks the architecture and that every tensor is one lmgen's model
    /// has.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let mmap = map_file(path)?;
        let bad = |message: String| weights_error(path, message);
        let content = Content::read(&mut Cursor::new(&mmap[..]))
            .map_err(|e| bad(format!("not a valid GGUF file: {e}")))?;
        let arch_name = match content.metadata.get("general.architecture") {
            Some(Meta::String(s)) => s.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "metadata key `general.architecture` must be a string, got {other:?}"
                )))
            }
            None => return Err(bad("metadata key `general.architecture` is missing".into())),
        };
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            _ => {
                return Err(Error::UnknownModelType {
                    path: path.to_path_buf(),
                    model_type: arch_name,
                    supported: format!("{SUPPORTED} (GGUF `general.architecture`)"),
                })
            }
        };
        let mut names = HashMap::new();
        for gguf in content.tensor_infos.keys() {
            if gguf == "rope_freqs.weight" {
                return Err(Error::Unsupported(format!(
                    "`{}`: tensor `rope_freqs.weight` (Llama 3 RoPE frequency factors, \
                     rope_type \"llama3\") is not read from GGUF files yet; load the safetensors \
                     checkpoint instead",
                    path.display()
                )));
            }
            let hf = hf_name(gguf).ok_or_else(|| {
                bad(format!(
                    "tensor `{gguf}` has no counterpart in lmgen's `{arch_name}` model"
                ))
            })?;
            names.insert(hf, gguf.clone());
        }
        let mut weights = Self {
            path: path.to_path_buf(),
            mmap,
            content,
            arch,
            names,
            n_head: 0,
            n_kv_head: 0,
        };
        weights.n_head = weights.required_usize("attention.head_count")?;
        weights.n_kv_head = weights
            .opt_usize("attention.head_count_kv")?
            .unwrap_or(weights.n_head);
        Ok(weights)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn arch_prefix(&self) -> &'static str {
        match self.arch {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    fn config_err(&self, message: String) -> Error {
        Error::ModelConfig {
            path: self.path.clone(),
            message,
        }
    }

    fn meta(&self, key: &str) -> Option<&Meta> {
        self.content.metadata.get(key)
    }

    /// `{arch}.{key}` as an unsigned integer, if present.
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let full = format!("{}.{key}", self.arch_prefix());
        match self.meta(&full) {
            None => Ok(None),
            Some(v) => meta_u64(v)
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.config_err(format!(
                        "GGUF metadata key `{full}` must be an unsigned integer, got {v:?}"
                    ))
                }),
        }
    }

    fn required_usize(&self, key: &str) -> Result<usize> {
        match self.opt_usize(key)? {
            Some(n) if n > 0 => Ok(n),
            Some(_) => Err(self.config_err(format!(
                "GGUF metadata key `{}.{key}` must be greater than 0",
                self.arch_prefix()
            ))),
            None => Err(self.config_err(format!(
                "GGUF metadata key `{}.{key}` is missing",
                self.arch_prefix()
            ))),
        }
    }

    /// `{arch}.{key}` as a number, if present.
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let full = format!("{}.{key}", self.arch_prefix());
        match self.meta(&full) {
            None => Ok(None),
            Some(v) => meta_f64(v).map(Some).ok_or_else(|| {
                self.config_err(format!(
                    "GGUF metadata key `{full}` must be a number, got {v:?}"
                ))
            }),
        }
    }

    /// A token id from the tokenizer metadata (`tokenizer.ggml.{key}`), if present.
    fn token_id(&self, key: &str) -> Option<u64> {
        self.meta(&format!("tokenizer.ggml.{key}"))
            .and_then(meta_u64)
    }

    /// The HF `config.json` this file describes (transformers' `GGUF_CONFIG_MAPPING`).
    pub(crate) fn config_json(&self) -> Result<Value> {
        let hidden = self.required_usize("embedding_length")?;
        let head_dim = match self.opt_usize("attention.key_length")? {
            Some(d) => d,
            None => hidden / self.n_head,
        };
        if let Some(v) = self.opt_usize("attention.value_length")? {
            if v != head_dim {
                return Err(self.config_err(format!(
                    "GGUF metadata: `attention.value_length` ({v}) differs from \
                     `attention.key_length` ({head_dim}); lmgen's attention needs them equal"
                )));
            }
        }
        if let Some(rot) = self.opt_usize("rope.dimension_count")? {
            if rot != head_dim {
                return Err(Error::Unsupported(format!(
                    "`{}`: `{}.rope.dimension_count` is {rot} but the head dimension is \
                     {head_dim}; partial rotary embeddings are not implemented",
                    self.path.display(),
                    self.arch_prefix()
                )));
            }
        }
        let embed = self.names.get("model.embed_tokens.weight").ok_or_else(|| {
            weights_error(&self.path, "tensor `token_embd.weight` not found".into())
        })?;
        let vocab = self.content.tensor_infos[embed].shape.dims()[0];
        let mut config = Map::new();
        let model_type = self.arch_prefix();
        config.insert("model_type".into(), json!(model_type));
        config.insert("vocab_size".into(), json!(vocab));
        config.insert("hidden_size".into(), json!(hidden));
        config.insert(
            "intermediate_size".into(),
            json!(self.required_usize("feed_forward_length")?),
        );
        config.insert(
            "num_hidden_layers".into(),
            json!(self.required_usize("block_count")?),
        );
        config.insert("num_attention_heads".into(), json!(self.n_head));
        config.insert("num_key_value_heads".into(), json!(self.n_kv_head));
        config.insert("head_dim".into(), json!(head_dim));
        if let Some(n) = self.opt_usize("context_length")? {
            config.insert("max_position_embeddings".into(), json!(n));
        }
        let eps = self
            .opt_f64("attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| {
                self.config_err(format!(
                    "GGUF metadata key `{model_type}.attention.layer_norm_rms_epsilon` is missing"
                ))
            })?;
        config.insert("rms_norm_eps".into(), json!(eps));
        config.insert(
            "rope_theta".into(),
            json!(self.opt_f64("rope.freq_base")?.unwrap_or(10000.0)),
        );
        if let Some(scaling) = self.rope_scaling()? {
            config.insert("rope_scaling".into(), scaling);
        }
        config.insert(
            "tie_word_embeddings".into(),
            json!(!self.names.contains_key("lm_head.weight")),
        );
        if self.arch == Arch::Llama {
            let bias = self
                .names
                .contains_key("model.layers.0.self_attn.q_proj.bias");
            config.insert("attention_bias".into(), json!(bias));
        }
        config.insert("hidden_act".into(), json!("silu"));
        for (hf, key) in [
            ("bos_token_id", "bos_token_id"),
            ("eos_token_id", "eos_token_id"),
            ("pad_token_id", "padding_token_id"),
        ] {
            if let Some(id) = self.token_id(key) {
                config.insert(hf.into(), json!(id));
            }
        }
        Ok(Value::Object(config))
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*` (or the older `rope.scale_linear`).
    fn rope_scaling(&self) -> Result<Option<Value>> {
        let key = format!("{}.rope.scaling.type", self.arch_prefix());
        let kind = match self.meta(&key) {
            None => None,
            Some(Meta::String(s)) => Some(s.as_str()),
            Some(v) => {
                return Err(self.config_err(format!(
                    "GGUF metadata key `{key}` must be a string, got {v:?}"
                )))
            }
        };
        match kind {
            None | Some("none") => Ok(self
                .opt_f64("rope.scale_linear")?
                .filter(|f| *f != 1.0)
                .map(|factor| json!({"rope_type": "linear", "factor": factor}))),
            Some("linear") => {
                let factor = self.opt_f64("rope.scaling.factor")?.ok_or_else(|| {
                    self.config_err(format!(
                        "GGUF metadata key `{}.rope.scaling.factor` is missing for linear \
                         rope scaling",
                        self.arch_prefix()
                    ))
                })?;
                Ok(Some(json!({"rope_type": "linear", "factor": factor})))
            }
            Some(other) => Err(Error::Unsupported(format!(
                "`{}`: `{key}` = \"{other}\" is not implemented for GGUF files (supported: none, \
                 linear)",
                self.path.display()
            ))),
        }
    }

    /// Whether a tensor with this HF name is stored.
    pub(crate) fn contains(&self, hf: &str) -> bool {
        self.names.contains_key(hf)
    }

    /// HF names of every stored tensor.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The stored shape (HF order, `[out, in]`) of `hf`.
    pub(crate) fn shape(&self, hf: &str) -> Option<&[usize]> {
        let gguf = self.names.get(hf)?;
        Some(self.content.tensor_infos[gguf].shape.dims())
    }

    /// The stored dtype of `hf` when it is F32, F16 or BF16.
    pub(crate) fn disk_dtype(&self, hf: &str) -> Option<DType> {
        match self.content.tensor_infos[self.names.get(hf)?].ggml_dtype {
            GgmlDType::F32 => Some(DType::F32),
            GgmlDType::F16 => Some(DType::F16),
            GgmlDType::BF16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// Bytes of `hf` when stored in a block type the quantized layers keep (Q8_0, Q4_K, Q6_K).
    pub(crate) fn quantized_bytes(&self, hf: &str) -> Option<usize> {
        let info = &self.content.tensor_infos[self.names.get(hf)?];
        let dtype = info.ggml_dtype;
        QuantizedWeight::reads(dtype)
            .then(|| info.shape.elem_count() / dtype.block_size() * dtype.type_size())
    }

    /// The GGUF name of `hf`, or an error naming both.
    fn lookup(&self, hf: &str) -> Result<&str> {
        if let Some(g) = self.names.get(hf) {
            return Ok(g);
        }
        let message = match gguf_name(hf) {
            Some(g) => format!("tensor `{g}` (HF `{hf}`) not found"),
            None => format!("tensor `{hf}` not found (lmgen reads llama.cpp's tensor names)"),
        };
        Err(weights_error(&self.path, message))
    }

    /// The GGUF tensor behind `hf`, checked against `shape` when given: its name, block type,
    /// shape and raw bytes (bounds-checked).
    fn raw(&self, hf: &str, shape: Option<&[usize]>) -> Result<(&str, GgmlDType, &[usize], &[u8])> {
        let gguf = self.lookup(hf)?;
        let info = &self.content.tensor_infos[gguf];
        let dims = info.shape.dims();
        if let Some(shape) = shape {
            if dims != shape {
                return Err(weights_error(
                    &self.path,
                    format!(
                        "tensor `{gguf}` (HF `{hf}`) has shape {dims:?} but the GGUF metadata \
                         implies {shape:?}"
                    ),
                ));
            }
        }
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        if elems % dtype.block_size() != 0 {
            return Err(weights_error(
                &self.path,
                format!(
                    "tensor `{gguf}`: {elems} values do not split into {dtype:?} blocks of {}",
                    dtype.block_size()
                ),
            ));
        }
        let len = elems / dtype.block_size() * dtype.type_size();
        let start = usize::try_from(self.content.tensor_data_offset + info.offset).ok();
        let bytes = start
            .and_then(|s| self.mmap.get(s..s.checked_add(len)?))
            .ok_or_else(|| {
                weights_error(
                    &self.path,
                    format!("tensor `{gguf}`: data out of range: truncated file?"),
                )
            })?;
        Ok((gguf, dtype, dims, bytes))
    }

    /// For Llama's q and k projections: `perm[hf_row] = gguf_row` (undoes `LlamaModel.permute`).
    fn row_permutation(&self, hf: &str, rows: usize) -> Result<Option<Vec<usize>>> {
        if self.arch != Arch::Llama {
            return Ok(None);
        }
        let n_head = if hf.contains(".self_attn.q_proj.") {
            self.n_head
        } else if hf.contains(".self_attn.k_proj.") {
            self.n_kv_head
        } else {
            return Ok(None);
        };
        if rows % (2 * n_head) != 0 {
            return Err(weights_error(
                &self.path,
                format!(
                    "tensor `{}` has {rows} rows, not a whole number of head pairs for {n_head} \
                     heads",
                    gguf_name(hf).unwrap_or_default()
                ),
            ));
        }
        let half = rows / n_head / 2;
        // HF row (head h, half s, index j) is GGUF row (head h, index j, half s).
        let perm = (0..rows)
            .map(|r| {
                let (h, s, j) = (r / (2 * half), (r / half) % 2, r % half);
                h * 2 * half + j * 2 + s
            })
            .collect();
        Ok(Some(perm))
    }

    /// Tensor `hf` as a dense tensor in `dtype` on `device`: block types dequantized (candle's
    /// ggml dequantization), Llama's q and k rows put back in HF order.
    pub(crate) fn get(
        &self,
        hf: &str,
        shape: Option<&[usize]>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (gguf, ggml, dims, bytes) = self.raw(hf, shape)?;
        let read = || -> candle_core::Result<Tensor> {
            ggml_file::qtensor_from_ggml(ggml, bytes, dims.to_vec(), &Device::Cpu)?
                .dequantize(&Device::Cpu)
        };
        let mut t = read()
            .map_err(|e| weights_error(&self.path, format!("tensor `{gguf}`: cannot read: {e}")))?;
        self.release(bytes);
        if let Some(perm) = self.row_permutation(hf, dims[0])? {
            let idx: Vec<u32> = perm.iter().map(|&r| r as u32).collect();
            t = t.index_select(&Tensor::new(idx, &Device::Cpu)?, 0)?;
        }
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    /// Gives back the mapped pages of `bytes` (a slice of the map) once they are copied, so that
    /// a loaded model's resident memory is its weights, not its weights plus the file.
    fn release(&self, bytes: &[u8]) {
        let start = (bytes.as_ptr() as usize).saturating_sub(self.mmap.as_ptr() as usize);
        super::release_pages(&self.mmap, start..start + bytes.len());
    }

    /// Tensor `hf` `[out, in]` in its block format when that is one lmgen's quantized layers run
    /// (Q8_0, Q4_K, Q6_K), rows unpermuted as bytes; `None` for every other type.
    pub(crate) fn quantized(&self, hf: &str, shape: &[usize]) -> Result<Option<QuantizedWeight>> {
        let (gguf, ggml, dims, file_bytes) = self.raw(hf, Some(shape))?;
        if !QuantizedWeight::reads(ggml) || dims.len() != 2 {
            return Ok(None);
        }
        let (rows, cols) = (dims[0], dims[1]);
        let unpermuted;
        let bytes = match self.row_permutation(hf, rows)? {
            None => file_bytes,
            Some(perm) => {
                let row_bytes = file_bytes.len() / rows;
                unpermuted = perm
                    .iter()
                    .flat_map(|&r| &file_bytes[r * row_bytes..(r + 1) * row_bytes])
                    .copied()
                    .collect::<Vec<u8>>();
                &unpermuted
            }
        };
        let weight = QuantizedWeight::from_ggml_bytes(ggml, bytes, rows, cols, gguf)?;
        self.release(file_bytes);
        Ok(Some(weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
            (
                "blk.0.ffn_down.weight",
                "model.layers.0.mlp.down_proj.weight",
            ),
            (
                "blk.1.ffn_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
        ] {
            assert_eq!(hf_name(g).as_deref(), Some(h));
            assert_eq!(gguf_name(h).as_deref(), Some(g));
        }
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.0.attn_q_norm.weight"), None);
    }
}
