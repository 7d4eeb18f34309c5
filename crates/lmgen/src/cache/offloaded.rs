//! HF `DynamicCache(offloading=True)` / `StaticCache(offloading=True)`
//! (`cache_implementation="offloaded"` / `"offloaded_static"`): the layers' keys and values live
//! in host memory, and each layer's are copied to the model's device when that layer runs.
//!
//! On a CPU model this is the inner cache exactly (host memory is the device's). On a GPU, the
//! device holds one layer's keys and values at a time instead of all of them, at the cost of
//! copying that layer's whole cache to the device at every step. transformers prefetches the next
//! layer on a side stream while the current one computes; lmgen copies synchronously, so the
//! bytes moved are the same and the overlap is not there. transformers on a CPU-only machine
//! fails here (it needs an accelerator); lmgen runs it as the inner cache.

use candle_core::{Device, Tensor};

use super::KvCache;
use crate::error::Result;

/// A cache kept on the host, handing each layer's keys and values to the device it is asked from.
pub struct OffloadedCache {
    /// Storage, on the host.
    inner: Box<dyn KvCache>,
}

impl std::fmt::Debug for OffloadedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadedCache")
            .field("seq_len", &self.inner.seq_len())
            .finish()
    }
}

impl OffloadedCache {
    /// Keeps `inner` (a dynamic or static cache) on the host.
    pub fn new(inner: Box<dyn KvCache>) -> Self {
        Self { inner }
    }
}

impl KvCache for OffloadedCache {
    /// `k`, `v` `[b, kv_heads, t, d]` on the model's device -> appended on the host -> all of the
    /// layer's keys and values back on that device.
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let device = k.device().clone();
        if device.is_cpu() {
            return self.inner.update(layer, k, v);
        }
        let (ks, vs) = self.inner.update(
            layer,
            &k.to_device(&Device::Cpu)?,
            &v.to_device(&Device::Cpu)?,
        )?;
        Ok((ks.to_device(&device)?, vs.to_device(&device)?))
    }
    super::delegate_kv_cache!(inner);
}
