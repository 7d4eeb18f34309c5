//! Fixed-size per-sequence state of the layers that keep no keys and values: gated DeltaNet
//! linear attention and short convolutions (HF `LinearAttentionLayer`'s `conv_states` and
//! `recurrent_states`).
//!
//! A layer's state is replaced, never written in place, so keeping an old one (a checkpoint for
//! assisted decoding, see [`super::KvCache::checkpoint`]) costs a reference, not a copy.

use candle_core::Tensor;

use crate::error::Result;

/// The state of one recurrent layer for the rows of a batch (or one packed sequence).
#[derive(Debug, Clone)]
pub struct LayerState {
    /// `[b, kernel - 1, channels]`: the last inputs of the layer's causal convolution (zeros
    /// before the first token).
    pub conv: Tensor,
    /// `[b, value_heads, key_head_dim, value_head_dim]` f32: the gated delta rule's state;
    /// `None` for a short convolution, which has none.
    pub recurrent: Option<Tensor>,
    /// Tokens folded into this state.
    pub len: usize,
}

impl LayerState {
    /// Keeps the batch rows `idx` (`[b']` u32 on the state's device), in that order.
    pub fn select_rows(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            conv: self.conv.index_select(idx, 0)?,
            recurrent: self
                .recurrent
                .as_ref()
                .map(|r| r.index_select(idx, 0))
                .transpose()?,
            len: self.len,
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.conv) + self.recurrent.as_ref().map_or(0, size)
    }
}

/// Every recurrent layer's state of one batch (or one sequence), indexed by layer; attention
/// layers' entries stay `None`.
#[derive(Debug, Clone, Default)]
pub struct LayerStates {
    layers: Vec<Option<LayerState>>,
}

impl LayerStates {
    /// The state of `layer`, `None` before its first token.
    pub fn get(&self, layer: usize) -> Option<&LayerState> {
        self.layers.get(layer).and_then(Option::as_ref)
    }

    /// Replaces the state of `layer`.
    pub fn set(&mut self, layer: usize, state: LayerState) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        self.layers[layer] = Some(state);
    }

    /// The state of the lowest layer that has one.
    pub fn first(&self) -> Option<&LayerState> {
        self.layers.iter().flatten().next()
    }

    /// Whether no layer holds a state yet.
    pub fn is_empty(&self) -> bool {
        self.layers.iter().all(Option::is_none)
    }

    /// The fewest tokens any layer has folded in (`None` when empty).
    pub fn min_len(&self) -> Option<usize> {
        self.layers.iter().flatten().map(|s| s.len).min()
    }

    /// The most tokens any layer has folded in (`None` when empty).
    pub fn max_len(&self) -> Option<usize> {
        self.layers.iter().flatten().map(|s| s.len).max()
    }

    /// Keeps the batch rows `idx` of every layer.
    pub fn select_rows(&mut self, idx: &Tensor) -> Result<()> {
        for s in self.layers.iter_mut().flatten() {
            *s = s.select_rows(idx)?;
        }
        Ok(())
    }

    /// Bytes held by every layer.
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(LayerState::bytes).sum()
    }

    /// Drops every layer's state.
    pub fn clear(&mut self) {
        self.layers.clear();
    }
}
