//! The `lmgen` binary's JSON-lines interface (DESIGN.md section 4) as a library: one request line
//! in, one response out, over models loaded once. The binary serves files of requests with it;
//! the fuzz targets (`fuzz/`) call it one line at a time.
//!
//! - [`jsonl::answer`]: one `lmgen generate --request` line.
//! - [`logits::answer`]: one `lmgen logits --request` line.
//! - [`jsonl::response`]: an answer as its response line (`{"error": {"message"}}` on failure).
//! - [`Models`]: the models requests may name (any, for the CLI; one local checkpoint, offline).

pub mod jsonl;
pub mod logits;
mod models;

pub use models::Models;
