//! Collectives computed from one exchange of every rank's tensor: an implementation that can
//! hand each rank all ranks' tensors ([`Exchange`]: threads sharing memory, processes over TCP)
//! gets [`Communicator`] from the results, computed in rank order on every rank so that all ranks
//! get the same bits.

use std::fmt::Debug;
use std::sync::Arc;

use candle_core::Tensor;

use super::comm::tp_error;
use super::Communicator;
use crate::error::Result;

/// One rank's end of a group that exchanges tensors.
pub trait Exchange: Send + Sync + Debug {
    /// `(rank, world_size)`: this rank, in `0..world_size`, and the number of ranks.
    fn position(&self) -> (usize, usize);

    /// Every rank's `x`, by rank, once all of them have passed theirs.
    fn exchange(&self, x: &Tensor) -> Result<Arc<Vec<Tensor>>>;
}

impl<T: Exchange> Communicator for T {
    fn rank(&self) -> usize {
        self.position().0
    }

    fn world_size(&self) -> usize {
        self.position().1
    }

    fn all_reduce_sum(&self, x: &Tensor) -> Result<Tensor> {
        let parts = self.exchange(x)?;
        check_same(self, &parts, None, "all-reduce")?;
        // Rank order on every rank: the same additions, the same bits.
        let mut sum = parts[0].to_device(x.device())?;
        for part in &parts[1..] {
            sum = (sum + part.to_device(x.device())?)?;
        }
        Ok(sum)
    }

    fn all_gather(&self, x: &Tensor, dim: usize) -> Result<Tensor> {
        let parts = self.exchange(x)?;
        check_same(self, &parts, Some(dim), "all-gather")?;
        let parts = parts
            .iter()
            .map(|p| p.to_device(x.device()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, dim)?)
    }

    fn broadcast(&self, x: &Tensor, root: usize) -> Result<Tensor> {
        let ws = self.position().1;
        if root >= ws {
            let message = format!("broadcast from rank {root}: no such rank");
            return Err(tp_error(ws, message));
        }
        let parts = self.exchange(x)?;
        check_same(self, &parts, None, "broadcast")?;
        Ok(parts[root].to_device(x.device())?)
    }
}

/// Checks that every rank passed the same shape (the dims but `except`) and dtype.
fn check_same<T: Exchange>(
    group: &T,
    parts: &[Tensor],
    except: Option<usize>,
    what: &str,
) -> Result<()> {
    let ws = group.position().1;
    let Some(first) = parts.first().filter(|_| parts.len() == ws) else {
        let message = format!("{what}: {} tensors came back for {ws} ranks", parts.len());
        return Err(tp_error(ws, message));
    };
    let strip = |t: &Tensor| {
        let mut dims = t.dims().to_vec();
        if let Some(d) = except.filter(|&d| d < dims.len()) {
            dims.remove(d);
        }
        dims
    };
    for (rank, part) in parts.iter().enumerate() {
        if strip(part) != strip(first) || part.dtype() != first.dtype() {
            return Err(tp_error(
                ws,
                format!(
                    "{what}: rank {rank} passed {:?} {:?}, rank 0 {:?} {:?}",
                    part.dtype(),
                    part.dims(),
                    first.dtype(),
                    first.dims()
                ),
            ));
        }
    }
    Ok(())
}
