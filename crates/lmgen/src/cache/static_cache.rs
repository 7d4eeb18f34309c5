//! HF `StaticCache`: every layer preallocated to `max_cache_len` tokens on its first update and
//! never grown (`cache_implementation="static"`, and the deprecated names transformers 5 maps to
//! it: `"sliding_window"`, `"hybrid_chunked"`, `"offloaded_hybrid"`, `"offloaded_hybrid_chunked"`;
//! `"offloaded_static"` is this cache kept on the host, see [`super::OffloadedCache`]).
//!
//! `generate()` sizes it as transformers' `_prepare_cache_for_generation`: `max_length - 1`
//! tokens (the last token is never fed back), or `max_cache_len` when that is larger, for
//! `batch * max(num_beams, num_return_sequences)` rows. The memory is taken at the first forward
//! and stays the same to the end, which is what a captured decode graph needs (fixed shapes).
//! The tokens are the dynamic cache's: attention reads the same keys, masked the same way.
//!
//! Deliberate differences: transformers' static sliding-window layers hold only
//! `sliding_window` tokens; here every layer holds `max_cache_len` and the mask hides the rest
//! (same outputs, more memory for sliding layers). transformers also keeps the largest
//! `max_cache_len` of earlier calls on the model (`_previous_max_cache_length`); lmgen's model
//! holds no state, so each call sizes its own.

use candle_core::Tensor;

use super::{DynamicCache, KvCache};
use crate::error::Result;

/// A key/value cache of fixed length: [`DynamicCache`]'s buffers, allocated once.
#[derive(Debug, Clone)]
pub struct StaticCache {
    inner: DynamicCache,
    max_cache_len: usize,
}

impl StaticCache {
    /// An empty cache whose layers will each hold `max_cache_len` tokens.
    pub fn new(max_cache_len: usize) -> Self {
        Self {
            inner: DynamicCache::with_fixed_capacity(max_cache_len),
            max_cache_len,
        }
    }

    /// Tokens each layer holds at most.
    pub fn max_cache_len(&self) -> usize {
        self.max_cache_len
    }

    /// Bytes allocated for keys and values (the full `max_cache_len` of every layer seen).
    pub fn allocated_bytes(&self) -> usize {
        self.inner.allocated_bytes()
    }
}

impl KvCache for StaticCache {
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.inner.update(layer, k, v)
    }
    fn decode_at(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        slots: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        self.inner.decode_at(layer, q, k, v, slots, scale)
    }
    fn decode_token_at(
        &mut self,
        layer: usize,
        token: &crate::cuda::FusedQkv<'_>,
        slots: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        self.inner.decode_token_at(layer, token, slots, scale)
    }
    fn reserve(&mut self, tokens: usize) -> Result<bool> {
        self.inner.reserve(tokens)
    }
    fn advance(&mut self, t: usize) -> Result<()> {
        self.inner.advance(t)
    }
    super::delegate_kv_cache!(inner);
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn allocates_once_and_refuses_to_grow() -> Result<()> {
        let mut cache = StaticCache::new(5);
        let k = Tensor::zeros((2, 1, 3, 4), candle_core::DType::F32, &Device::Cpu)?;
        let (ks, _) = cache.update(0, &k, &k)?;
        assert_eq!(ks.dims4()?, (2, 1, 3, 4));
        // [b, h, max_cache_len, d] for keys and values, f32.
        assert_eq!(cache.allocated_bytes(), 2 * (2 * 5 * 4 * 4));
        let one = k.narrow(2, 0, 2)?;
        cache.update(0, &one, &one)?;
        assert_eq!(cache.allocated_bytes(), 2 * (2 * 5 * 4 * 4));
        let err = cache.update(0, &one, &one).unwrap_err().to_string();
        assert!(
            err.contains("holds 5 tokens") && err.contains("`max_cache_len`"),
            "{err}"
        );
        assert_eq!(cache.seq_len(), 5, "a refused update changes nothing");
        Ok(())
    }
}
