//! Every target in one binary, chosen by `LMGEN_FUZZ_TARGET` (one binary to carry to a machine
//! without Rust: tools/fuzz_device.sh).
#![no_main]
use std::sync::OnceLock;

fn chosen() -> lmgen_fuzz::Contract {
    static CHOSEN: OnceLock<lmgen_fuzz::Contract> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let name = std::env::var("LMGEN_FUZZ_TARGET").unwrap_or_default();
        let targets = lmgen_fuzz::TARGETS.iter().chain(lmgen_fuzz::JSONL_TARGETS);
        match targets.into_iter().find(|(n, _)| *n == name) {
            Some((_, check)) => *check,
            None => panic!(
                "set LMGEN_FUZZ_TARGET to one of the targets in fuzz/contracts.rs or fuzz/contracts_jsonl.rs"
            ),
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| chosen()(data));
