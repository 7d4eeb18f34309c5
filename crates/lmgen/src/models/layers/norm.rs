//! RMSNorm (Llama's `w`, Gemma's `1 + w`) and LayerNorm (GPT-2).

use std::ops::Range;
use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use super::LoadContext;
use crate::error::Result;
use crate::models::config::NormKind;
use crate::parallel::Communicator;

/// `x / sqrt(mean(x^2) + eps) * w`, computed in f32 (HF `LlamaRMSNorm`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
    /// A norm over features split across tensor-parallel ranks (`None`: all of them here).
    split: Option<SplitNorm>,
}

/// This rank's features of a norm whose features are split across ranks (OLMo 2's q/k norms
/// over every head): the mean of squares is all-reduced.
#[derive(Debug, Clone)]
struct SplitNorm {
    comm: Arc<dyn Communicator>,
    /// The whole norm's features, counted once per rank that holds them: `dim * copies`.
    divisor: f64,
}

impl RmsNorm {
    /// Loads `{prefix}.weight` `[dim]`; for [`NormKind::RmsUnitOffset`] the scale is `1 + w`,
    /// computed in f32, then cast (HF `Gemma2RMSNorm`), or the stored weight where the file holds
    /// `1 + w` already (a Gemma 3 GGUF, [`crate::load::Weights::norms_include_unit_offset`]).
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        dim: usize,
        eps: f64,
        kind: NormKind,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let weight = match kind {
            NormKind::Rms => ctx.tensor(&name, &[dim])?,
            NormKind::RmsUnitOffset if ctx.weights.norms_include_unit_offset() => {
                ctx.tensor(&name, &[dim])?
            }
            NormKind::RmsUnitOffset => {
                (ctx.tensor_as(&name, &[dim], DType::F32)? + 1.0)?.to_dtype(ctx.dtype)?
            }
        };
        Ok(Self {
            weight,
            eps: eps as f32,
            split: None,
        })
    }

    /// This rank's `features` of a norm over `dim` features split across the ranks of `comm`,
    /// each feature held by `copies` ranks (key heads replicated on several ranks).
    pub fn split(
        self,
        features: Range<usize>,
        (dim, copies): (usize, usize),
        comm: Arc<dyn Communicator>,
    ) -> Result<Self> {
        Ok(Self {
            weight: self
                .weight
                .narrow(0, features.start, features.len())?
                .contiguous()?,
            split: Some(SplitNorm {
                comm,
                divisor: (dim * copies) as f64,
            }),
            ..self
        })
    }

    /// The weight (`1 + w` already for Gemma's kind) and eps of a norm over all its features
    /// on this rank, for a kernel that normalises as it goes ([`crate::cuda::rope_kv_write`]);
    /// `None` for a norm split across ranks.
    pub fn weight_eps(&self) -> Option<(&Tensor, f32)> {
        self.split.is_none().then_some((&self.weight, self.eps))
    }

    /// `[.., dim] -> [.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(split) = &self.split {
            return self.forward_split(x, split);
        }
        if x.dtype() == DType::F64 {
            let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
            let inv = (ms + self.eps as f64)?.sqrt()?.recip()?;
            return Ok(x.broadcast_mul(&inv)?.broadcast_mul(&self.weight)?);
        }
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }

    /// `[.., features] -> [.., features]`: the sum of squares over this rank's features,
    /// all-reduced, is the whole norm's (in f32, f64 for a float64 model).
    fn forward_split(&self, x: &Tensor, split: &SplitNorm) -> Result<Tensor> {
        let wide = if x.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let xw = x.to_dtype(wide)?;
        let squares = split
            .comm
            .all_reduce_sum(&xw.sqr()?.sum_keepdim(D::Minus1)?)?; // [.., 1]
        let inv = ((squares / split.divisor)? + self.eps as f64)?
            .sqrt()?
            .recip()?;
        let w = self.weight.to_dtype(wide)?;
        Ok(xw
            .broadcast_mul(&inv)?
            .broadcast_mul(&w)?
            .to_dtype(x.dtype())?)
    }

    /// `(x + h, norm(x + h))` in one launch on a GPU ([`crate::cuda::add_rms_norm`]) or one
    /// pass on the CPU ([`super::fused_cpu::add_rms_norm`]), `None` where neither applies.
    pub fn forward_after_add(&self, x: &Tensor, h: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        if self.split.is_some() {
            return Ok(None);
        }
        if let Some(out) = crate::cuda::add_rms_norm(x, h, &self.weight, self.eps)? {
            return Ok(Some(out));
        }
        super::fused_cpu::add_rms_norm(x, h, &self.weight, self.eps)
    }
}

/// `nn.LayerNorm` with weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, both `[dim]`.
    pub fn load(ctx: &LoadContext<'_>, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: ctx.tensor(&format!("{prefix}.weight"), &[dim])?,
            bias: ctx.tensor(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    /// `[.., dim] -> [.., dim]`: `(x - mean) / sqrt(var + eps) * w + b`, the (biased) variance
    /// taken over the centred values, as torch's moments are; candle's fused kernel takes
    /// `E[x^2] - mean^2` in f32, which loses digits wherever the mean is large against the
    /// spread. Half-precision inputs are normalised in f32 (as torch computes them), f64 in f64.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = match dtype {
            DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
            _ => x.clone(),
        };
        let mean = x.mean_keepdim(D::Minus1)?; // [.., 1]
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let (w, b) = (
            self.weight.to_dtype(normed.dtype())?,
            self.bias.to_dtype(normed.dtype())?,
        );
        Ok(normed
            .broadcast_mul(&w)?
            .broadcast_add(&b)?
            .to_dtype(dtype)?)
    }
}
