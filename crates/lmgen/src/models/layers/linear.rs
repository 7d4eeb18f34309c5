//! `nn.Linear` (weight `[out, in]`) and GPT-2's `Conv1D` (weight `[in, out]`, transposed at load).

use candle_core::{Module, Tensor};

use super::LoadContext;
use crate::error::Result;

/// `y = x W^T + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    /// Wraps an existing `[out, in]` weight (used for tied embeddings).
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
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
        let weight = ctx.tensor(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(ctx.tensor(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Self::from_weight(weight, bias))
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
        Ok(Self::from_weight(weight, Some(bias)))
    }

    /// `[.., in] -> [.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.inner.forward(x)?)
    }

    /// The `[out, in]` weight.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}
