//! The collectives a tensor-parallel model runs between its ranks (NCCL's `ncclAllReduce`,
//! `ncclAllGather`, `ncclBroadcast`). Every rank calls the same collectives in the same order,
//! each with a tensor of the same shape and dtype (all-gather: the same shape but along `dim`).

use std::fmt::Debug;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// One rank's end of a group of `world_size` ranks.
///
/// Implementations give every rank bit-identical results (a reduction sums in one fixed order),
/// so that ranks which compute the same thing from the results stay in step: a routing decision
/// or a sampled token taken on each rank is the same on all of them.
pub trait Communicator: Send + Sync + Debug {
    /// This rank, in `0..world_size`.
    fn rank(&self) -> usize;

    /// The number of ranks in the group.
    fn world_size(&self) -> usize;

    /// The element-wise sum of every rank's `x` (same shape and dtype on every rank), in `x`'s
    /// dtype and on its device.
    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor>;

    /// Every rank's `x` concatenated along `dim`, rank 0 first: `[.., n, ..]` ->
    /// `[.., world_size * n, ..]`.
    fn all_gather(&self, x: &Tensor, dim: usize) -> Result<Tensor>;

    /// Rank `root`'s `x`, on every rank (the others pass a tensor of the same shape and dtype,
    /// whose values are ignored).
    fn broadcast(&self, x: &Tensor, root: usize) -> Result<Tensor>;
}

/// An [`Error::TensorParallel`] for a group of `world_size` ranks.
pub(crate) fn tp_error(world_size: usize, message: String) -> Error {
    Error::TensorParallel {
        world_size,
        message,
    }
}
