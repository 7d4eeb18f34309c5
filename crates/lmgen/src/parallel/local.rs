//! An in-process group of ranks, one thread each ([`LocalCommunicator::group`]): the collectives
//! of [`Communicator`] over shared memory, so that a split model runs on the CPU in tests.
//!
//! Each collective is one exchange: every rank puts its tensor in its slot, the last to arrive
//! publishes all of them, and each rank computes the result from the published tensors in rank
//! order ([`Exchange`]: a sum is `x_0 + x_1 + ...` on every rank, so all ranks get the same
//! bits). A rank that
//! drops its communicator while others wait in a collective ends their wait with an error rather
//! than a deadlock.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use candle_core::Tensor;

use super::comm::tp_error;
use super::exchange::Exchange;
use crate::error::{Error, Result};

/// One rank of an in-process group.
#[derive(Debug)]
pub struct LocalCommunicator {
    rank: usize,
    group: Arc<Group>,
}

/// What the ranks of a group share.
#[derive(Debug)]
struct Group {
    world_size: usize,
    state: Mutex<Round>,
    /// Signalled when an exchange completes or a rank leaves.
    done: Condvar,
}

/// The exchange in progress and the last one completed.
#[derive(Debug)]
struct Round {
    /// This exchange's tensors, by rank.
    slots: Vec<Option<Tensor>>,
    arrived: usize,
    /// Exchanges completed so far.
    generation: u64,
    /// The tensors of exchange `generation`, by rank.
    published: Arc<Vec<Tensor>>,
    /// A rank that dropped its communicator.
    left: Option<usize>,
}

impl LocalCommunicator {
    /// `world_size` ranks of one group, rank `i` at index `i`: move each into its own thread.
    pub fn group(world_size: usize) -> Result<Vec<Self>> {
        if world_size == 0 {
            return Err(tp_error(0, "a group needs at least one rank".into()));
        }
        let group = Arc::new(Group {
            world_size,
            state: Mutex::new(Round {
                slots: vec![None; world_size],
                arrived: 0,
                generation: 0,
                published: Arc::new(Vec::new()),
                left: None,
            }),
            done: Condvar::new(),
        });
        Ok((0..world_size)
            .map(|rank| Self {
                rank,
                group: group.clone(),
            })
            .collect())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Round>> {
        self.group
            .state
            .lock()
            .map_err(|_| self.error("another rank panicked inside a collective".into()))
    }

    fn error(&self, message: String) -> Error {
        tp_error(self.group.world_size, message)
    }

    /// Puts `x` in this rank's slot and returns every rank's tensor once all have arrived.
    fn join(&self, x: &Tensor) -> Result<Arc<Vec<Tensor>>> {
        let mut state = self.lock()?;
        if let Some(rank) = state.left {
            return Err(self.error(format!("rank {rank} left the group")));
        }
        if state.slots[self.rank].is_some() {
            return Err(self.error(format!(
                "rank {} entered a collective twice before the others arrived",
                self.rank
            )));
        }
        state.slots[self.rank] = Some(x.clone());
        state.arrived += 1;
        if state.arrived == self.group.world_size {
            let tensors = state.slots.iter_mut().filter_map(Option::take).collect();
            state.published = Arc::new(tensors);
            state.arrived = 0;
            state.generation += 1;
            self.group.done.notify_all();
            return Ok(state.published.clone());
        }
        let mine = state.generation;
        while state.generation == mine {
            if let Some(rank) = state.left {
                return Err(self.error(format!(
                    "rank {rank} left the group while rank {} waited in a collective",
                    self.rank
                )));
            }
            state = self
                .group
                .done
                .wait(state)
                .map_err(|_| self.error("another rank panicked inside a collective".into()))?;
        }
        // No later exchange can complete before this rank joins it: `published` is ours.
        Ok(state.published.clone())
    }
}

impl Drop for LocalCommunicator {
    fn drop(&mut self) {
        if let Ok(mut state) = self.group.state.lock() {
            state.left.get_or_insert(self.rank);
            self.group.done.notify_all();
        }
    }
}

impl Exchange for LocalCommunicator {
    fn position(&self) -> (usize, usize) {
        (self.rank, self.group.world_size)
    }

    fn exchange(&self, x: &Tensor) -> Result<Arc<Vec<Tensor>>> {
        self.join(x)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::parallel::Communicator;

    /// Runs `f` on each rank of a group of `n` in its own thread; the results by rank.
    fn on_ranks<T: Send>(
        n: usize,
        f: impl Fn(&LocalCommunicator) -> Result<T> + Sync,
    ) -> Vec<Result<T>> {
        let comms = LocalCommunicator::group(n).expect("a group of n > 0 ranks");
        let f = &f;
        std::thread::scope(|s| {
            // Each thread owns its rank: it is dropped (leaves the group) when `f` returns.
            let handles: Vec<_> = comms.into_iter().map(|c| s.spawn(move || f(&c))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank thread panicked"))
                .collect()
        })
    }

    #[test]
    fn collectives_give_every_rank_the_same_result() -> Result<()> {
        let results = on_ranks(3, |c| {
            let r = c.rank() as f32;
            let x = Tensor::new(&[[r, 10.0 * r], [0.5, 1.0]], &Device::Cpu)?; // [2, 2]
            let mut out = Vec::new();
            // Several rounds: a fast rank must not overwrite what a slow one has yet to read.
            for _ in 0..20 {
                out.push(c.all_reduce_sum(&x)?.to_vec2::<f32>()?);
                out.push(c.all_gather(&x, 1)?.to_vec2::<f32>()?);
                out.push(c.broadcast(&x, 2)?.to_vec2::<f32>()?);
            }
            Ok(out)
        });
        let results = results.into_iter().collect::<Result<Vec<_>>>()?;
        assert_eq!(results[0][0], vec![vec![3.0, 30.0], vec![1.5, 3.0]]);
        assert_eq!(
            results[0][1],
            vec![
                vec![0.0, 0.0, 1.0, 10.0, 2.0, 20.0],
                vec![0.5, 1.0, 0.5, 1.0, 0.5, 1.0]
            ]
        );
        assert_eq!(results[0][2], vec![vec![2.0, 20.0], vec![0.5, 1.0]]);
        assert!(results.iter().all(|r| r == &results[0]));
        Ok(())
    }

    #[test]
    fn a_rank_that_leaves_ends_the_others_wait_with_an_error() {
        let results = on_ranks(2, |c| {
            if c.rank() == 1 {
                return Ok(());
            }
            let x = Tensor::new(&[1f32], &Device::Cpu)?;
            c.all_reduce_sum(&x).map(|_| ())
        });
        assert!(results[1].is_ok());
        let err = results[0].as_ref().expect_err("rank 1 left");
        assert!(err.to_string().contains("rank 1 left"), "{err}");
    }

    #[test]
    fn mismatched_shapes_are_an_error_naming_the_ranks() {
        let results = on_ranks(2, |c| {
            let x = Tensor::zeros(c.rank() + 1, candle_core::DType::F32, &Device::Cpu)?;
            c.all_reduce_sum(&x)
        });
        for r in results {
            let err = r.expect_err("shapes differ");
            assert!(err.to_string().contains("rank 1 passed F32 [2]"), "{err}");
        }
    }
}
