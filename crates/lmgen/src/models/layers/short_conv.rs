//! LFM2's short gated convolution (HF `Lfm2ShortConv`): `B`, `C`, `x = in_proj(x)`, then
//! `out_proj(C * conv(B * x))` with a causal depthwise convolution of `conv_L_cache` taps.

use candle_core::{Tensor, D};

use super::conv::CausalConv1d;
use super::linear::Linear;
use super::LoadContext;
use crate::cache::LayerState;
use crate::error::{Error, Result};
use crate::models::config::ModelConfig;

/// One short-convolution layer.
#[derive(Debug, Clone)]
pub struct ShortConv {
    /// `[3 * hidden, hidden]`: B, C and x, in that order.
    in_proj: Linear,
    conv: CausalConv1d,
    out_proj: Linear,
    hidden: usize,
}

impl ShortConv {
    /// Loads `{prefix}` (`model.layers.{i}.conv`): `in_proj`, `conv`, `out_proj`.
    pub fn load(ctx: &LoadContext<'_>, prefix: &str, cfg: &ModelConfig) -> Result<Self> {
        let sc = cfg
            .short_conv
            .ok_or_else(|| Error::config("a `conv` layer without convolution settings"))?;
        let h = cfg.hidden_size;
        Ok(Self {
            in_proj: Linear::load(ctx, &format!("{prefix}.in_proj"), h, 3 * h, sc.bias)?,
            conv: CausalConv1d::load(
                ctx,
                &format!("{prefix}.conv"),
                (h, sc.kernel),
                sc.bias,
                ctx.dtype,
            )?,
            out_proj: Linear::load(ctx, &format!("{prefix}.out_proj"), h, h, sc.bias)?,
            hidden: h,
        })
    }

    /// `x` `[b, t, hidden]` (padding already zeroed) after `state` -> `[b, t, hidden]` and the
    /// new state.
    pub fn forward(&self, x: &Tensor, state: Option<&LayerState>) -> Result<(Tensor, LayerState)> {
        let h = self.hidden;
        let bcx = self.in_proj.forward(x)?; // [b, t, 3h]
        let b = bcx.narrow(D::Minus1, 0, h)?;
        let c = bcx.narrow(D::Minus1, h, h)?;
        let xs = bcx.narrow(D::Minus1, 2 * h, h)?;
        let (y, conv) = self.conv.forward(&(b * xs)?, state.map(|s| &s.conv))?;
        let out = self.out_proj.forward(&(c * y)?)?;
        let len = state.map_or(0, |s| s.len) + x.dim(1)?;
        Ok((
            out,
            LayerState {
                conv,
                recurrent: None,
                len,
            },
        ))
    }
}
