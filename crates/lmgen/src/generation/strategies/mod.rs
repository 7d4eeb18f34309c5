//! Decoding strategies, one per file (HF `GenerationMixin._sample`, `_beam_search`, ...).

pub mod beam;
mod prepare;
pub mod sample;
