//! Building blocks shared by the architectures, one concept per file.

pub mod attention;
pub mod embedding;
pub mod gemv;
pub mod linear;
pub mod mask;
pub mod mlp;
pub mod norm;
pub mod rotary;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::load::Weights;
use crate::models::quantize::{Quantization, QuantizedWeight};

/// Where weights come from and what dtype/device they are converted to.
#[derive(Clone, Copy)]
pub struct LoadContext<'a> {
    pub weights: &'a Weights,
    pub dtype: DType,
    pub device: &'a Device,
    pub attn_implementation: crate::models::AttnImplementation,
    /// Quantize linear weights at load (`None`: keep `dtype`).
    pub quantize: Option<Quantization>,
}

impl LoadContext<'_> {
    /// The tensor `name`, checked against the `shape` that config.json implies.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.get(name, shape, self.dtype, self.device)
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
        q.quantize_banded(rows, cols, name, &|r| {
            self.weights
                .get_rows(name, [rows, cols], r, self.dtype, self.device)
        })
    }
}
