//! Building blocks shared by the architectures, one concept per file.

pub mod aligned;
pub mod attention;
pub mod bart_layer;
pub mod columns;
pub mod conv;
pub mod embedding;
pub mod expf;
pub mod fused_cpu;
pub mod gated_delta_net;
pub mod gated_delta_step;
pub mod gemv;
pub mod gemv_amx;
pub mod gemv_avx2;
pub mod gemv_avx512;
pub mod huge_pages;
pub mod linear;
pub mod mask;
pub mod mixer;
pub mod mlp;
pub mod moe;
pub mod mxfp4;
pub mod norm;
pub mod rotary;
pub mod seq2seq_attention;
pub mod short_conv;
pub mod thread_gemm;
pub mod widened;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::load::Weights;
use crate::models::quantize::{Quantization, QuantizedWeight};
use crate::parallel::Shard;

/// Where a quantized weight lives for the model's device ([`LoadContext::place_quantized`]).
#[derive(Debug)]
pub(crate) enum Placed {
    /// In its blocks on the host (a CPU model).
    Host(Arc<QuantizedWeight>),
    /// Q8_0 in device memory.
    DeviceQ8(Arc<crate::cuda::DeviceQ8>),
    /// Dequantized to the weight dtype on the device.
    Dense(Tensor),
}

/// Where weights come from and what dtype/device they are converted to.
#[derive(Clone, Copy)]
pub struct LoadContext<'a> {
    pub weights: &'a Weights,
    /// Where the text model's tensors sit in the file (a vision-language checkpoint nests them).
    pub names: WeightNames<'a>,
    /// The compute dtype: activations, the KV cache, norms, biases and every small tensor.
    pub dtype: DType,
    /// The dtype of the large matrices ([`LoadContext::weight`]: linear layers, experts,
    /// embedding tables). Equal to `dtype` except for f16/bf16 on the CPU, where activations run
    /// in f32 over half-precision weights ([`compute_dtype`]).
    pub weight_dtype: DType,
    pub device: &'a Device,
    pub attn_implementation: crate::models::AttnImplementation,
    /// Quantize linear weights at load (`None`: keep `dtype`).
    pub quantize: Option<Quantization>,
    /// This rank's part of a model split across tensor-parallel ranks (`None`: the whole model).
    pub shard: Option<&'a Shard>,
}

/// Maps the names the model code uses (`model.layers.0...`, `lm_head.weight`) to the names in
/// the file: the registry's weight-name map for checkpoints that nest the language model
/// (`language_model.model.` in transformers 4 layouts, `model.language_model.` in 5).
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightNames<'a> {
    /// Replaces the leading `model.`.
    pub model: Option<&'a str>,
    /// Prefixed to `lm_head.`.
    pub lm_head: &'a str,
    /// `(ours, stored)` module-name segments the checkpoint names differently
    /// ([`crate::models::ModelConfig::weight_renames`]).
    pub renames: &'a [(&'a str, &'a str)],
}

impl WeightNames<'_> {
    /// The stored name of `name`.
    pub fn stored(&self, name: &str) -> String {
        let renamed = rename(name, self.renames);
        let name = renamed.as_str();
        match (self.model, name.strip_prefix("model.")) {
            (Some(m), Some(rest)) => format!("{m}{rest}"),
            _ if name.starts_with("lm_head.") => format!("{}{name}", self.lm_head),
            _ => name.to_string(),
        }
    }
}

/// `name` with each `(ours, stored)` segment replaced (whole dot-separated segments only).
pub fn rename(name: &str, renames: &[(&str, &str)]) -> String {
    let mut padded = format!(".{name}.");
    for (ours, stored) in renames {
        padded = padded.replacen(&format!(".{ours}."), &format!(".{stored}."), 1);
    }
    padded[1..padded.len() - 1].to_string()
}

/// The dtype activations run in for weights of `dtype` on `device`: f32 for f16/bf16 weights on
/// the CPU, else `dtype` itself.
///
/// A deliberate difference from transformers, which computes in the weights' dtype everywhere.
/// The CPU has no half-precision arithmetic: candle widens each element of a norm, softmax or
/// activation one at a time (a 512-token f16 prefill of SmolLM2-135M spent 60% of its time there,
/// against 37% in the products), while the products' kernels widen the weights in registers
/// anyway. So, as llama.cpp does, the weights stay in half precision (their memory is unchanged)
/// and everything else, the KV cache included, is f32: more accurate than f16/bf16 compute, and
/// the cache takes twice the bytes of an f16 one.
pub fn compute_dtype(dtype: DType, device: &Device) -> DType {
    match dtype {
        DType::F16 | DType::BF16 if device.is_cpu() => DType::F32,
        _ => dtype,
    }
}

impl LoadContext<'_> {
    /// The tensor `name`, checked against the `shape` that config.json implies.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.tensor_as(name, shape, self.dtype)
    }

    /// The large matrix `name` (a linear layer's weight, stacked experts, an embedding table) in
    /// [`LoadContext::weight_dtype`].
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.tensor_as(name, shape, self.weight_dtype)
    }

    /// The tensor `name` in `dtype` rather than the compute dtype.
    pub fn tensor_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.weights
            .get(&self.names.stored(name), shape, dtype, self.device)
    }

    /// Rows `rows` of the `[out, in]` matrix `name` as `[rows.len(), in]`, in
    /// [`LoadContext::weight_dtype`] (read from the file alone for safetensors; a rank's part of a
    /// column-parallel weight or of an embedding table).
    pub fn tensor_rows(
        &self,
        name: &str,
        shape: [usize; 2],
        rows: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        self.weights.get_rows(
            &self.names.stored(name),
            shape,
            rows,
            self.weight_dtype,
            self.device,
        )
    }

    /// Whether the file stores `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.names.stored(name))
    }

    /// A weight in a quantized block format, placed for this model's device: its blocks on the
    /// CPU; on a GPU, Q8_0 in device memory ([`crate::cuda::DeviceQ8`]) and the other formats
    /// (Q4_K, Q6_K) dequantized to the weight dtype, which lmgen's GPU products take.
    pub(crate) fn place_quantized(&self, q: Arc<QuantizedWeight>) -> Result<Placed> {
        if self.device.is_cpu() {
            return Ok(Placed::Host(q));
        }
        if let Some((blocks, rows, cols)) = q.q8_0_bytes() {
            if let Some(w) = crate::cuda::DeviceQ8::new(blocks, rows, cols, self.device)? {
                return Ok(Placed::DeviceQ8(Arc::new(w)));
            }
        }
        let dense = q
            .dequantize_all()?
            .to_dtype(self.weight_dtype)?
            .to_device(self.device)?;
        Ok(Placed::Dense(dense))
    }

    /// `name` in the block format the file stores it in, if it is quantized there (GGUF).
    pub fn stored_quantized(&self, name: &str, shape: &[usize]) -> Result<Option<QuantizedWeight>> {
        self.weights.quantized(&self.names.stored(name), shape)
    }

    /// The `[rows, cols]` tensor `name` quantized to `q`, read a band of rows at a time (never
    /// whole in the compute dtype; the same blocks as quantizing [`LoadContext::tensor`]'s result).
    pub fn quantized_tensor(
        &self,
        name: &str,
        [rows, cols]: [usize; 2],
        q: Quantization,
    ) -> Result<QuantizedWeight> {
        if self.weights.gguf_path().is_some() {
            // A GGUF file's dense tensor is read whole (its rows are not sliced from the file).
            return q.quantize(&self.tensor(name, &[rows, cols])?, name);
        }
        let stored = self.names.stored(name);
        q.quantize_banded(rows, cols, name, &|r| {
            self.weights
                .get_rows(&stored, [rows, cols], r, self.weight_dtype, self.device)
        })
    }
}
