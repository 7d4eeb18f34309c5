//! Replays the fuzz targets' seed corpora (`fuzz/corpus/`) and every crash reproducer the fuzzers
//! found (`fuzz/regressions/`) through the same contracts the fuzz targets check
//! (`fuzz/contracts.rs`): an error with a message, never a panic, never an allocation over 1 GiB
//! (`fuzz/replay.rs`). The fuzzers themselves run with `cargo fuzz` (FUZZING.md), not here. The
//! CLI's JSON-lines targets replay in `crates/lmgen-cli/tests/fuzz_corpora.rs`.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[path = "../../../fuzz/contracts.rs"]
mod contracts;

#[test]
fn every_seed_and_regression_input_keeps_the_contract() {
    replay::replay(contracts::TARGETS, 80);
}
