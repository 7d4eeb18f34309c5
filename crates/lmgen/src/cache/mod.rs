//! Key/value caches. The model never owns one: the caller passes a cache to every forward.

pub mod dynamic;
pub mod encoder_decoder;
pub mod implementation;
pub mod offloaded;
pub mod paged;
pub mod quantized;
pub mod quantizer;
pub mod state;
pub mod static_cache;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::models::layers::attention::Scores;

pub use dynamic::DynamicCache;
pub use encoder_decoder::{CrossAttention, EncoderDecoderCache};
pub use implementation::CacheImplementation;
pub use offloaded::OffloadedCache;
pub use quantized::{QuantizedCache, QuantizedCacheConfig};
pub use state::{LayerState, LayerStates};
pub use static_cache::StaticCache;

/// One sequence of a packed (ragged) batch: the model input holds the new tokens of several
/// sequences side by side, `[1, sum(new)]`, each continuing its own cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceSpan {
    /// Tokens this sequence has cached already (its first new token sits at this position).
    pub past: usize,
    /// New tokens of this sequence in the input.
    pub new: usize,
}

/// A launch that writes a decode token into a layer's key and value buffers `[b, nkv, capacity,
/// d]` and attends over them ([`KvCache::decode_layer_at`]): its output, or `None` where it did
/// not run.
pub type LayerLaunch<'a> = dyn FnMut(&Tensor, &Tensor) -> Result<Option<(Tensor, Tensor)>> + 'a;

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

    /// A packed batch's sequences, in input order; `None` (the default) for a dense `[b, t]`
    /// batch where every row shares one past length.
    fn spans(&self) -> Option<&[SequenceSpan]> {
        None
    }

    /// Packed batches: appends `k`, `v` (`[1, kv_heads, new, d]`) of sequence `seq` for `layer`
    /// and returns all of that sequence's keys and values, `[1, kv_heads, past + new, d]`.
    fn update_sequence(
        &mut self,
        layer: usize,
        seq: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let _ = (layer, seq, k, v);
        Err(Error::unsupported(
            "this cache does not hold packed batches of sequences",
        ))
    }

    /// Packed batches: the sequences of `seqs` (`(sequence, position of its token in the
    /// input)`), each with one new token attending to every cached one (decode tokens, no
    /// mask). Writes their new keys and values (taken from `k`, `v` `[1, kv_heads, T, d]`, the
    /// whole input) and returns their attention output `[1, heads, seqs.len(), d]`, in the
    /// order of `seqs`, of `q` `[1, heads, T, d]` with scores
    /// `q k^T * scale`, read where the tokens lie. `None` (the default) where the cache has no
    /// such path: the caller then calls [`KvCache::update_sequence`] and attends per sequence.
    fn decode_attention(
        &mut self,
        layer: usize,
        seqs: &[(usize, usize)],
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        let _ = (layer, seqs, q, k, v, scale);
        Ok(None)
    }

    /// Packed batches: every sequence of the step at once, each one's new tokens attending
    /// causally over its own cached and new keys (and within `window` positions, for a sliding
    /// layer) with `scores`. Writes the new keys and values of every token (`k`, `v`
    /// `[1, kv_heads, T, d]`, the whole input) and returns the attention output
    /// `[1, heads, T, d]` of `q` `[1, heads, T, d]`. `None` (the default) where the cache has no
    /// such path, nothing written: the caller then goes sequence by sequence.
    fn packed_attention(
        &mut self,
        layer: usize,
        qkv: [&Tensor; 3],
        window: Option<usize>,
        scores: Scores<'_>,
    ) -> Result<Option<Tensor>> {
        let _ = (layer, qkv, window, scores);
        Ok(None)
    }

    /// A dense one-token step whose cache slots are in device memory (a captured decode graph,
    /// [`crate::cuda::graph`]): writes `k`, `v` `[b, kv_heads, 1, d]` of `layer` at slot
    /// `slots[row]` (`[b]` u32, each row's current length) and returns the attention output
    /// `[b, heads, 1, d]` of `q` `[b, heads, 1, d]` over each row's first `slots[row] + 1` keys,
    /// `softmax(q k^T * scale) v`; the length kept on the host moves on by one. `None` (the
    /// default) where the cache has no such path or no room already allocated
    /// ([`KvCache::reserve`]).
    fn decode_at(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        slots: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        let _ = (layer, q, k, v, slots, scale);
        Ok(None)
    }

    /// [`KvCache::decode_at`] from the fused projection's output: `token`'s queries and keys
    /// normed and rotated, keys and values written at the slots, in one launch on a GPU
    /// ([`crate::cuda::rope_kv_write`]), then the same attention. `None` (the default) where
    /// the cache or that kernel has no such path, before anything is written: the caller then
    /// splits the token itself and calls [`KvCache::decode_at`].
    fn decode_token_at(
        &mut self,
        layer: usize,
        token: &crate::cuda::FusedQkv<'_>,
        slots: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        let _ = (layer, token, slots, scale);
        Ok(None)
    }

    /// For a step whose one launch writes its token's keys and values into `layer`'s buffers
    /// and attends over them itself ([`crate::cuda::decode_layer`]): hands `run` the buffers
    /// `k`, `v` `[b, nkv, capacity, d]` where the layer has room for one more token, and counts
    /// that token where `run` returns `Some` (its output, returned). `None` (the default) where
    /// the cache keeps no such buffers or has no room, without calling `run`.
    fn decode_layer_at(
        &mut self,
        layer: usize,
        run: &mut LayerLaunch<'_>,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let _ = (layer, run);
        Ok(None)
    }

    /// Allocates room for `tokens` per row in every layer now, so that no later append moves a
    /// buffer (a captured graph holds their addresses). Whether the cache now has that room
    /// and takes [`KvCache::decode_at`] and [`KvCache::advance`]; `false` (the default) for a
    /// cache that cannot (one with no layer yet, host-kept, quantized, recurrent states).
    fn reserve(&mut self, tokens: usize) -> Result<bool> {
        let _ = tokens;
        Ok(false)
    }

    /// Counts `t` tokens appended to every layer behind the cache's back, by a replayed graph
    /// of [`KvCache::decode_at`] steps (its writes happened on the device; only the host's
    /// lengths move). An error past the room [`KvCache::reserve`] made.
    fn advance(&mut self, t: usize) -> Result<()> {
        let _ = t;
        Err(Error::unsupported(
            "this cache does not take appends made by a replayed CUDA graph",
        ))
    }

    /// Repeats every batch row `n` times in place: old row `i` becomes rows `i * n .. (i + 1) * n`
    /// (HF `DynamicCache.batch_repeat_interleave`; contrastive search runs its `top_k` candidates
    /// of each row as one batch).
    fn batch_repeat_interleave(&mut self, n: usize) -> Result<()>;
    /// Keeps the batch rows `indices`, in that order (HF `DynamicCache.batch_select_indices`;
    /// contrastive search keeps the chosen candidate of each row). The same gather as
    /// [`KvCache::reorder`].
    fn batch_select_indices(&mut self, indices: &[usize]) -> Result<()> {
        self.reorder(indices)
    }
    /// Keeps only the first `len` tokens of every layer, dropping the rest (HF `Cache.crop`, used by
    /// assisted decoding to discard rejected draft tokens). Layers holding fewer tokens are left as
    /// they are. A cache that cannot roll back answers [`Error::Unsupported`] (HF `is_croppable`).
    ///
    /// A recurrent state cannot be cut: a cache holding one returns to its last
    /// [`KvCache::checkpoint`] instead, at or before `len`, and keeps that many tokens. Callers
    /// read [`KvCache::seq_len`] afterwards and feed the tokens after it again.
    fn crop(&mut self, len: usize) -> Result<()> {
        let _ = len;
        Err(Error::unsupported(
            "this KV cache cannot be cropped, which assisted decoding needs",
        ))
    }

    /// Remembers the recurrent states as they are now, so that a later [`KvCache::crop`] can
    /// return here (before a forward whose tokens may be rejected). A no-op for caches without
    /// recurrent state.
    fn checkpoint(&mut self) {}

    /// The state of recurrent layer `layer` for the whole dense batch (`seq` = `None`) or for
    /// sequence `seq` of a packed batch; `None` before its first token.
    fn state(&self, layer: usize, seq: Option<usize>) -> Result<Option<LayerState>> {
        let _ = (layer, seq);
        Err(no_state())
    }

    /// Replaces the state of recurrent layer `layer` (see [`KvCache::state`]).
    fn set_state(&mut self, layer: usize, seq: Option<usize>, state: LayerState) -> Result<()> {
        let _ = (layer, seq, state);
        Err(no_state())
    }

    /// An encoder-decoder model's cross-attention state (the encoder's output and each decoder
    /// layer's keys and values of it); `None` (the default) for a decoder-only cache.
    fn cross_attention(&mut self) -> Option<&mut CrossAttention> {
        None
    }

    /// Packed batches of an encoder-decoder model: layer `layer`'s cross-attention keys and values
    /// of sequence `seq`, `[1, heads, s_seq, d]` over that sequence's own encoder output (each
    /// sequence has its own encoder length). On the sequence's first step `project` computes them
    /// from its encoder output `[1, s_seq, hidden]` and the cache keeps them; later steps read
    /// them back.
    fn cross_attention_sequence(
        &mut self,
        layer: usize,
        seq: usize,
        project: &mut dyn FnMut(&Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let _ = (layer, seq, project);
        Err(Error::unsupported(
            "this cache holds no packed batch of encoder-decoder sequences",
        ))
    }
}

/// The [`KvCache`] methods of a cache that wraps another in its field `$inner` and changes only
/// `update`: every row operation, `seq_len`, `crop`, `checkpoint` and the recurrent states pass
/// through. Used inside the wrapper's `impl KvCache`.
macro_rules! delegate_kv_cache {
    ($inner:ident) => {
        fn seq_len(&self) -> usize {
            self.$inner.seq_len()
        }
        fn reorder(&mut self, beam_idx: &[usize]) -> $crate::error::Result<()> {
            self.$inner.reorder(beam_idx)
        }
        fn spans(&self) -> Option<&[$crate::cache::SequenceSpan]> {
            self.$inner.spans()
        }
        fn batch_repeat_interleave(&mut self, n: usize) -> $crate::error::Result<()> {
            self.$inner.batch_repeat_interleave(n)
        }
        fn batch_select_indices(&mut self, indices: &[usize]) -> $crate::error::Result<()> {
            self.$inner.batch_select_indices(indices)
        }
        fn crop(&mut self, len: usize) -> $crate::error::Result<()> {
            self.$inner.crop(len)
        }
        fn checkpoint(&mut self) {
            self.$inner.checkpoint()
        }
        fn state(
            &self,
            layer: usize,
            seq: Option<usize>,
        ) -> $crate::error::Result<Option<$crate::cache::LayerState>> {
            self.$inner.state(layer, seq)
        }
        fn set_state(
            &mut self,
            layer: usize,
            seq: Option<usize>,
            state: $crate::cache::LayerState,
        ) -> $crate::error::Result<()> {
            self.$inner.set_state(layer, seq, state)
        }
    };
}
pub(crate) use delegate_kv_cache;

fn no_state() -> Error {
    Error::unsupported(
        "this cache holds no recurrent state, which linear-attention and convolution layers need",
    )
}
