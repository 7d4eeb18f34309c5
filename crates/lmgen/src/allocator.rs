//! Keeping freed activation buffers for reuse (glibc malloc on Linux).
//!
//! Each CPU op of a forward allocates its output; a 512-token prefill of Qwen2.5-0.5B allocates
//! buffers of 5-20 MB per op. glibc serves blocks above its mmap threshold with a fresh `mmap`
//! and gives them back with `munmap` on free (or trims the heap's top past its trim threshold), so
//! every op faults its output in again, a page at a time, zero-filled by the kernel: 15-20% of a
//! prefill's time in the profile. After the model is loaded, [`reuse_freed_memory`] raises both
//! thresholds, so freed buffers stay in the heap and the next op reuses them. Measured on the
//! 2-core CPU machine: prefill-512 of Qwen2.5-0.5B in f32 went from about 100 to 135 tokens/s,
//! with peak RSS 0.7% higher (BENCHMARKS.md).
//!
//! The weights are loaded before the switch (their large blocks stay in their own mappings).
//! `LMGEN_MALLOC_TUNING=0` leaves the allocator as it is. Other allocators and platforms: a no-op.

/// Blocks of at most this many bytes come from the heap (larger ones: their own mapping).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 1 << 30;

/// Raises glibc's mmap and trim thresholds once per process (see the module docs); returns
/// whether it did.
pub fn reuse_freed_memory() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        if std::env::var("LMGEN_MALLOC_TUNING").is_ok_and(|v| v == "0") {
            return false;
        }
        set_thresholds()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> bool {
    // SAFETY: `mallopt` only sets malloc parameters (glibc takes its own lock); it is safe to
    // call at any time from any thread, with any value (out-of-range values are refused: 0).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}
