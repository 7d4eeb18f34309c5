//! Tensor parallelism (Megatron-style): one model split across `world_size` ranks, each holding a
//! slice of every weight and exchanging activations through a [`Communicator`].
//!
//! - [`comm`]: the collectives a split model needs (all-reduce, all-gather, broadcast);
//! - [`exchange`]: those collectives from an exchange of every rank's tensor;
//! - [`local`]: an in-process group of ranks running in threads, for tests on the CPU;
//! - [`tcp`]: a group of processes (or machines) over TCP, through rank 0;
//! - `nccl` (feature `nccl`): a group of GPUs through NCCL;
//! - [`shard`]: which part of each weight a rank holds, resolved once at load
//!   ([`crate::models::load_model_sharded`]).
//!
//! Column-parallel projections (q/k/v, gate/up) keep a rank's rows of `[out, in]` and need no
//! communication; row-parallel ones (`o_proj`, `down_proj`) keep its columns and sum the ranks'
//! partial outputs with one all-reduce; the embedding and the LM head are split by vocabulary.

pub mod comm;
pub mod exchange;
pub mod local;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod shard;
pub mod tcp;

pub use comm::Communicator;
pub use exchange::Exchange;
pub use local::LocalCommunicator;
#[cfg(feature = "nccl")]
pub use nccl::NcclCommunicator;
pub use shard::Shard;
pub use tcp::TcpCommunicator;

use std::sync::Arc;

use candle_core::Device;

use crate::error::Result;

/// The group a split model's collectives run in on `device`, for ranks that have already joined
/// `control` (a group over TCP, say): `control` itself on the CPU; on a CUDA device an NCCL group
/// (feature `nccl`), whose id rank 0 makes and broadcasts over `control` (how ranks on several
/// hosts get it). Every rank of `control` calls this, each with its own device.
pub fn data_group(
    control: &Arc<dyn Communicator>,
    device: &Device,
) -> Result<Arc<dyn Communicator>> {
    if !device.is_cuda() {
        return Ok(control.clone());
    }
    #[cfg(feature = "nccl")]
    {
        let mine = match control.rank() {
            0 => nccl::unique_id()?,
            _ => [0; 128],
        };
        let sent = control.broadcast(&candle_core::Tensor::new(&mine[..], &Device::Cpu)?, 0)?;
        let id: [u8; 128] = sent.to_vec1::<u8>()?.try_into().map_err(|got: Vec<u8>| {
            comm::tp_error(
                control.world_size(),
                format!(
                    "the NCCL group id came over as {} bytes, not 128",
                    got.len()
                ),
            )
        })?;
        let group = NcclCommunicator::new(device, control.rank(), control.world_size(), id)?;
        Ok(Arc::new(group))
    }
    #[cfg(not(feature = "nccl"))]
    Err(comm::tp_error(
        control.world_size(),
        "ranks on CUDA devices exchange activations through NCCL: this lmgen was built without \
         it (build with `--features lmgen/nccl`, e.g. `tools/build_cuda.sh --features lmgen/nccl`)"
            .into(),
    ))
}
