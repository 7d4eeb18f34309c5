//! Linear layers split across tensor-parallel ranks (Megatron-LM's `ColumnParallelLinear` and
//! `RowParallelLinear`), loaded from the same checkpoint as the whole layer.
//!
//! - Column-parallel ([`Linear::load_rows`]): a rank keeps some rows of each `[out, in]` weight
//!   (its heads of q/k/v, its part of gate/up), and computes its part of the output from the whole
//!   input; no communication. Parts of a fused layer (q, k and v; gate and up; or the parts of one
//!   stored fused tensor) are each cut, then stacked, so the rank's output keeps the parts' order.
//!   [`Linear::gathered`] makes the whole output appear on every rank (the LM head).
//! - Row-parallel ([`Linear::load_columns`]): a rank keeps some columns of `[out, in]` (the input
//!   features its column-parallel partner produced), so its product is a partial sum of the
//!   output: summed over the ranks by one all-reduce, or left to the caller to sum with other
//!   partial outputs ([`RowOutput::Partial`]: a mixture of experts reduces once for all).
//!
//! Weights are read dense (rows straight from the file; columns after reading the whole tensor).

use std::ops::Range;
use std::sync::Arc;

use super::{Collective, Gather, Linear};
use crate::error::Result;
use crate::models::layers::LoadContext;
use crate::parallel::Communicator;

/// Rows `rows` of the `[out, in]` weight `{prefix}.weight` (and of `{prefix}.bias` `[out]`).
#[derive(Debug, Clone)]
pub struct Rows<'a> {
    pub prefix: &'a str,
    /// The stored number of rows.
    pub out: usize,
    pub rows: Range<usize>,
}

/// What a row-parallel layer returns.
#[derive(Debug, Clone)]
pub enum RowOutput {
    /// The whole layer's output on every rank: the partial products all-reduced, then the bias.
    Reduced(Arc<dyn Communicator>),
    /// This rank's partial product, for the caller to sum over the ranks; rank 0 alone adds the
    /// bias (`first`: whether this is rank 0).
    Partial { first: bool },
}

/// Which features of a GPT-2 `Conv1D` a rank keeps.
#[derive(Debug, Clone)]
pub enum Conv1dSplit<'a> {
    /// Output features (column-parallel).
    Outputs(&'a [Range<usize>]),
    /// Input features (row-parallel), the outputs all-reduced over `comm`'s ranks.
    Inputs(Range<usize>, Arc<dyn Communicator>),
}

impl Linear {
    /// Column-parallel: the rows `parts` name, stacked in that order into `[sum rows, in_dim]`
    /// (biases likewise when `bias`).
    pub fn load_rows(
        ctx: &LoadContext<'_>,
        parts: &[Rows<'_>],
        in_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weights = parts
            .iter()
            .map(|p| {
                let name = format!("{}.weight", p.prefix);
                ctx.tensor_rows(&name, [p.out, in_dim], p.rows.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        let biases = if bias {
            let b = parts
                .iter()
                .map(|p| {
                    let all = ctx.tensor(&format!("{}.bias", p.prefix), &[p.out])?;
                    Ok(all.narrow(0, p.rows.start, p.rows.len())?)
                })
                .collect::<Result<Vec<_>>>()?;
            Some(super::cat(b)?.contiguous()?)
        } else {
            None
        };
        let name = format!("{}.weight", parts.first().map_or("", |p| p.prefix));
        Self::from_weight(ctx, &name, super::cat(weights)?, biases)
    }

    /// Row-parallel: columns `cols` of `{prefix}.weight` `[out_dim, in_dim]` (`in_dim` is the
    /// whole layer's input width), `{prefix}.bias` `[out_dim]` when `bias`; see [`RowOutput`].
    pub fn load_columns(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (in_dim, out_dim): (usize, usize),
        cols: Range<usize>,
        bias: bool,
        output: RowOutput,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let weight = ctx
            .weight(&name, &[out_dim, in_dim])?
            .narrow(1, cols.start, cols.len())?
            .contiguous()?; // [out, cols]
        let keep_bias = match output {
            RowOutput::Reduced(_) => true,
            RowOutput::Partial { first } => first,
        };
        let bias = (bias && keep_bias)
            .then(|| ctx.tensor(&format!("{prefix}.bias"), &[out_dim]))
            .transpose()?;
        let mut linear = Self::from_weight(ctx, &name, weight, bias)?;
        if let RowOutput::Reduced(comm) = output {
            linear.collective = Some(Collective::Sum(comm));
        }
        Ok(linear)
    }

    /// A GPT-2 `Conv1D` (`{prefix}.weight` `[in, out]` on disk, `{prefix}.bias` `[out]`) split
    /// across ranks: its output features `ranges` (column-parallel, stacked in that order), or
    /// its input features (row-parallel, the bias added after the all-reduce).
    pub fn load_conv1d_split(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (in_dim, out_dim): (usize, usize),
        split: Conv1dSplit<'_>,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let weight = ctx.weight(&name, &[in_dim, out_dim])?.t()?; // [out, in]
        let bias = ctx.tensor(&format!("{prefix}.bias"), &[out_dim])?;
        match split {
            Conv1dSplit::Outputs(ranges) => {
                let cut = |t: &candle_core::Tensor| -> Result<candle_core::Tensor> {
                    let parts = ranges
                        .iter()
                        .map(|r| t.narrow(0, r.start, r.len()))
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Ok(candle_core::Tensor::cat(&parts, 0)?.contiguous()?)
                };
                Self::from_weight(ctx, &name, cut(&weight)?, Some(cut(&bias)?))
            }
            Conv1dSplit::Inputs(cols, comm) => {
                let weight = weight.narrow(1, cols.start, cols.len())?.contiguous()?;
                let mut linear = Self::from_weight(ctx, &name, weight, Some(bias))?;
                linear.collective = Some(Collective::Sum(comm));
                Ok(linear)
            }
        }
    }

    /// A column-parallel layer whose whole output every rank gets (an LM head split by
    /// vocabulary, [`crate::parallel::Shard::split_vocab`]): the ranks' outputs, `chunk`
    /// columns each but fewer on the last ranks, concatenated into `total` columns.
    pub fn gathered(mut self, comm: Arc<dyn Communicator>, (chunk, total): (usize, usize)) -> Self {
        self.collective = Some(Collective::Gather(Box::new(Gather { comm, chunk, total })));
        self
    }

    /// The LM head `{prefix}.weight` `[vocab, hidden]` (no bias): whole, or split by vocabulary
    /// across tensor-parallel ranks, each gathering the whole logits (`field`: the config field
    /// of `vocab`, for errors).
    pub fn load_lm_head(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (hidden, vocab): (usize, usize),
        field: &str,
    ) -> Result<Self> {
        let Some(shard) = ctx.shard else {
            return Self::load(ctx, prefix, hidden, vocab, false);
        };
        let rows = shard.split_vocab(vocab, field)?;
        let part = Rows {
            prefix,
            out: vocab,
            rows,
        };
        let head = Self::load_rows(ctx, &[part], hidden, false)?;
        let chunk = vocab.div_ceil(shard.world_size());
        Ok(head.gathered(shard.comm().clone(), (chunk, vocab)))
    }

    /// `{prefix}` `[out_dim, in_dim]`: whole, or this rank's part of the output features split
    /// across tensor-parallel ranks (column-parallel; `field`: the config field of `out_dim`).
    pub fn load_out_split(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (in_dim, out_dim): (usize, usize),
        bias: bool,
        field: &str,
    ) -> Result<Self> {
        let Some(shard) = ctx.shard else {
            return Self::load(ctx, prefix, in_dim, out_dim, bias);
        };
        let rows = shard.split(out_dim, field)?;
        let part = Rows {
            prefix,
            out: out_dim,
            rows,
        };
        Self::load_rows(ctx, &[part], in_dim, bias)
    }

    /// `{prefix}` `[out_dim, in_dim]`: whole, or this rank's part of the input features split
    /// across tensor-parallel ranks (row-parallel, the ranks' outputs all-reduced; `field`: the
    /// config field of `in_dim`).
    pub fn load_in_split(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (in_dim, out_dim): (usize, usize),
        bias: bool,
        field: &str,
    ) -> Result<Self> {
        let Some(shard) = ctx.shard else {
            return Self::load(ctx, prefix, in_dim, out_dim, bias);
        };
        let cols = shard.split(in_dim, field)?;
        let output = RowOutput::Reduced(shard.comm().clone());
        Self::load_columns(ctx, prefix, (in_dim, out_dim), cols, bias, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    use crate::models::layers::linear::Weight;
    use crate::parallel::LocalCommunicator;

    /// A row-parallel product summed over 2 ranks, and a column-parallel one gathered, equal
    /// the whole layer's.
    #[test]
    fn split_products_combine_into_the_whole_product() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 8), &dev)?;
        let w = Tensor::randn(0f32, 1., (6, 8), &dev)?;
        let b = Tensor::randn(0f32, 1., 6, &dev)?;
        let whole = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
        let comms = LocalCommunicator::group(2)?;
        let outs = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|c| {
                    let (x, w, b) = (&x, &w, &b);
                    s.spawn(move || -> Result<(Tensor, Tensor)> {
                        let r = c.rank();
                        let comm: Arc<dyn Communicator> = Arc::new(c);
                        let row = Linear {
                            weight: Weight::Dense(w.narrow(1, 4 * r, 4)?.contiguous()?),
                            bias: Some(b.clone()),
                            collective: Some(Collective::Sum(comm.clone())),
                        };
                        let column = Linear {
                            weight: Weight::Dense(w.narrow(0, 3 * r, 3)?),
                            bias: Some(b.narrow(0, 3 * r, 3)?),
                            collective: None,
                        }
                        .gathered(comm, (3, 6));
                        let x_part = x.narrow(2, 4 * r, 4)?;
                        Ok((row.forward(&x_part)?, column.forward(x)?))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank thread"))
                .collect::<Result<Vec<_>>>()
        })?;
        for (row, column) in outs {
            for got in [row, column] {
                let diff = (got - &whole)?.abs()?.max_all()?.to_dtype(DType::F32)?;
                assert!(diff.to_scalar::<f32>()? < 1e-5);
            }
        }
        Ok(())
    }
}
