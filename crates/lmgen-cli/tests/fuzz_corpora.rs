//! Replays the JSON-lines fuzz targets' seed corpora (`fuzz/corpus/jsonl_request`,
//! `fuzz/corpus/logits_request`) and their crash reproducers (`fuzz/regressions/`) through the
//! contracts the fuzz targets check (`fuzz/contracts_jsonl.rs`), under the allocator of
//! `fuzz/replay.rs` (nothing over 1 GiB). The fuzzers themselves run with `cargo fuzz`
//! (FUZZING.md), not here.

#[path = "../../../fuzz/replay.rs"]
mod replay;

#[path = "../../../fuzz/contracts_jsonl.rs"]
mod contracts_jsonl;

#[test]
fn every_jsonl_seed_and_regression_input_keeps_the_contract() {
    replay::replay(contracts_jsonl::JSONL_TARGETS, 40);
}
