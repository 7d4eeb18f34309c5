//! lmgen: Hugging Face transformers' text generation (`model.generate()`) in Rust.
//!
//! Load a checkpoint exactly as the Hub serves it (a directory, or a model id from the local
//! Hugging Face cache, downloaded into it when missing), tokenize, generate, decode:
//!
//! ```
//! # fn main() -> lmgen::Result<()> {
//! # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/models/llama");
//! use lmgen::{GenerationConfig, Pipeline};
//!
//! let pipe = Pipeline::from_pretrained(dir)?;
//! let overrides = GenerationConfig {
//!     max_new_tokens: Some(8),
//!     ..GenerationConfig::default()
//! };
//! let text = pipe.generate_text("Hello", &overrides)?;
//! println!("{text}");
//! # Ok(()) }
//! ```
//!
//! The lower-level path is [`load::Checkpoint`] -> [`models::load_model`] ->
//! [`generation::generate`], with a [`GenerationConfig`] merged from the checkpoint's
//! `generation_config.json` and the caller's fields, as transformers does.

#![warn(missing_docs)]

pub mod allocator;
pub mod audio;
pub mod cache;
pub mod chat_template;
pub mod cuda;
pub mod device;
pub mod engine;
pub mod error;
pub mod generation;
pub mod init;
pub mod load;
pub mod models;
pub mod parallel;
pub mod pipeline;
pub mod readback;
pub mod speech;
pub mod tokenizer;

pub use error::{Error, Result};
pub use generation::{generate, GenerateInput, GenerateOutput, GenerationConfig};
pub use pipeline::Pipeline;
pub use tokenizer::Tokenizer;

/// A token id.
pub type TokenId = u32;
