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
