//! `nn.Linear` (weight `[out, in]`) and GPT-2's `Conv1D` (weight `[in, out]`, transposed at load),
//! dense (f32 / f16 / bf16), quantized at load (Q8_0 / Q4_K, see [`Quantization`]), or in the
//! blocks a GGUF file stores (Q8_0 / Q4_K / Q6_K, kept as they are).
//!
//! Dense products with few rows (decode) go through the multi-threaded matrix-vector kernel of
//! [`gemv`]; larger ones (prefill) through candle's matmul (f32 weights whose rows are a multiple
//! of 2 KiB apart through [`gemv`]'s outer-product tiles where the CPU has AVX-512, f16/bf16
//! through [`widened`] blocks); bf16 weights against activations of 16 rows or more through AMX
//! tiles where the CPU has them ([`gemv_amx`]).

use std::sync::Arc;

use candle_core::{DType, Module, Tensor, D};

use super::{aligned, gemv, gemv_amx, gemv_avx512, widened, LoadContext, Placed};
use crate::error::Result;
use crate::models::quantize::QuantizedWeight;
use crate::parallel::Communicator;

mod panel_matmul;
mod parallel;

pub use parallel::{Conv1dSplit, RowOutput, Rows};

/// The weight of a linear layer.
#[derive(Debug, Clone)]
enum Weight {
    /// `[out, in]` in the compute dtype.
    Dense(Tensor),
    /// `[out, in]` in a quantized block format (shared with a tied embedding table).
    Quantized(Arc<QuantizedWeight>),
    /// `[out, in]` Q8_0 on a GPU (quants and scales in device memory).
    DeviceQ8(Arc<crate::cuda::DeviceQ8>),
    /// Fused parts that cannot share one format (a GGUF file that stores q and k in Q4_K and v
    /// in Q6_K): each part's product, concatenated along the output dimension.
    Parts(Vec<Weight>),
}

impl Weight {
    /// A weight in a quantized block format, placed for `ctx`'s device
    /// ([`LoadContext::place_quantized`]).
    fn quantized(ctx: &LoadContext<'_>, q: Arc<QuantizedWeight>) -> Result<Self> {
        Ok(match ctx.place_quantized(q)? {
            Placed::Host(q) => Weight::Quantized(q),
            Placed::DeviceQ8(q) => Weight::DeviceQ8(q),
            Placed::Dense(w) => Weight::Dense(w),
        })
    }

    /// `x [.., in] -> [.., out]` without the bias, in `x`'s dtype.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::Dense(w) => {
                let rows = x.elem_count() / w.dim(1)?;
                // bf16 weights on AMX tiles where the CPU has them (16 rows or more).
                if let Some(y) = gemv_amx::matmul_t(x, w)? {
                    return Ok(y);
                }
                // Prompts: f32 rows a multiple of 2 KiB apart go to the outer-product tiles,
                // which do not run into gemm's cache-set conflicts ([`widened::rows_conflict`]).
                let tiles = rows <= gemv::MAX_ROWS
                    || (w.dtype() == DType::F32
                        && widened::rows_conflict(w.dim(1)?)
                        && gemv_avx512::available());
                let fast = if tiles { gemv::matmul_t(x, w)? } else { None };
                // The rest on the CPU: panels of `w` widened (f16/bf16) or copied (f32) into
                // each thread's L2 for gemm's f32 kernel. On a GPU cuBLAS multiplies natively.
                let fast = match fast {
                    None if w.device().is_cpu() => panel_matmul::panel_matmul(x, w)?,
                    fast => fast,
                };
                match fast {
                    Some(y) => y,
                    None => candle_nn::Linear::new(w.clone(), None).forward(x)?,
                }
            }
            // The quantized kernels take and give f32 activations.
            Weight::Quantized(q) => q.forward(x)?.to_dtype(x.dtype())?,
            Weight::DeviceQ8(q) => q.forward(x)?,
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
            Some(q) => Weight::quantized(ctx, Arc::new(q.quantize(&weight, name)?))?,
            None => Weight::Dense(aligned::aligned(weight)?),
        };
        Ok(Self {
            weight,
            bias,
            collective: None,
        })
    }

    /// A weight already in a quantized block format (a quantized tied embedding matrix): shared
    /// with the table on the CPU, in device memory on a GPU ([`Weight::quantized`]).
    pub fn from_quantized(ctx: &LoadContext<'_>, weight: Arc<QuantizedWeight>) -> Result<Self> {
        Ok(Self {
            weight: Weight::quantized(ctx, weight)?,
            bias: None,
            collective: None,
        })
    }

    /// A Q8_0 weight already on the GPU (a tied embedding table's), shared with its owner.
    pub fn from_device_q8(weight: Arc<crate::cuda::DeviceQ8>) -> Self {
        Self {
            weight: Weight::DeviceQ8(weight),
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
                weight: Weight::quantized(ctx, Arc::new(weight))?,
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
                Ok(q) => Weight::quantized(ctx, Arc::new(q))?,
                Err(parts) => Weight::Parts(
                    parts
                        .into_iter()
                        .map(|q| Weight::quantized(ctx, Arc::new(q)))
                        .collect::<Result<Vec<_>>>()?,
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
                    Some(q) => Weight::quantized(ctx, Arc::new(q)),
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
        let Some(collective) = &self.collective else {
            let (y, deferred) = self.forward_deferred_bias(x)?;
            return match deferred {
                Some(_) => self.add_bias(y),
                None => Ok(y),
            };
        };
        let y = self.weight.product(x)?;
        match collective {
            Collective::Sum(comm) => self.add_bias(comm.all_reduce_sum(&y)?),
            Collective::Gather(g) => {
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

    /// [`Linear::forward`] with the bias left to the caller where it would be an add of its own
    /// (`(product, Some(bias))`: a kernel that reads the product next can add it on the way);
    /// `(output, None)` where the output has it already (the decode product adds it in its
    /// launch; split weights add it around their collective) or there is none.
    pub fn forward_deferred_bias(&self, x: &Tensor) -> Result<(Tensor, Option<&Tensor>)> {
        if self.collective.is_some() {
            return Ok((self.forward(x)?, None));
        }
        // Decode on a GPU: lmgen's product for a few rows, the bias added in the same launch.
        if let Weight::Dense(w) = &self.weight {
            if let Some(y) = crate::cuda::gemv(x, w, self.bias.as_ref())? {
                return Ok((y, None));
            }
        }
        Ok((self.weight.product(x)?, self.bias.as_ref()))
    }

    /// The weight `[out, in]` and bias of a whole (unsplit) dense layer, for a kernel that runs
    /// the product itself ([`crate::cuda::decode_layer`]); `None` for a quantized or split one.
    pub fn dense(&self) -> Option<(&Tensor, Option<&Tensor>)> {
        match (&self.collective, &self.weight) {
            (None, Weight::Dense(w)) => Some((w, self.bias.as_ref())),
            _ => None,
        }
    }

    /// A fused gate/up projection's output through SwiGLU in the product's launch, for one
    /// activation row on a GPU ([`crate::cuda::gemv_swiglu`]): `[.., in] -> [.., out / 2]`,
    /// `silu(gate) * up`. `None` where that kernel does not apply (the caller runs
    /// [`Linear::forward`], then the activation).
    pub fn forward_swiglu(&self, x: &Tensor) -> Result<Option<Tensor>> {
        match (&self.collective, &self.weight) {
            (None, Weight::Dense(w)) => crate::cuda::gemv_swiglu(x, w, self.bias.as_ref()),
            _ => Ok(None),
        }
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

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
    use candle_core::Device;

    use super::*;

    /// Prompt-sized products (more rows than [`gemv::MAX_ROWS`]) of f32 weights whose rows are
    /// 2 KiB apart (the outer-product tiles where the CPU has AVX-512) and of others (candle's
    /// matmul), in f32 and from f16 weights (widened blocks, one cache line wider for k = 512):
    /// within f32 rounding of the f64 product.
    #[test]
    fn prompt_products_match_the_exact_product() -> Result<()> {
        let dev = Device::Cpu;
        for (m, k, n) in [(gemv::MAX_ROWS + 7, 512, 37), (gemv::MAX_ROWS + 7, 96, 37)] {
            let x = Tensor::randn(0f32, 1., (1, m, k), &dev)?;
            for dtype in [DType::F32, DType::F16] {
                let w = Tensor::randn(0f32, 1., (n, k), &dev)?.to_dtype(dtype)?;
                let got: Vec<f32> = Weight::Dense(w.clone())
                    .product(&x)?
                    .flatten_all()?
                    .to_vec1()?;
                let (xs, ws): (Vec<f32>, Vec<f32>) = (
                    x.flatten_all()?.to_vec1()?,
                    w.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                );
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|q| xs[i * k + q] as f64 * ws[j * k + q] as f64)
                            .sum();
                        let got = got[i * n + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{dtype:?} k={k} [{i}, {j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
