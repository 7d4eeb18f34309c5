//! Weights in 2 MiB pages on Linux. The kernel backs memory with transparent huge pages only
//! where a program asks for them when it runs in `madvise` mode (the default of many
//! distributions, and of the machines this project measures on), and a decode product streaming a
//! weight over 4 KiB pages ran slower: 256 and 545 MB f32 weights, 2 threads, AMD EPYC (Zen 4),
//! 33.5 -> 36.1 and 31.0 -> 33.4 GB/s median (BENCHMARKS.md). Each 4 KiB page is a TLB entry and
//! a boundary the hardware prefetchers stop at. The cost is at load: the kernel finds (and where
//! it must, compacts memory for) and zeroes each 2 MiB page, about 1 s more for 1.9 GB of f32
//! weights on that machine. `LMGEN_HUGE_PAGES=0` leaves the pages to the kernel's default (a
//! process that loads often and decodes little, or a host where compaction stalls).

use std::sync::OnceLock;

/// Below this many bytes a vector is left as the allocator gives it.
const MIN_BYTES: usize = 4 << 20;

/// The huge page size the advice is for.
const PAGE: usize = 2 << 20;

/// An empty vector with room for `len` elements, its whole 2 MiB pages advised huge before any
/// is touched (vectors of [`MIN_BYTES`] or more, on Linux; elsewhere, or if the kernel declines,
/// a plain `Vec::with_capacity`).
pub fn with_capacity<T>(len: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(len);
    let bytes = len * std::mem::size_of::<T>();
    if bytes >= MIN_BYTES && wanted() {
        advise(v.as_ptr().cast::<u8>(), bytes);
    }
    v
}

/// Whether weights ask for huge pages: unless `LMGEN_HUGE_PAGES=0`.
fn wanted() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| setting(std::env::var("LMGEN_HUGE_PAGES").ok().as_deref()))
}

/// `LMGEN_HUGE_PAGES`'s value read: off for `0` only.
fn setting(value: Option<&str>) -> bool {
    value != Some("0")
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise(start: *const u8, bytes: usize) {
    let first = (start as usize).next_multiple_of(PAGE);
    let end = (start as usize + bytes) / PAGE * PAGE;
    if end > first {
        // SAFETY: the range lies inside one live allocation of `bytes` bytes (rounded inwards to
        // whole pages), and MADV_HUGEPAGE changes only how the kernel backs it, not its contents;
        // a failure (a kernel without transparent huge pages) leaves the pages as they were.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_: *const u8, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_zero_turns_huge_pages_off() {
        assert!(setting(None));
        assert!(setting(Some("1")));
        assert!(!setting(Some("0")));
    }

    /// Small and large vectors come back empty with the room asked for, and take their elements.
    #[test]
    fn vectors_keep_their_room_and_contents() {
        for len in [0usize, 10, MIN_BYTES / 4 + 3] {
            let mut v: Vec<f32> = with_capacity(len);
            assert!(v.is_empty() && v.capacity() >= len);
            v.resize(len, 1.5);
            assert!(v.iter().all(|&x| x == 1.5));
        }
    }
}
