//! Greedy selection on the device: the next token of each row without copying the logits to the
//! host.
//!
//! With no logits processors, no returned scores and greedy search, the host only needs one id
//! per row. Copying `[rows, vocab]` f32 logits every step costs a device-to-host transfer of
//! `rows * vocab * 4` bytes (600 KB a row for a 152k vocabulary); this copies `2 * rows` u32.
//!
//! The result is exactly the host's [`argmax`](crate::generation::sampler::argmax) (and
//! `torch.argmax`): the first maximum of a row, and the first NaN if the row has one. On a GPU
//! with lmgen's kernels one launch finds it ([`crate::cuda::greedy_logprob`]); otherwise (and
//! on the CPU, where the tests check it) it is built from candle's `max`, `eq`, `where_cond` and
//! `min` over the indices, since candle's own CUDA `argmax` does not promise the first index
//! among equal maxima.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor, D};

use crate::error::Result;
use crate::TokenId;

/// Greedy selection for one vocabulary size and device, kept for a generate call.
#[derive(Debug)]
pub struct DeviceArgmax {
    /// The candle ops' index tensors, made on their first use (the kernel needs none):
    /// `[1, vocab]` u32 `0, 1, ..., vocab - 1`, and `[1, 1]` u32 `vocab`, the "not found" index.
    indices: OnceLock<(Tensor, Tensor)>,
    vocab: usize,
    device: Device,
}

impl DeviceArgmax {
    /// Selection over `vocab` columns on `device`.
    pub fn new(vocab: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            indices: OnceLock::new(),
            vocab,
            device: device.clone(),
        })
    }

    /// The index tensors of the candle ops, made once.
    fn indices(&self) -> Result<&(Tensor, Tensor)> {
        if self.indices.get().is_none() {
            let vocab = self.vocab as u32;
            let made = (
                Tensor::arange(0u32, vocab, &self.device)?.unsqueeze(0)?,
                Tensor::new(&[[vocab]], &self.device)?,
            );
            let _ = self.indices.set(made);
        }
        Ok(self.indices.get().expect("set above"))
    }

    /// `[rows, vocab]` logits (any float dtype) -> one id per row.
    pub fn select(&self, logits: &Tensor) -> Result<Vec<TokenId>> {
        let (rows, vocab) = logits.dims2()?;
        debug_assert_eq!(vocab, self.vocab);
        if let Some(picked) = crate::cuda::greedy_logprob(&logits.contiguous()?)? {
            // [rows, 2]: (id, log-probability); ids below 2^24 are exact in f32.
            return crate::readback::with_host_f32(&picked, |p| {
                p.chunks_exact(2).map(|c| c[0] as TokenId).collect()
            });
        }
        let (index, none) = self.indices()?;
        let index = index.broadcast_as((rows, vocab))?;
        let none = none.broadcast_as((rows, vocab))?;
        let first = |mask: &Tensor| -> Result<Tensor> {
            Ok(mask.where_cond(&index, &none)?.min(D::Minus1)?) // [rows]
        };
        let max = logits.max_keepdim(D::Minus1)?; // [rows, 1]
        let first_max = first(&logits.broadcast_eq(&max)?)?;
        let first_nan = first(&logits.ne(logits)?)?;
        // One transfer: [2, rows].
        let both: Vec<Vec<u32>> = Tensor::stack(&[&first_nan, &first_max], 0)?
            .to_dtype(DType::U32)?
            .to_vec2()?;
        Ok(both[0]
            .iter()
            .zip(&both[1])
            .map(|(&nan, &max)| {
                if (nan as usize) < vocab {
                    nan
                } else {
                    // A row without NaN always has a maximum (all -inf rows included).
                    max.min(vocab as u32 - 1)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::sampler::argmax;

    #[test]
    fn matches_the_host_argmax_on_ties_nan_and_inf() {
        let rows: Vec<Vec<f32>> = vec![
            vec![1.0, 3.0, 3.0, 2.0],
            vec![f32::NEG_INFINITY; 4],
            vec![0.0, f32::NAN, 5.0, f32::NAN],
            vec![5.0, 1.0, f32::INFINITY, f32::INFINITY],
            vec![-1.0, -0.5, -0.5, -2.0],
        ];
        let dev = Device::Cpu;
        let t = Tensor::new(rows.clone(), &dev).unwrap();
        let got = DeviceArgmax::new(4, &dev).unwrap().select(&t).unwrap();
        let want: Vec<u32> = rows.iter().map(|r| argmax(r) as u32).collect();
        assert_eq!(got, want);
        assert_eq!(got, vec![1, 0, 1, 2, 1]);
        let bf16 = t.to_dtype(DType::BF16).unwrap();
        assert_eq!(
            DeviceArgmax::new(4, &dev).unwrap().select(&bf16).unwrap(),
            want
        );
    }
}
