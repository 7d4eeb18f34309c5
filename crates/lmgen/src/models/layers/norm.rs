//! RMSNorm (Llama's `w`, Gemma's `1 + w`) and LayerNorm (GPT-2).

use candle_core::{DType, Tensor, D};

use super::LoadContext;
use crate::error::Result;
use crate::models::config::NormKind;

/// `x / sqrt(mean(x^2) + eps) * w`, computed in f32 (HF `LlamaRMSNorm`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
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
        })
    }

    /// `[.., dim] -> [.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
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

    /// `(x + h, norm(x + h))` in one launch on a GPU ([`crate::cuda::add_rms_norm`]), `None`
    /// where that kernel does not apply.
    pub fn forward_after_add(&self, x: &Tensor, h: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        crate::cuda::add_rms_norm(x, h, &self.weight, self.eps)
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
