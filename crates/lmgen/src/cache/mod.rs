//! Key/value caches. The model never owns one: the caller passes a cache to every forward.

pub mod dynamic;

use candle_core::Tensor;

use crate::error::{Error, Result};

pub use dynamic::DynamicCache;

/// Storage for the keys and values of past tokens (HF `Cache`).
///
/// Attention code is the same whatever the cache: it hands over this step's keys and values and
/// gets back everything to attend to.
pub trait KvCache: Send {
    /// Appends `k`, `v` (`[b, kv_heads, t, d]`) for `layer` and returns all keys and values
    /// of that layer, `[b, kv_heads, past + t, d]`.
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)>;
    /// Number of tokens already cached (HF `get_seq_length`).
    fn seq_len(&self) -> usize;
    /// Reorders the batch rows: row `i` becomes old row `beam_idx[i]` (HF `Cache.reorder_cache`,
    /// used by beam search after each step).
    fn reorder(&mut self, beam_idx: &[usize]) -> Result<()>;
    /// Keeps only the first `len` tokens of every layer, dropping the rest (HF `Cache.crop`, used by
    /// assisted decoding to discard rejected draft tokens). Layers holding fewer tokens are left as
    /// they are. A cache that cannot roll back answers [`Error::Unsupported`] (HF `is_croppable`).
    fn crop(&mut self, len: usize) -> Result<()> {
        let _ = len;
        Err(Error::Unsupported(
            "this KV cache cannot be cropped, which assisted decoding needs".into(),
        ))
    }
}
