//! A gated DeltaNet layer split across tensor-parallel ranks by heads: each rank runs
//! `num_value_heads / world_size` value heads with the key heads they read (its share of them,
//! or, with fewer key heads than ranks, the one they share, replicated), so the input
//! projections and the convolution keep the rank's channels (column-parallel) and `out_proj` its
//! columns (row-parallel, one all-reduce). The recurrent state of each rank is its heads'.

use candle_core::Tensor;

use super::{grouped_row_order, wide_context, GatedDeltaNet};
use crate::error::Result;
use crate::models::config::{LinearAttentionConfig, LinearAttentionLayout, ModelConfig, NormKind};
use crate::models::layers::conv::CausalConv1d;
use crate::models::layers::linear::{Linear, RowOutput, Rows};
use crate::models::layers::norm::RmsNorm;
use crate::models::layers::LoadContext;
use crate::parallel::shard::rows;
use crate::parallel::Shard;

/// Loads this rank's heads of the layer `prefix` (see [`GatedDeltaNet::load`]).
pub(super) fn load_split(
    ctx: &LoadContext<'_>,
    prefix: &str,
    cfg: &ModelConfig,
    la: LinearAttentionConfig,
    shard: &Shard,
) -> Result<GatedDeltaNet> {
    let h = cfg.hidden_size;
    let (nk, nv, dk, dv) = (
        la.num_key_heads,
        la.num_value_heads,
        la.key_head_dim,
        la.value_head_dim,
    );
    let values = shard.split(nv, "linear_num_value_heads")?;
    let keys = shard.split_shared(nk, "linear_num_key_heads", (nv, "linear_num_value_heads"))?;
    let local = LinearAttentionConfig {
        num_key_heads: keys.len(),
        num_value_heads: values.len(),
        ..la
    };
    let name = |n: &str| format!("{prefix}.{n}");
    let (wide, ctx32) = wide_context(ctx);
    // The convolution's channels: q and k of the rank's key heads, v of its value heads.
    let conv_channels = [
        rows(&keys, dk, 0),
        rows(&keys, dk, nk * dk),
        rows(&values, dv, 2 * nk * dk),
    ];
    let (in_proj, in_proj_ba) = match la.layout {
        LinearAttentionLayout::Separate => {
            let (qkv, z, b, a) = (
                name("in_proj_qkv"),
                name("in_proj_z"),
                name("in_proj_b"),
                name("in_proj_a"),
            );
            let part = |prefix, out, rows| Rows { prefix, out, rows };
            let mut parts: Vec<Rows<'_>> = conv_channels
                .iter()
                .map(|r| part(&qkv, la.conv_dim(), r.clone()))
                .collect();
            parts.push(part(&z, la.value_dim(), rows(&values, dv, 0)));
            let ba = [part(&b, nv, values.clone()), part(&a, nv, values.clone())];
            (
                Linear::load_rows(ctx, &parts, h, false)?,
                Linear::load_rows(&ctx32, &ba, h, false)?,
            )
        }
        LinearAttentionLayout::Grouped => {
            let r = nv / nk;
            let (qkvz_order, ba_order) =
                grouped_row_order((nk, r, dk, dv), (keys.clone(), values.clone()));
            let picked = |ctx: &LoadContext<'_>, n: &str, out: usize, order: &[u32]| {
                let w = ctx.weight(&name(n), &[out, h])?;
                let idx = Tensor::new(order, w.device())?;
                let w = w.index_select(&idx, 0)?.contiguous()?;
                Linear::from_weight(ctx, &name(n), w, None)
            };
            (
                picked(
                    ctx,
                    "in_proj_qkvz.weight",
                    nk * (2 * dk + 2 * r * dv),
                    &qkvz_order,
                )?,
                picked(&ctx32, "in_proj_ba.weight", nk * 2 * r, &ba_order)?,
            )
        }
    };
    let conv1d = CausalConv1d::load(
        ctx,
        &name("conv1d"),
        (la.conv_dim(), la.conv_kernel_dim),
        false,
        wide,
    )?
    .keep_channels(&conv_channels)?;
    let (neg_a, dt_bias, decay) = GatedDeltaNet::decay(ctx, prefix, nv, values.clone())?;
    Ok(GatedDeltaNet {
        in_proj,
        in_proj_ba,
        conv1d,
        neg_a,
        dt_bias,
        decay,
        norm: RmsNorm::load(ctx, &name("norm"), dv, cfg.norm_eps, NormKind::Rms)?,
        out_proj: Linear::load_columns(
            ctx,
            &name("out_proj"),
            (la.value_dim(), h),
            rows(&values, dv, 0),
            false,
            RowOutput::Reduced(shard.comm().clone()),
        )?,
        cfg: local,
        wide,
    })
}
