//! Running a whole forward on one of rayon's threads (CPU).
//!
//! The CPU kernels split their work with rayon. A parallel op started from a thread outside the
//! pool (the caller's: `generate()`'s, the engine worker's) injects its job and puts the caller to
//! sleep until the pool has finished it, then wakes it: a futex round trip per op, and a decode
//! step of SmolLM2-135M runs about 120 such ops. Run from one of the pool's own threads, the
//! same op starts on that thread at once and the other threads steal their share; the caller
//! sleeps once per forward instead of once per op (llama.cpp's compute threads likewise include
//! the calling thread).

use candle_core::Device;

/// `f()` on a thread of rayon's global pool when `device` is the CPU and the caller is not on one
/// already; otherwise on the calling thread.
pub fn on_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu() || rayon::current_thread_index().is_some() {
        return f();
    }
    // Called from outside the pool, `scope` runs its body on one of the pool's threads.
    rayon::scope(|_| f())
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
