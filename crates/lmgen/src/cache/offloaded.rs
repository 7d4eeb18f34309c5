//! HF `DynamicCache(offloading=True)` / `StaticCache(offloading=True)`
//! (`cache_implementation="offloaded"` / `"offloaded_static"`): the layers' keys and values live
//! in host memory, and each layer's are copied to the model's device when that layer runs.
//!
//! On a CPU model this is the inner cache exactly (host memory is the device's). On a GPU the
//! keys and values are kept in page-locked host memory and each layer's past is copied to the
//! device on a second stream while the layer before it computes, as transformers prefetches the
//! next layer on a side stream ([`crate::cuda::offload`]); the device holds a few layers' keys
//! and values at a time instead of all of them. The inner cache then keeps only recurrent
//! layers' states (on the device, as the dynamic cache keeps them). transformers on a CPU-only
//! machine fails here (it needs an accelerator); lmgen runs it as the inner cache.

use candle_core::Tensor;

use super::{KvCache, LayerState, SequenceSpan};
use crate::cuda::offload::HostKv;
use crate::error::Result;

/// A cache kept on the host, handing each layer's keys and values to the device it is asked from.
pub struct OffloadedCache {
    /// The CPU model's storage; on a GPU, the recurrent states only.
    inner: Box<dyn KvCache>,
    /// A GPU model's keys and values, made on the first update from a GPU.
    host: Option<HostKv>,
    /// Tokens per row of a static inner cache (`offloaded_static`).
    fixed: Option<usize>,
}

impl std::fmt::Debug for OffloadedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadedCache")
            .field("seq_len", &self.seq_len())
            .field("host", &self.host)
            .finish()
    }
}

impl OffloadedCache {
    /// Keeps `inner` (a dynamic cache, or a static one of `fixed` tokens per row) on the host.
    pub fn new(inner: Box<dyn KvCache>, fixed: Option<usize>) -> Self {
        Self {
            inner,
            host: None,
            fixed,
        }
    }

    /// The GPU path's rows change as `rows` says (row `i` becomes old row `rows[i]`).
    fn select_host_rows(&mut self, rows: impl FnOnce(usize) -> Vec<usize>) -> Result<()> {
        if let Some(host) = &mut self.host {
            let rows = rows(host.batch());
            host.select_rows(&rows)?;
        }
        Ok(())
    }
}

impl KvCache for OffloadedCache {
    /// `k`, `v` `[b, kv_heads, t, d]` on the model's device -> appended on the host -> all of the
    /// layer's keys and values on that device.
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.host.is_none() {
            self.host = HostKv::for_tensor(k, self.fixed)?;
        }
        match &mut self.host {
            Some(host) => host.update(layer, k, v),
            None => self.inner.update(layer, k, v),
        }
    }

    fn seq_len(&self) -> usize {
        let kv = self.host.as_ref().map_or(0, HostKv::seq_len);
        kv.max(self.inner.seq_len())
    }

    fn reorder(&mut self, beam_idx: &[usize]) -> Result<()> {
        self.inner.reorder(beam_idx)?;
        self.select_host_rows(|_| beam_idx.to_vec())
    }

    fn spans(&self) -> Option<&[SequenceSpan]> {
        self.inner.spans()
    }

    fn batch_repeat_interleave(&mut self, n: usize) -> Result<()> {
        self.inner.batch_repeat_interleave(n)?;
        self.select_host_rows(|b| (0..b).flat_map(|r| std::iter::repeat_n(r, n)).collect())
    }

    fn batch_select_indices(&mut self, indices: &[usize]) -> Result<()> {
        self.inner.batch_select_indices(indices)?;
        self.select_host_rows(|_| indices.to_vec())
    }

    /// The inner cache goes back first: a recurrent state can only return to its checkpoint,
    /// and the keys and values keep as many tokens as it does.
    fn crop(&mut self, len: usize) -> Result<()> {
        self.inner.crop(len)?;
        if let Some(host) = &mut self.host {
            let kept = match self.inner.seq_len() {
                0 => len,
                states => states.min(len),
            };
            host.crop(kept)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) {
        self.inner.checkpoint()
    }

    fn state(&self, layer: usize, seq: Option<usize>) -> Result<Option<LayerState>> {
        self.inner.state(layer, seq)
    }

    fn set_state(&mut self, layer: usize, seq: Option<usize>, state: LayerState) -> Result<()> {
        self.inner.set_state(layer, seq, state)
    }
}
