//! A group of ranks on GPUs through NCCL (`ncclAllReduce`, `ncclAllGather`, `ncclBroadcast` on
//! each rank's CUDA stream, through cudarc): one rank per GPU, in one process per GPU or one
//! thread per GPU of a process. Rank 0 makes the group's id ([`unique_id`]) and hands it to the
//! others (a TCP connection to rank 0 for processes on several hosts, as [`super::tcp`] sets one
//! up); every rank then calls [`NcclCommunicator::new`] with it.
//!
//! NCCL gives every rank the same bits (a ring reduces each chunk once, in one order, and sends
//! the result around), which [`Communicator`] asks for; the order is NCCL's, not rank order, so
//! a sum can differ in the last bit from [`super::LocalCommunicator`]'s. Half-precision sums are
//! NCCL's (rounded to the dtype at each step of the ring).
//!
//! Built with the `nccl` feature (which needs `libnccl.so.2` at run time). Not yet run on a
//! machine with several GPUs: see issue 23's notes in BENCHMARKS.md.

use std::sync::Mutex;

use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp};
use candle_core::cuda_backend::{CudaStorage, CudaStorageSlice};
use candle_core::{CpuStorage, CudaDevice, Device, Layout, Shape, Tensor};

use super::comm::tp_error;
use super::Communicator;
use crate::error::Result;

/// A new group id, made once by rank 0: 128 bytes to hand to every rank.
pub fn unique_id() -> Result<[u8; 128]> {
    let id = Id::new().map_err(|e| tp_error(0, format!("ncclGetUniqueId: {e:?}")))?;
    Ok(id.internal().map(|c| c as u8))
}

/// One rank of a group on GPUs.
#[derive(Debug)]
pub struct NcclCommunicator {
    rank: usize,
    world_size: usize,
    /// NCCL's calls on one communicator are made one at a time.
    comm: Mutex<SendComm>,
}

/// An NCCL communicator, used from whichever thread holds the lock.
#[derive(Debug)]
struct SendComm(Comm);

// SAFETY: an NCCL communicator is a handle that any thread may use, one call at a time (the
// `Mutex` around it); its stream is the device's, which candle uses from any thread too.
#[allow(unsafe_code)]
unsafe impl Send for SendComm {}
// SAFETY: as above: shared references only reach it through the `Mutex`.
#[allow(unsafe_code)]
unsafe impl Sync for SendComm {}

impl NcclCommunicator {
    /// Rank `rank` of `world_size` on `device` (a CUDA device, one per rank), joining the group
    /// of `id` ([`unique_id`], from rank 0). Blocks until every rank has joined.
    pub fn new(device: &Device, rank: usize, world_size: usize, id: [u8; 128]) -> Result<Self> {
        let err = |m: String| tp_error(world_size, m);
        let Device::Cuda(dev) = device else {
            return Err(err(format!(
                "rank {rank}: NCCL needs a CUDA device, not {device:?}"
            )));
        };
        if rank >= world_size {
            return Err(err(format!("rank {rank} is not below the world size")));
        }
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let comm = Comm::from_rank(dev.cuda_stream(), rank, world_size, id)
            .map_err(|e| err(format!("rank {rank}: ncclCommInitRank: {e:?}")))?;
        Ok(Self {
            rank,
            world_size,
            comm: Mutex::new(SendComm(comm)),
        })
    }

    /// The collective `kind` over `x`'s contiguous data.
    fn collective(&self, x: &Tensor, kind: Kind) -> Result<Tensor> {
        if !x.device().is_cuda() {
            return Err(tp_error(
                self.world_size,
                format!("NCCL collectives take CUDA tensors, not {:?}", x.device()),
            ));
        }
        let comm = self
            .comm
            .lock()
            .map_err(|_| tp_error(self.world_size, "a collective panicked".into()))?;
        let op = Collective {
            comm: &comm.0,
            kind,
            world_size: self.world_size,
        };
        Ok(x.contiguous()?.apply_op1_no_bwd(&op)?)
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
        self.collective(x, Kind::AllReduceSum)
    }

    fn all_gather(&self, x: &Tensor, dim: usize) -> Result<Tensor> {
        // NCCL concatenates the ranks' buffers: gather along the first dimension.
        if dim == 0 {
            return self.collective(x, Kind::AllGather);
        }
        let front = x.transpose(0, dim)?; // [n_dim, .., n_0, ..]
        let all = self.collective(&front, Kind::AllGather)?; // [ranks * n_dim, .., n_0, ..]
        Ok(all.transpose(0, dim)?.contiguous()?)
    }

    fn broadcast(&self, x: &Tensor, root: usize) -> Result<Tensor> {
        if root >= self.world_size {
            return Err(tp_error(
                self.world_size,
                format!("broadcast from rank {root}, past the group"),
            ));
        }
        self.collective(x, Kind::Broadcast(root))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    AllReduceSum,
    AllGather,
    Broadcast(usize),
}

/// One collective on the device's stream, as a candle op (its output a new tensor).
struct Collective<'a> {
    comm: &'a Comm,
    kind: Kind,
    world_size: usize,
}

impl Collective<'_> {
    fn run<T: NcclType + DeviceRepr + ValidAsZeroBits>(
        &self,
        x: &candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
        l: &Layout,
        dev: &CudaDevice,
    ) -> candle_core::Result<(
        candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
        Shape,
    )> {
        let n = l.shape().elem_count();
        let x = x.slice(l.start_offset()..l.start_offset() + n);
        let nccl = |what: &str, e| candle_core::Error::Msg(format!("NCCL {what}: {e:?}"));
        Ok(match self.kind {
            Kind::AllReduceSum => {
                let mut out = dev.alloc_zeros::<T>(n)?;
                self.comm
                    .all_reduce(&x, &mut out, &ReduceOp::Sum)
                    .map_err(|e| nccl("all-reduce", e))?;
                (out, l.shape().clone())
            }
            Kind::AllGather => {
                let mut out = dev.alloc_zeros::<T>(n * self.world_size)?;
                self.comm
                    .all_gather(&x, &mut out)
                    .map_err(|e| nccl("all-gather", e))?;
                let mut dims = l.shape().dims().to_vec();
                dims[0] *= self.world_size;
                (out, Shape::from(dims))
            }
            Kind::Broadcast(root) => {
                let mut out = dev.alloc_zeros::<T>(n)?;
                self.comm
                    .broadcast(Some(&x), &mut out, root as i32)
                    .map_err(|e| nccl("broadcast", e))?;
                (out, l.shape().clone())
            }
        })
    }
}

impl candle_core::CustomOp1 for Collective<'_> {
    fn name(&self) -> &'static str {
        "lmgen-nccl"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(candle_core::Error::Msg(
            "NCCL collectives take CUDA tensors".into(),
        ))
    }

    fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = x.device.clone();
        let (slice, shape) = match &x.slice {
            CudaStorageSlice::F32(s) => {
                let (o, sh) = self.run(s, l, &dev)?;
                (CudaStorageSlice::F32(o), sh)
            }
            CudaStorageSlice::F16(s) => {
                let (o, sh) = self.run(s, l, &dev)?;
                (CudaStorageSlice::F16(o), sh)
            }
            CudaStorageSlice::BF16(s) => {
                let (o, sh) = self.run(s, l, &dev)?;
                (CudaStorageSlice::BF16(o), sh)
            }
            CudaStorageSlice::U32(s) => {
                let (o, sh) = self.run(s, l, &dev)?;
                (CudaStorageSlice::U32(o), sh)
            }
            CudaStorageSlice::I64(s) => {
                let (o, sh) = self.run(s, l, &dev)?;
                (CudaStorageSlice::I64(o), sh)
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "NCCL collectives take f32, f16, bf16, u32 or i64 tensors".into(),
                ))
            }
        };
        Ok((CudaStorage { slice, device: dev }, shape))
    }
}
