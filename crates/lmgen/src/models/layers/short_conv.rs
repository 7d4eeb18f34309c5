//! LFM2's short gated convolution (HF `Lfm2ShortConv`): `B`, `C`, `x = in_proj(x)`, then
//! `out_proj(C * conv(B * x))` with a causal depthwise convolution of `conv_L_cache` taps.

use candle_core::{Tensor, D};

use super::conv::CausalConv1d;
use super::linear::{Linear, RowOutput, Rows};
use super::LoadContext;
use crate::cache::LayerState;
use crate::error::{Error, Result};
use crate::models::config::{ModelConfig, ShortConvConfig};
use crate::parallel::shard::rows;
use crate::parallel::Shard;

/// One short-convolution layer.
#[derive(Debug, Clone)]
pub struct ShortConv {
    /// `[3 * hidden, hidden]`: B, C and x, in that order.
    in_proj: Linear,
    conv: CausalConv1d,
    out_proj: Linear,
    /// The channels of B, C and x (this rank's, split across tensor-parallel ranks).
    hidden: usize,
}

impl ShortConv {
    /// Loads `{prefix}` (`model.layers.{i}.conv`): `in_proj`, `conv`, `out_proj`.
    pub fn load(ctx: &LoadContext<'_>, prefix: &str, cfg: &ModelConfig) -> Result<Self> {
        let sc = cfg
            .short_conv
            .ok_or_else(|| Error::config("a `conv` layer without convolution settings"))?;
        let h = cfg.hidden_size;
        if let Some(shard) = ctx.shard {
            return Self::load_split(ctx, prefix, (h, sc), shard);
        }
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

    /// This rank's channels of a layer split across tensor-parallel ranks: B, C and x
    /// column-parallel (the rank's channels of each), the depthwise convolution over those
    /// channels, `out_proj` row-parallel.
    fn load_split(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (h, sc): (usize, ShortConvConfig),
        shard: &Shard,
    ) -> Result<Self> {
        let mine = shard.split(h, "hidden_size")?;
        let in_proj = format!("{prefix}.in_proj");
        let parts = [0, h, 2 * h].map(|offset| Rows {
            prefix: &in_proj,
            out: 3 * h,
            rows: rows(&mine, 1, offset),
        });
        let conv = CausalConv1d::load(
            ctx,
            &format!("{prefix}.conv"),
            (h, sc.kernel),
            sc.bias,
            ctx.dtype,
        )?;
        Ok(Self {
            in_proj: Linear::load_rows(ctx, &parts, h, sc.bias)?,
            conv: conv.keep_channels(std::slice::from_ref(&mine))?,
            out_proj: Linear::load_columns(
                ctx,
                &format!("{prefix}.out_proj"),
                (h, h),
                mine.clone(),
                sc.bias,
                RowOutput::Reduced(shard.comm().clone()),
            )?,
            hidden: mine.len(),
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
