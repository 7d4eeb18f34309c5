//! Running a whole forward on one of rayon's threads (CPU).
//!
//! The CPU kernels split their work with rayon. A parallel op started from a thread outside the
//! pool (the caller's: `generate()`'s, the engine worker's) injects its job and puts the caller to
//! sleep until the pool has finished it, then wakes it: a futex round trip per op, and a decode
//! step of SmolLM2-135M runs about 120 such ops. Run from one of the pool's own threads, the
//! same op starts on that thread at once and the other threads steal their share; the caller
//! sleeps once per forward instead of once per op (llama.cpp's compute threads likewise include
//! the calling thread).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::Device;

use super::layers::LoadContext;

/// Which thread a model's forward runs on, decided at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardThread {
    /// One of rayon's threads ([`on_pool`]): a whole model on the CPU.
    Pool,
    /// The caller's: a GPU model, or a tensor-parallel rank. A rank blocks in its collectives
    /// until every rank has arrived; as a pool job, a pool thread waiting for its share of an op
    /// could take another rank's forward and wait on a rank that is suspended below it.
    Caller,
}

impl ForwardThread {
    /// For the model `ctx` loads.
    pub fn for_model(ctx: &LoadContext<'_>) -> Self {
        let whole = ctx.shard.is_none_or(|s| s.world_size() == 1);
        if ctx.device.is_cpu() && whole {
            Self::Pool
        } else {
            Self::Caller
        }
    }

    /// `f()` on this thread kind.
    pub fn run<R: Send>(self, f: impl FnOnce() -> R + Send) -> R {
        match self {
            Self::Pool => on_pool(&Device::Cpu, f),
            Self::Caller => f(),
        }
    }
}

/// `f()` on a thread of rayon's global pool when `device` is the CPU and the caller is not on one
/// already; otherwise on the calling thread.
///
/// While `f` runs, the pool's other threads stay awake ([`spin`]): they take each parallel op's
/// share the moment it is offered, instead of sleeping between ops and being woken (a futex
/// round trip per op and thread: a tenth of a SmolLM2-135M decode step on two cores), as
/// llama.cpp's compute threads spin between ops. `LMGEN_CPU_SPIN=0` lets them sleep.
pub fn on_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu() || rayon::current_thread_index().is_some() {
        return f();
    }
    // Called from outside the pool, `scope` runs its body on one of the pool's threads.
    let done = AtomicBool::new(false);
    let done = &done;
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        if spinning() {
            for _ in 1..rayon::current_num_threads() {
                scope.spawn(move |_| spin(done, owner));
            }
        }
        let out = f();
        done.store(true, Ordering::Release);
        out
    })
}

/// Whether the pool's threads spin while a forward runs ([`on_pool`]): on unless
/// `LMGEN_CPU_SPIN=0`.
fn spinning() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LMGEN_CPU_SPIN").map_or(true, |v| v != "0"))
}

/// How long a spinning thread waits for work before it goes back to sleeping: far longer than
/// the gaps between a forward's parallel ops (tens of microseconds), short enough that a stalled
/// forward does not keep a core busy.
const MAX_IDLE_SPIN: Duration = Duration::from_millis(2);

thread_local! {
    /// This thread is running a [`spin`] already.
    static SPINNING: Cell<bool> = const { Cell::new(false) };
}

/// Until `done` (or [`MAX_IDLE_SPIN`] without work): run whatever the pool offers (the
/// forward's parallel ops' shares), or spin.
/// Returns at once on the forward's own thread (`owner`, which may pick this job up while it
/// waits inside a parallel op: spinning there would wait on itself) and on a thread already
/// spinning (a spin job taken from inside another).
fn spin(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner || SPINNING.with(Cell::get) {
        return;
    }
    SPINNING.with(|s| s.set(true));
    let mut idle_since = Instant::now();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > MAX_IDLE_SPIN {
            // Nothing offered for a while (a forward waiting on something else): back to
            // rayon's own idling, which sleeps.
            break;
        } else {
            std::hint::spin_loop();
        }
    }
    SPINNING.with(|s| s.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_pool_thread_on_the_cpu() {
        assert_eq!(rayon::current_thread_index(), None);
        let inside = on_pool(&Device::Cpu, rayon::current_thread_index);
        assert!(inside.is_some());
        // Nested: stays on the same thread.
        let nested = on_pool(&Device::Cpu, || {
            let outer = rayon::current_thread_index();
            (outer, on_pool(&Device::Cpu, rayon::current_thread_index))
        });
        assert_eq!(nested.0, nested.1);
    }
}
