//! GPT-2's `Conv1D` projections, whole or split across tensor-parallel ranks.

use std::ops::Range;

use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::layers::linear::{Conv1dSplit, Linear};
use crate::models::layers::LoadContext;
use crate::parallel::shard::rows;

/// How a block's `Conv1D` projections load: whole, or this rank's heads and intermediate features
/// of a model split across tensor-parallel ranks (`c_attn` and `c_fc` column-parallel, the two
/// `c_proj` row-parallel).
pub(super) struct Projections<'a> {
    ctx: &'a LoadContext<'a>,
    /// `n_embd`, `n_inner`, `head_dim`.
    dims: (usize, usize, usize),
    /// This rank's heads (all of them for a whole model).
    heads: Range<usize>,
    /// This rank's intermediate features.
    inner: Range<usize>,
}

impl<'a> Projections<'a> {
    pub(super) fn new(ctx: &'a LoadContext<'a>, cfg: &ModelConfig) -> Result<Self> {
        let (n, i) = (cfg.num_attention_heads, cfg.intermediate_size);
        let (heads, inner) = match ctx.shard {
            Some(shard) => (shard.split(n, "n_head")?, shard.split(i, "n_inner")?),
            None => (0..n, 0..i),
        };
        Ok(Self {
            ctx,
            dims: (cfg.hidden_size, i, cfg.head_dim),
            heads,
            inner,
        })
    }

    /// The heads a block runs here.
    pub(super) fn heads(&self) -> usize {
        self.heads.len()
    }

    /// `[h] -> [3 h]` (this rank's q, k and v heads).
    pub(super) fn c_attn(&self, prefix: &str) -> Result<Linear> {
        let (h, _, d) = self.dims;
        if self.ctx.shard.is_none() {
            return Linear::load_conv1d(self.ctx, prefix, h, 3 * h);
        }
        let parts = [0, h, 2 * h].map(|offset| rows(&self.heads, d, offset));
        Linear::load_conv1d_split(self.ctx, prefix, (h, 3 * h), Conv1dSplit::Outputs(&parts))
    }

    /// `[h] -> [h]` over this rank's heads' features.
    pub(super) fn c_proj(&self, prefix: &str) -> Result<Linear> {
        let (h, _, d) = self.dims;
        self.row_parallel(prefix, (h, h), rows(&self.heads, d, 0))
    }

    /// `[h] -> [n_inner]` (this rank's features).
    pub(super) fn c_fc(&self, prefix: &str) -> Result<Linear> {
        let (h, i, _) = self.dims;
        if self.ctx.shard.is_none() {
            return Linear::load_conv1d(self.ctx, prefix, h, i);
        }
        let parts = [self.inner.clone()];
        Linear::load_conv1d_split(self.ctx, prefix, (h, i), Conv1dSplit::Outputs(&parts))
    }

    /// `[n_inner] -> [h]` over this rank's features.
    pub(super) fn mlp_c_proj(&self, prefix: &str) -> Result<Linear> {
        let (h, i, _) = self.dims;
        self.row_parallel(prefix, (i, h), self.inner.clone())
    }

    fn row_parallel(
        &self,
        prefix: &str,
        (din, dout): (usize, usize),
        cols: Range<usize>,
    ) -> Result<Linear> {
        match self.ctx.shard {
            None => Linear::load_conv1d(self.ctx, prefix, din, dout),
            Some(shard) => Linear::load_conv1d_split(
                self.ctx,
                prefix,
                (din, dout),
                Conv1dSplit::Inputs(cols, shard.comm().clone()),
            ),
        }
    }
}
