//! An attention block split across tensor-parallel ranks by heads (Megatron-LM's
//! `ParallelAttention`): each rank runs `num_attention_heads / world_size` query heads with the
//! key/value heads they read (its share of them, or, with fewer key/value heads than ranks, the
//! one they share, replicated), so q/k/v are column-parallel and `o_proj` row-parallel, with one
//! all-reduce per block. Each rank's KV cache holds its own key/value heads.

use candle_core::DType;

use super::{qk_norms, Attention, AttentionShape};
use crate::error::Result;
use crate::models::config::{ModelConfig, ProjectionLayout, QkNorm};
use crate::models::layers::linear::{Linear, RowOutput, Rows};
use crate::models::layers::LoadContext;
use crate::parallel::shard::rows;
use crate::parallel::Shard;

/// Loads this rank's heads of the block `prefix` (see [`Attention::load`]).
pub(super) fn load_split(
    ctx: &LoadContext<'_>,
    prefix: &str,
    cfg: &ModelConfig,
    layer_idx: usize,
    shard: &Shard,
) -> Result<Attention> {
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let heads = shard.split(nh, "num_attention_heads")?;
    let kv = shard.split_shared(nkv, "num_key_value_heads", (nh, "num_attention_heads"))?;
    // With the output gate each head's query is followed by its gate: `[nh, 2 d]` rows.
    let q_head = if cfg.attn_output_gate { 2 * d } else { d };
    let q_width = nh * q_head;
    let (q, k, v) = (
        format!("{prefix}.q_proj"),
        format!("{prefix}.k_proj"),
        format!("{prefix}.v_proj"),
    );
    let fused = format!("{prefix}.qkv_proj");
    let parts = match cfg.projections {
        ProjectionLayout::Separate => [
            (q.as_str(), q_width, rows(&heads, q_head, 0)),
            (k.as_str(), nkv * d, rows(&kv, d, 0)),
            (v.as_str(), nkv * d, rows(&kv, d, 0)),
        ],
        // One stored `[q_width + 2 nkv d, h]` tensor: the rank's rows of each of its parts.
        ProjectionLayout::Fused => {
            let out = q_width + 2 * nkv * d;
            [
                (fused.as_str(), out, rows(&heads, q_head, 0)),
                (fused.as_str(), out, rows(&kv, d, q_width)),
                (fused.as_str(), out, rows(&kv, d, q_width + nkv * d)),
            ]
        }
    };
    let parts = parts.map(|(prefix, out, rows)| Rows { prefix, out, rows });
    let qkv = Linear::load_rows(ctx, &parts, h, cfg.qkv_bias)?;
    let o_proj = Linear::load_columns(
        ctx,
        &format!("{prefix}.o_proj"),
        (nh * d, h),
        rows(&heads, d, 0),
        cfg.o_bias,
        RowOutput::Reduced(shard.comm().clone()),
    )?;
    let shape = AttentionShape {
        num_heads: heads.len(),
        num_kv_heads: kv.len(),
        head_dim: d,
    };
    let mut attention = Attention::new(qkv, o_proj, shape, cfg.attention_scaling, layer_idx);
    attention.qk_norm = match qk_norms(ctx, prefix, cfg)? {
        // Over the whole projection: this rank's heads' features, the mean of squares reduced.
        // A replicated key/value head is held by `copies` ranks.
        Some((QkNorm::Projection, q_norm, k_norm)) => {
            let copies = kv.len() * shard.world_size() / nkv;
            let comm = shard.comm();
            Some((
                QkNorm::Projection,
                q_norm.split(rows(&heads, d, 0), (nh * d, 1), comm.clone())?,
                k_norm.split(rows(&kv, d, 0), (nkv * d, copies), comm.clone())?,
            ))
        }
        other => other,
    };
    if cfg.attention_sinks {
        let sinks = ctx.tensor_as(&format!("{prefix}.sinks"), &[nh], DType::F32)?;
        attention.sinks = Some(sinks.narrow(0, heads.start, heads.len())?.contiguous()?);
    }
    Ok(attention
        .with_split_heads(shard.comm().clone())
        .configured(ctx, cfg))
}
