//! Replays fuzz targets' seed corpora (`fuzz/corpus/`) and every crash reproducer the fuzzers
//! found (`fuzz/regressions/`) through the contracts the fuzz targets check, in `cargo test`
//! (included by the tests that replay them: `crates/lmgen-server/tests/fuzz_corpora.rs`,
//! `crates/lmgen-cli/tests/fuzz_corpora.rs`).
//!
//! The global allocator below is the one unsafe item: it refuses allocations over 1 GiB, as
//! libFuzzer's `-malloc_limit_mb` does, so an allocation sized by an untrusted number aborts the
//! test instead of passing (or swapping) quietly.
#![allow(unsafe_code, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};

struct Capped;

const MAX_ALLOCATION: usize = 1 << 30;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// The files of `fuzz/KIND/TARGET`, sorted (none when the folder does not exist).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// A fuzz target's name (its folders under `fuzz/corpus` and `fuzz/regressions`) and contract.
pub type Target<'a> = (&'a str, fn(&[u8]));

/// Every seed and regression input of each target through its contract; at least `min_inputs`
/// in all, and a seed corpus for every target.
pub fn replay(targets: &[Target<'_>], min_inputs: usize) {
    let mut replayed = 0;
    for (target, check) in targets {
        let seeds = inputs("corpus", target);
        assert!(!seeds.is_empty(), "no seed corpus for `{target}`");
        for path in seeds.iter().chain(&inputs("regressions", target)) {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} broke the contract",
                path.display()
            );
            replayed += 1;
        }
    }
    eprintln!("{replayed} inputs replayed");
    assert!(replayed >= min_inputs, "{replayed} inputs");
}
