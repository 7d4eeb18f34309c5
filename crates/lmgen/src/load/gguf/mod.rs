//! GGUF files (llama.cpp's format), read with candle's `quantized::gguf_file`: the metadata becomes
//! an HF `config.json`, the tensors are served under their HF names.
//!
//! transformers' `from_pretrained(model_id, gguf_file=...)` (`integrations/ggml.py`,
//! `modeling_gguf_pytorch_utils.py`) does the same mapping, then dequantizes everything; lmgen keeps
//! Q8_0, Q4_K and Q6_K weights in their blocks (see [`crate::models::quantize`]) and widens the
//! other block types to the compute dtype.
//!
//! `general.architecture` picks the row of [`crate::models::registry`] whose `gguf` column names
//! it; what llama.cpp's converter (`convert_hf_to_gguf.py`) writes differently for that
//! architecture is its [`GgufArch`] (in [`arch`]):
//!
//! - `llama` (Mistral too: GGUF keeps no sliding window) and `granite`: the q and k rows are
//!   permuted for llama.cpp's rotary layout (`LlamaModel.permute`: per head, HF's two halves
//!   `[x0..x(d/2), y0..y(d/2)]` become pairs `[x0, y0, x1, y1, ..]`). lmgen rotates in HF's
//!   layout, so those rows are put back at load; a quantized row is a whole number of blocks, so
//!   quantized tensors are unpermuted exactly, rows moved as bytes. Granite's multipliers are
//!   `attention.scale`, `embedding_scale`, `residual_scale` and `logit_scale`.
//! - `qwen2`, `qwen3`: no transform. Qwen3 adds `attn_q_norm` / `attn_k_norm` (per head).
//! - `gemma3` (HF `gemma3_text`): every norm weight is stored as `1 + w`, the same f32 sum HF's
//!   `Gemma3RMSNorm` computes, so it is used as the multiplier as stored (subtracting 1 would not
//!   be exact). `ffn_norm` is the pre-feedforward norm; `post_attention_norm`, `post_ffw_norm`
//!   the post norms; no `output.weight` (tied). Sliding layers: `attention.sliding_window`, RoPE
//!   base `rope.freq_base_swa`, and which layers slide from `attention.sliding_window_pattern`
//!   (one flag per layer, or a period), else llama.cpp's default period of 6. The converter writes
//!   no pattern, so its files can only express that period. Attention scale: `key_length`
//!   (`hidden / heads` for the 62-layer 27B), as llama.cpp computes it.
//! - `phi3`: `attn_qkv` and `ffn_up` (HF `gate_up_proj`, gate rows first) stay fused as HF stores
//!   them; a `rope.dimension_count` below the head size is the partial rotary factor.
//! - `olmo2`: post norms only (`post_attention_norm`, `post_ffw_norm`); `attn_q_norm` /
//!   `attn_k_norm` span the whole projection.
//! - Mixtures of experts (`qwen3moe`, and `llama` with `llama.expert_count` > 0, which is
//!   Mixtral): the converter stacks each projection of every expert into one `[n_expert, out, in]`
//!   tensor (`blk.N.ffn_{gate,up,down}_exps`); HF keeps a module per expert, so expert `E` is served
//!   under its HF name as the `E`-th slice of the stacked tensor (a whole number of rows, so of
//!   quantized blocks too). The router is `ffn_gate_inp`. llama.cpp always renormalises the top
//!   experts' weights, so a `qwen3moe` file reads as `norm_topk_prob: true`.
//! - `gpt-oss` is refused by name: its experts are MXFP4 blocks (ggml type 39), with attention
//!   sinks and expert biases, none of which is read from GGUF files yet.
//!
//! The converter's `q8_0` keeps norms and 1-D tensors F32 and writes F16 for weights whose rows
//! are not whole 32-value blocks. The vocabulary in the metadata is not read: the tokenizer comes
//! from `tokenizer.json` in the checkpoint directory. `tests/fixtures/gguf/README.md` lists every
//! key and tensor the converter writes for these architectures.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value as Meta};
use candle_core::quantized::{ggml_file, GgmlDType};
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use super::{map_file, weights_error};
use crate::error::{Error, Result};
use crate::models::quantize::QuantizedWeight;
use crate::models::registry;

pub(crate) mod arch;
mod experts;

pub use arch::GgufArch;
pub use experts::GgufExperts;

/// Tensors llama.cpp writes that lmgen does not read yet, and what they are.
const UNREAD_TENSORS: [(&str, &str); 3] = [
    (
        "rope_freqs.weight",
        "Llama 3 RoPE frequency factors, rope_type \"llama3\"",
    ),
    ("rope_factors_long.weight", "Phi-3 LongRoPE factors"),
    ("rope_factors_short.weight", "Phi-3 LongRoPE factors"),
];

/// GGUF architectures llama.cpp writes that lmgen knows but does not read, and what is missing.
const UNREAD_ARCHITECTURES: [(&str, &str); 5] = [
    (
        "gpt-oss",
        "HF `gpt_oss`: its MXFP4 expert blocks (ggml type 39), attention sinks \
         (`blk.N.attn_sinks.weight`) and expert biases are not read from GGUF files yet",
    ),
    (
        "qwen3next",
        "HF `qwen3_next`: a hybrid model whose gated DeltaNet layers (convolution and recurrent \
         state) are not read from GGUF files yet",
    ),
    (
        "qwen35",
        "HF `qwen3_5_text`: a hybrid model whose gated DeltaNet layers (convolution and recurrent \
         state) are not read from GGUF files yet",
    ),
    (
        "qwen35moe",
        "HF `qwen3_5_moe_text`: a hybrid model whose gated DeltaNet layers (convolution and \
         recurrent state) are not read from GGUF files yet",
    ),
    (
        "lfm2",
        "HF `lfm2`: a hybrid model whose short gated convolution layers are not read from GGUF \
         files yet",
    ),
];

/// Where an HF tensor is stored: a GGUF tensor, or one expert of a stacked one.
#[derive(Debug, Clone)]
struct Stored {
    gguf: String,
    /// `Some(e)`: expert `e` of a stacked `[n_expert, rows, columns]` tensor.
    expert: Option<usize>,
}

/// An opened, validated GGUF file.
pub(crate) struct GgufWeights {
    path: PathBuf,
    mmap: Mmap,
    content: Content,
    arch: &'static GgufArch,
    /// The registry row's `model_type`, for the config.
    model_type: &'static str,
    /// HF name -> where it is stored, for every tensor in the file (every expert of a stacked
    /// one).
    names: HashMap<String, Stored>,
    /// `attention.head_count` and `attention.head_count_kv`: the q and k row permutations.
    n_head: usize,
    n_kv_head: usize,
}

impl std::fmt::Debug for GgufWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWeights")
            .field("path", &self.path)
            .field("arch", &self.arch.name)
            .field("tensors", &self.names.len())
            .finish()
    }
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

/// The registry row of GGUF architecture `arch_name`: the one naming it, or where a dense and a
/// mixture-of-experts row share the name (`llama` and Mixtral), the one `expert_count` picks. A
/// dense architecture's file with experts is refused.
fn registry_row(
    path: &Path,
    arch_name: &str,
    expert_count: u64,
) -> Result<(&'static str, &'static GgufArch)> {
    let rows: Vec<(&'static str, &'static GgufArch)> = registry::ARCHITECTURES
        .iter()
        .filter_map(|e| {
            e.gguf
                .filter(|g| g.name == arch_name)
                .map(|g| (e.model_type, g))
        })
        .collect();
    let row = match rows.as_slice() {
        [one] => Some(*one),
        several => several
            .iter()
            .find(|(_, g)| g.experts.is_some() == (expert_count > 0))
            .copied(),
    };
    let (model_type, arch) = row.ok_or_else(|| Error::UnknownModelType {
        path: path.to_path_buf(),
        model_type: arch_name.to_string(),
        supported: format!(
            "{} (GGUF `general.architecture`)",
            registry::gguf_supported()
        ),
    })?;
    if arch.experts.is_none() && expert_count > 0 {
        return Err(Error::unsupported(format!(
            "`{}`: `{arch_name}.expert_count` = {expert_count}: a mixture of experts is not read \
             from GGUF `{arch_name}` files (lmgen's `{model_type}` is dense)",
            path.display()
        )));
    }
    Ok((model_type, arch))
}

impl GgufWeights {
    /// Maps and parses `path`, checks the architecture and that every tensor is one lmgen's model
    /// has.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let mmap = map_file(path)?;
        let bad = |message: String| weights_error(path, message);
        let content = Content::read(&mut Cursor::new(&mmap[..])).map_err(|e| {
            let e = e.to_string();
            if e.contains("unknown dtype for tensor 39") {
                return Error::unsupported(format!(
                    "`{}`: MXFP4 tensors (ggml type 39, gpt-oss's experts) are not read from GGUF \
                     files yet; load the safetensors checkpoint instead",
                    path.display()
                ));
            }
            bad(format!("not a valid GGUF file: {e}"))
        })?;
        let arch_name = match content.metadata.get("general.architecture") {
            Some(Meta::String(s)) => s.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "metadata key `general.architecture` must be a string, got {other:?}"
                )))
            }
            None => return Err(bad("metadata key `general.architecture` is missing".into())),
        };
        if let Some((_, what)) = UNREAD_ARCHITECTURES.iter().find(|(n, _)| *n == arch_name) {
            return Err(Error::unsupported(format!(
                "`{}`: GGUF architecture `{arch_name}` ({what}); load the safetensors checkpoint \
                 instead",
                path.display()
            )));
        }
        let expert_count = content
            .metadata
            .get(&format!("{arch_name}.expert_count"))
            .and_then(meta_u64)
            .unwrap_or(0);
        let (model_type, arch) = registry_row(path, &arch_name, expert_count)?;
        let mut names = HashMap::new();
        for (gguf, info) in &content.tensor_infos {
            if let Some((_, what)) = UNREAD_TENSORS.iter().find(|(n, _)| n == gguf) {
                return Err(Error::unsupported(format!(
                    "`{}`: tensor `{gguf}` ({what}) is not read from GGUF files yet; load the \
                     safetensors checkpoint instead",
                    path.display()
                )));
            }
            let no_counterpart = || {
                bad(format!(
                    "tensor `{gguf}` has no counterpart in lmgen's `{model_type}` model \
                     (GGUF `{arch_name}`)"
                ))
            };
            if arch.is_stacked_experts(gguf) {
                let dims = info.shape.dims();
                let [n_expert, _, _] = dims else {
                    return Err(bad(format!(
                        "tensor `{gguf}` has shape {dims:?}; stacked experts are \
                         [experts, rows, columns]"
                    )));
                };
                for e in 0..*n_expert {
                    let hf = arch.expert_hf_name(gguf, e).ok_or_else(&no_counterpart)?;
                    let stored = Stored {
                        gguf: gguf.clone(),
                        expert: Some(e),
                    };
                    names.insert(hf, stored);
                }
                continue;
            }
            let hf = arch.hf_name(gguf).ok_or_else(no_counterpart)?;
            let stored = Stored {
                gguf: gguf.clone(),
                expert: None,
            };
            names.insert(hf, stored);
        }
        let mut weights = Self {
            path: path.to_path_buf(),
            mmap,
            content,
            arch,
            model_type,
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

    /// Whether norm weights are stored with Gemma's `+1` already added ([`GgufArch::norm_shift`]).
    pub(crate) fn norms_include_unit_offset(&self) -> bool {
        self.arch.norm_shift
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
        let full = self.key(key);
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
                "GGUF metadata key `{}` must be greater than 0",
                self.key(key)
            ))),
            None => {
                Err(self.config_err(format!("GGUF metadata key `{}` is missing", self.key(key))))
            }
        }
    }

    /// `{arch}.{key}` as a number, if present.
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let full = self.key(key);
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

    /// Whether a tensor with this HF name is stored.
    pub(crate) fn contains(&self, hf: &str) -> bool {
        self.names.contains_key(hf)
    }

    /// HF names of every stored tensor.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The stored shape (HF order, `[out, in]`) of `hf` (of one expert, for an expert's).
    pub(crate) fn shape(&self, hf: &str) -> Option<&[usize]> {
        let stored = self.names.get(hf)?;
        let dims = self.content.tensor_infos[&stored.gguf].shape.dims();
        Some(match stored.expert {
            Some(_) => &dims[1..],
            None => dims,
        })
    }

    /// The stored dtype of `hf` when it is F32, F16 or BF16.
    pub(crate) fn disk_dtype(&self, hf: &str) -> Option<DType> {
        match self.content.tensor_infos[&self.names.get(hf)?.gguf].ggml_dtype {
            GgmlDType::F32 => Some(DType::F32),
            GgmlDType::F16 => Some(DType::F16),
            GgmlDType::BF16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// Bytes of `hf` when stored in a block type the quantized layers keep (Q8_0, Q4_K, Q6_K).
    pub(crate) fn quantized_bytes(&self, hf: &str) -> Option<usize> {
        let stored = self.names.get(hf)?;
        let info = &self.content.tensor_infos[&stored.gguf];
        let dtype = info.ggml_dtype;
        let elems = match stored.expert {
            Some(_) => info.shape.dims()[1..].iter().product(),
            None => info.shape.elem_count(),
        };
        QuantizedWeight::reads(dtype).then(|| elems / dtype.block_size() * dtype.type_size())
    }

    /// Where `hf` is stored, or an error naming both.
    fn lookup(&self, hf: &str) -> Result<&Stored> {
        if let Some(stored) = self.names.get(hf) {
            return Ok(stored);
        }
        let message = if let Some(g) = self.arch.gguf_name(hf) {
            format!("tensor `{g}` (HF `{hf}`) not found")
        } else if let Some((g, e)) = self.arch.expert_gguf_name(hf) {
            format!("expert {e} of tensor `{g}` (HF `{hf}`) not found")
        } else {
            format!("tensor `{hf}` not found (lmgen reads llama.cpp's tensor names)")
        };
        Err(weights_error(&self.path, message))
    }

    /// The GGUF tensor behind `hf`, checked against `shape` when given: its name, block type,
    /// shape and raw bytes (bounds-checked); for an expert, its slice of the stacked tensor.
    fn raw(&self, hf: &str, shape: Option<&[usize]>) -> Result<(&str, GgmlDType, &[usize], &[u8])> {
        let stored = self.lookup(hf)?;
        let gguf = stored.gguf.as_str();
        let info = &self.content.tensor_infos[gguf];
        let dims = match stored.expert {
            Some(_) => &info.shape.dims()[1..],
            None => info.shape.dims(),
        };
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
        // Checked: a wrapped product would pass the bounds check below with a small length
        // while candle dequantizes to the shape's (huge) element count (found by fuzzing).
        let elems = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                weights_error(
                    &self.path,
                    format!("tensor `{gguf}` has shape {dims:?}: more values than fit in memory"),
                )
            })?;
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
        // Expert `e` of a stacked tensor: the `e`-th of its equal, contiguous slices.
        let skip = stored.expert.unwrap_or(0) * len;
        let start = usize::try_from(self.content.tensor_data_offset + info.offset)
            .ok()
            .and_then(|s| s.checked_add(skip));
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

    /// For permuted q and k projections (Llama, Granite): `perm[hf_row] = gguf_row` (undoes
    /// `LlamaModel.permute`).
    fn row_permutation(&self, hf: &str, rows: usize) -> Result<Option<Vec<usize>>> {
        if !self.arch.permuted_qk {
            return Ok(None);
        }
        let n_head = if hf.contains(".self_attn.q_proj.") {
            self.n_head
        } else if hf.contains(".self_attn.k_proj.") {
            self.n_kv_head
        } else {
            return Ok(None);
        };
        if !rows.is_multiple_of(2 * n_head) {
            return Err(weights_error(
                &self.path,
                format!(
                    "tensor `{}` has {rows} rows, not a whole number of head pairs for {n_head} \
                     heads",
                    self.arch.gguf_name(hf).unwrap_or_default()
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
    /// ggml dequantization), permuted q and k rows put back in HF order.
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
