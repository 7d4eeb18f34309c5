//! Replays the fuzz targets' seed corpora (`fuzz/corpus/`) and every crash reproducer the fuzzers
//! found (`fuzz/regressions/`) through the same contracts the fuzz targets check
//! (`fuzz/contracts.rs`): an error with a message, never a panic. The fuzzers themselves run with
//! `cargo fuzz` (FUZZING.md), not here.
#![allow(clippy::unwrap_used)]
// The global allocator below is the one unsafe item: it refuses allocations over 1 GiB, as
// libFuzzer's `-malloc_limit_mb` does, so an allocation sized by an untrusted number aborts this
// test instead of passing (or swapping) quietly.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;

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

#[path = "../../../fuzz/contracts.rs"]
mod contracts;

fn inputs(kind: &str, target: &str) -> Vec<std::path::PathBuf> {
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

#[test]
fn every_seed_and_regression_input_keeps_the_contract() {
    let mut replayed = 0;
    for (target, check) in contracts::TARGETS {
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
    assert!(replayed >= 80, "{replayed} inputs");
}
