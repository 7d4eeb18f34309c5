//! The contracts the fuzz targets check (shared with `cargo test`'s replay of the corpora).
#[path = "../contracts.rs"]
mod contracts;
pub use contracts::*;
#[path = "../contracts_jsonl.rs"]
mod contracts_jsonl;
pub use contracts_jsonl::*;
