//! Weight quantization at load time (`--quantize q8_0|q4_k`): the analogue of transformers'
//! `load_in_8bit` / `load_in_4bit`, with llama.cpp's block formats (candle's `quantized` module).
//!
//! Every linear layer's `[out, in]` weight, the LM head included, is quantized once at load; the
//! embedding table, norms and biases keep the compute dtype. Matrix products then run on candle's
//! quantized kernels with f32 activations (quantized to Q8 blocks per call, as llama.cpp does).
//! Q4_K needs rows whose length is a multiple of 256; other rows (for example SmolLM2's and
//! Qwen2.5-0.5B's hidden sizes 576 and 896) fall back to Q8_0, as llama.cpp's `llama-quantize`
//! falls back to another type for tensors whose rows do not split into super-blocks.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// A quantized weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// 8-bit blocks of 32 weights with one f16 scale (34 bytes per 32 weights).
    Q8_0,
    /// 4-bit super-blocks of 256 weights with 6-bit sub-block scales (144 bytes per 256 weights).
    Q4K,
}

impl Quantization {
    /// Parses `q8_0` or `q4_k` (also `Q8_0`, `Q4_K`, `q4k`).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().replace('_', "").as_str() {
            "q80" => Ok(Self::Q8_0),
            "q4k" => Ok(Self::Q4K),
            _ => Err(Error::Input(format!(
                "unknown quantization `{name}`; supported: q8_0, q4_k"
            ))),
        }
    }

    /// The block format a `[rows, cols]` weight gets: this one, or Q8_0 where `cols` does not
    /// split into this format's blocks.
    pub fn format_for(self, cols: usize) -> GgmlDType {
        let wanted = match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4K => GgmlDType::Q4K,
        };
        if cols % wanted.block_size() == 0 {
            wanted
        } else {
            GgmlDType::Q8_0
        }
    }

    /// Bytes a `[rows, cols]` weight takes in this format (what a decode step reads).
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        let f = self.format_for(cols);
        rows * cols / f.block_size() * f.type_size()
    }

    /// Quantizes an `[out, in]` weight; `in` must be a multiple of 32.
    pub fn quantize(self, weight: &Tensor, name: &str) -> Result<QMatMul> {
        let (_, cols) = weight.dims2()?;
        let format = self.format_for(cols);
        if cols % format.block_size() != 0 {
            return Err(Error::Unsupported(format!(
                "quantizing `{name}`: rows of {cols} values do not split into blocks of {}",
                format.block_size()
            )));
        }
        let q = QTensor::quantize(&weight.to_dtype(DType::F32)?, format)?;
        Ok(QMatMul::from_qtensor(q)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn parses_names() {
        assert_eq!(Quantization::parse("q8_0").unwrap(), Quantization::Q8_0);
        assert_eq!(Quantization::parse("Q4_K").unwrap(), Quantization::Q4K);
        assert!(Quantization::parse("q3").is_err());
    }

    #[test]
    fn q4_k_falls_back_to_q8_0_for_short_rows() {
        assert_eq!(Quantization::Q4K.format_for(1536), GgmlDType::Q4K);
        assert_eq!(Quantization::Q4K.format_for(576), GgmlDType::Q8_0);
        assert_eq!(Quantization::Q8_0.bytes(2, 64), 2 * 2 * 34);
    }

    #[test]
    fn quantized_product_stays_close() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (64, 512), &dev).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 512), &dev).unwrap();
        let exact = x.matmul(&w.t().unwrap()).unwrap();
        for (q, tol) in [(Quantization::Q8_0, 0.01), (Quantization::Q4K, 0.1)] {
            let y = q.quantize(&w, "w").unwrap().forward(&x).unwrap();
            let err = (y - &exact).unwrap().sqr().unwrap().mean_all().unwrap();
            let scale = exact.sqr().unwrap().mean_all().unwrap();
            let rel = (err.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()).sqrt();
            assert!(rel < tol, "{q:?}: relative error {rel}");
        }
    }
}
