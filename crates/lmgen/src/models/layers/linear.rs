//! `nn.Linear` (weight `[out, in]`) and GPT-2's `Conv1D` (weight `[in, out]`, transposed at load),
//! dense (f32 / f16 / bf16), quantized at load (Q8_0 / Q4_K, see [`Quantization`]), or in the
//! blocks a GGUF file stores (Q8_0 / Q4_K / Q6_K, kept as they are).
//!
//! Dense products with few rows (decode) go through the multi-threaded matrix-vector kernel of
//! [`gemv`]; larger ones (prefill) through candle's matmul.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Module, Storage, Tensor, D};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{aligned, gemv, LoadContext};
use crate::error::Result;
use crate::models::quantize::QuantizedWeight;
use crate::parallel::Communicator;

mod parallel;

pub use parallel::{Conv1dSplit, RowOutput, Rows};

/// The weight of a linear layer.
#[derive(Debug, Clone)]
enum Weight {
    /// `[out, in]` in the compute dtype.
    Dense(Tensor),
    /// `[out, in]` in a quantized block format (shared with a tied embedding table).
    Quantized(Arc<QuantizedWeight>),
    /// Fused parts that cannot share one format (a GGUF file that stores q and k in Q4_K and v
    /// in Q6_K): each part's product, concatenated along the output dimension.
    Parts(Vec<Weight>),
}

impl Weight {
    /// `x [.., in] -> [.., out]` without the bias, in `x`'s dtype.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::Dense(w) => {
                let rows = x.elem_count() / w.dim(1)?;
                let fast = if rows <= gemv::MAX_ROWS {
                    gemv::matmul_t(x, w)?
                } else {
                    None
                };
                match fast {
                    Some(y) => y,
                    // f16/bf16 on the CPU: widen blocks of `w` for the f32 kernel. On a GPU
                    // cuBLAS multiplies f16/bf16 natively.
                    None if matches!(w.dtype(), DType::F16 | DType::BF16)
                        && w.device().is_cpu() =>
                    {
                        half_matmul(x, w)?
                    }
                    None => candle_nn::Linear::new(w.clone(), None).forward(x)?,
                }
            }
            // The quantized kernels take and give f32 activations.
            Weight::Quantized(q) => q.forward(x)?.to_dtype(x.dtype())?,
            Weight::Parts(parts) => {
                let ys = parts
                    .iter()
                    .map(|p| p.product(x))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&ys, D::Minus1)?
            }
        })
    }
}

/// `y = x W^T + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    /// A layer split across tensor-parallel ranks ([`parallel`]): how the ranks' outputs
    /// combine. `None`: a whole layer.
    collective: Option<Collective>,
}

/// How the outputs of a layer split across ranks combine into the whole layer's output.
#[derive(Debug, Clone)]
enum Collective {
    /// Row-parallel: each rank's product over its columns of the input is a partial sum; the
    /// bias is added once, after the all-reduce.
    Sum(Arc<dyn Communicator>),
    /// Column-parallel with the whole output wanted on every rank (a vocabulary-split LM head):
    /// the ranks' outputs concatenated along the last dimension.
    Gather(Box<Gather>),
}

/// How a vocabulary-split LM head gathers its logits: every rank's `chunk` columns (the last
/// ranks' padded with zeros to it, as a collective takes one shape from every rank), of which
/// the first `total` are the vocabulary.
#[derive(Debug, Clone)]
struct Gather {
    comm: Arc<dyn Communicator>,
    chunk: usize,
    total: usize,
}

impl Linear {
    /// Wraps an existing `[out, in]` weight (used for tied embeddings), quantized if the load
    /// options ask for it.
    pub fn from_weight(
        ctx: &LoadContext<'_>,
        name: &str,
        weight: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let weight = match ctx.quantize {
            Some(q) => Weight::Quantized(Arc::new(q.quantize(&weight, name)?)),
            None => Weight::Dense(aligned::aligned(weight)?),
        };
        Ok(Self {
            weight,
            bias,
            collective: None,
        })
    }

    /// A weight already in a quantized block format (a quantized tied embedding matrix).
    pub fn from_quantized(weight: Arc<QuantizedWeight>) -> Self {
        Self {
            weight: Weight::Quantized(weight),
            bias: None,
            collective: None,
        }
    }

    /// Loads `{prefix}.weight` `[out, in]` and, if `bias`, `{prefix}.bias` `[out]`.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        Self::load_fused(ctx, &[(prefix, out_dim)], in_dim, bias)
    }

    /// Several linear layers over the same input as one: the `[out_i, in]` weights of `parts`
    /// (prefix, out_i) stacked into `[sum out_i, in]` (fused QKV, fused gate/up), so a decode step
    /// reads the input once and runs one product instead of several. The outputs come back
    /// concatenated in the order of `parts`.
    pub fn load_fused(
        ctx: &LoadContext<'_>,
        parts: &[(&str, usize)],
        in_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let biases = if bias {
            let b = parts
                .iter()
                .map(|(p, out)| ctx.tensor(&format!("{p}.bias"), &[*out]))
                .collect::<Result<Vec<_>>>()?;
            Some(cat(b)?)
        } else {
            None
        };
        let name = format!("{}.weight", parts.first().map_or("", |p| p.0));
        // Weights that the file stores in a quantized block format (GGUF) keep their blocks.
        let stored = parts
            .iter()
            .map(|(p, out)| ctx.stored_quantized(&format!("{p}.weight"), &[*out, in_dim]))
            .collect::<Result<Vec<_>>>()?;
        if let (Some(q), [(prefix, out)], [None]) = (ctx.quantize, parts, stored.as_slice()) {
            // One weight read and quantized a band at a time (a large LM head is never whole in
            // the compute dtype).
            let name = format!("{prefix}.weight");
            let weight = ctx.quantized_tensor(&name, [*out, in_dim], q)?;
            return Ok(Self {
                weight: Weight::Quantized(Arc::new(weight)),
                bias: biases,
                collective: None,
            });
        }
        if stored.iter().all(Option::is_none) {
            let weights = parts
                .iter()
                .map(|(p, out)| ctx.weight(&format!("{p}.weight"), &[*out, in_dim]))
                .collect::<Result<Vec<_>>>()?;
            return Self::from_weight(ctx, &name, cat(weights)?, biases);
        }
        if stored.iter().all(Option::is_some) {
            let weight = match QuantizedWeight::concat_rows(stored.into_iter().flatten().collect())
            {
                Ok(q) => Weight::Quantized(Arc::new(q)),
                Err(parts) => Weight::Parts(
                    parts
                        .into_iter()
                        .map(|q| Weight::Quantized(Arc::new(q)))
                        .collect(),
                ),
            };
            return Ok(Self {
                weight,
                bias: biases,
                collective: None,
            });
        }
        let weight = Weight::Parts(
            parts
                .iter()
                .zip(stored)
                .map(|((p, out), q)| match q {
                    Some(q) => Ok(Weight::Quantized(Arc::new(q))),
                    None => {
                        let name = format!("{p}.weight");
                        let dense = ctx.weight(&name, &[*out, in_dim])?;
                        Ok(Self::from_weight(ctx, &name, dense, None)?.weight)
                    }
                })
                .collect::<Result<Vec<_>>>()?,
        );
        Ok(Self {
            weight,
            bias: biases,
            collective: None,
        })
    }

    /// Loads a GPT-2 `Conv1D`: `{prefix}.weight` is `[in, out]` on disk.
    pub fn load_conv1d(
        ctx: &LoadContext<'_>,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
    ) -> Result<Self> {
        let weight = ctx
            .tensor(&format!("{prefix}.weight"), &[in_dim, out_dim])?
            .t()?
            .contiguous()?;
        let bias = ctx.tensor(&format!("{prefix}.bias"), &[out_dim])?;
        Self::from_weight(ctx, &format!("{prefix}.weight"), weight, Some(bias))
    }

    /// `[.., in] -> [.., out]` (split across ranks: this rank's part of the input or of the
    /// output, see [`parallel`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.product(x)?;
        match &self.collective {
            None => self.add_bias(y),
            Some(Collective::Sum(comm)) => self.add_bias(comm.all_reduce_sum(&y)?),
            Some(Collective::Gather(g)) => {
                let y = self.add_bias(y)?; // [.., rows of this rank]
                let last = y.rank() - 1;
                let short = g.chunk - y.dim(last)?;
                let y = if short > 0 {
                    y.pad_with_zeros(last, 0, short)?
                } else {
                    y
                }; // [.., chunk]
                let all = g.comm.all_gather(&y, last)?; // [.., ranks * chunk]
                if all.dim(last)? == g.total {
                    Ok(all)
                } else {
                    Ok(all.narrow(last, 0, g.total)?) // [.., total]
                }
            }
        }
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Weight rows widened to f32 at a time by [`half_matmul`].
const HALF_BLOCK_ROWS: usize = 2048;

/// `x [.., k] · w[n, k]^T` for an f16/bf16 weight and many rows of `x` (prefill): candle's CPU
/// matmul has no bf16 kernel (it widens the whole matrix to f32 on every call) and a slow f16 one,
/// so widen `w` to f32 a block of rows at a time and use the f32 kernel; the widening costs
/// `n k` operations against the product's `2 m n k`. The widening uses `half`'s vectorized slice
/// conversion (F16C where the CPU has it), on rayon's threads: element by element, as candle's
/// `to_dtype` does, it took a fifth of a 512-token prefill of SmolLM2-135M.
fn half_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, k) = w.dims2()?;
    let x32 = x.to_dtype(DType::F32)?.reshape(((), k))?.contiguous()?; // [m, k]
    let blocks = (0..n)
        .step_by(HALF_BLOCK_ROWS)
        .map(|start| {
            let rows = HALF_BLOCK_ROWS.min(n - start);
            let block = widen(&w.narrow(0, start, rows)?)?; // [rows, k] f32
            Ok(x32.matmul(&block.t()?)?) // [m, rows]
        })
        .collect::<Result<Vec<_>>>()?;
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok(Tensor::cat(&blocks, 1)?
        .reshape(dims)?
        .to_dtype(x.dtype())?)
}

/// A contiguous f16/bf16 CPU tensor widened to f32 (any other: candle's `to_dtype`).
fn widen(w: &Tensor) -> Result<Tensor> {
    fn convert<T: Sync>(src: &[T]) -> Vec<f32>
    where
        [T]: HalfFloatSliceExt,
    {
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(WIDEN_CHUNK)
            .zip(src.par_chunks(WIDEN_CHUNK))
            .for_each(|(dst, src)| src.convert_to_f32_slice(dst));
        out
    }
    let (storage, layout) = w.storage_and_layout();
    let widened = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F16(v)), Some((a, b))) => Some(convert(&v[a..b])),
        (Storage::Cpu(CpuStorage::BF16(v)), Some((a, b))) => Some(convert(&v[a..b])),
        _ => None,
    };
    drop(storage);
    Ok(match widened {
        Some(v) => Tensor::from_vec(v, w.dims(), w.device())?,
        None => w.to_dtype(DType::F32)?,
    })
}

/// Elements widened per rayon task.
const WIDEN_CHUNK: usize = 1 << 16;

/// Stacks `[out_i, ..]` tensors along the first dimension (no copy for a single one; CPU
/// matrices into [`aligned`] storage).
fn cat(mut parts: Vec<Tensor>) -> Result<Tensor> {
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else if let Some(t) = aligned::cat_rows(&parts)? {
        t
    } else {
        Tensor::cat(&parts, 0)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn half_weights_with_many_rows_match_f32() {
        let dev = Device::Cpu;
        // More rows than the kernel for few rows takes, more weight rows than one block.
        let x = Tensor::randn(0f32, 1., (2, 20, 24), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (HALF_BLOCK_ROWS + 3, 24), &dev).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let wh = w.to_dtype(dtype).unwrap();
            let want = x
                .broadcast_matmul(&wh.to_dtype(DType::F32).unwrap().t().unwrap())
                .unwrap();
            let got = half_matmul(&x, &wh).unwrap();
            assert_eq!(got.dims(), &[2, 20, HALF_BLOCK_ROWS + 3]);
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-3, "{dtype:?}");
        }
    }
}
