//! The KV store: every layer's keys and values for the whole block pool, preallocated once.
//!
//! Layer `l` keeps `k[l]`, `v[l]` of shape `[kv_heads, num_blocks * block_size, head_dim]`; a
//! token's keys for all heads sit in one slot column. Writes go in place (`slice_set`), one call
//! per run of consecutive slots; reads gather a sequence's slots (`index_select`) into the dense
//! `[1, kv_heads, len, head_dim]` layout attention takes.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The pool's storage.
#[derive(Debug)]
pub struct KvStore {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
}

/// The dimensions of a store.
#[derive(Debug, Clone)]
pub struct StoreShape {
    /// Per layer, `(kv_heads, head_dim)` ([`crate::models::ModelConfig::kv_shape`]).
    pub layers: Vec<(usize, usize)>,
    /// Token slots: `num_blocks * block_size`.
    pub slots: usize,
}

impl KvStore {
    /// Zeroed storage for `shape`.
    pub fn new(shape: StoreShape, dtype: DType, device: &Device) -> Result<Self> {
        let mut k = Vec::with_capacity(shape.layers.len());
        let mut v = Vec::with_capacity(shape.layers.len());
        for &(kv_heads, head_dim) in &shape.layers {
            let zeros = || Tensor::zeros((kv_heads, shape.slots, head_dim), dtype, device);
            k.push(zeros()?);
            v.push(zeros()?);
        }
        Ok(Self { k, v })
    }

    pub(super) fn layer(&self, layer: usize) -> Result<(&Tensor, &Tensor)> {
        match (self.k.get(layer), self.v.get(layer)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(Error::input(format!(
                "the paged KV store has {} layers; layer {layer} does not exist",
                self.k.len()
            ))),
        }
    }

    /// Writes `k`, `v` (`[1, kv_heads, t, d]`) into `slots` (`t` of them) of `layer`.
    pub fn write(&self, layer: usize, slots: &[u32], k: &Tensor, v: &Tensor) -> Result<()> {
        let (sk, sv) = self.layer(layer)?;
        let k = k.squeeze(0)?; // [kv_heads, t, d]
        let v = v.squeeze(0)?;
        let mut start = 0;
        while start < slots.len() {
            let mut end = start + 1;
            while end < slots.len() && slots[end] == slots[end - 1] + 1 {
                end += 1;
            }
            let run = end - start;
            let offset = slots[start] as usize;
            sk.slice_set(&k.narrow(1, start, run)?.contiguous()?, 1, offset)?;
            sv.slice_set(&v.narrow(1, start, run)?.contiguous()?, 1, offset)?;
            start = end;
        }
        Ok(())
    }

    /// The keys and values at `slots` (u32 `[n]`) of `layer`, `[1, kv_heads, n, d]` each.
    pub fn gather(&self, layer: usize, slots: &Tensor) -> Result<(Tensor, Tensor)> {
        let (sk, sv) = self.layer(layer)?;
        Ok((
            sk.index_select(slots, 1)?.unsqueeze(0)?,
            sv.index_select(slots, 1)?.unsqueeze(0)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_runs_and_gathers_in_slot_order() {
        let dev = Device::Cpu;
        let store = KvStore::new(
            StoreShape {
                layers: vec![(2, 1)],
                slots: 8,
            },
            DType::F32,
            &dev,
        )
        .unwrap();
        // [1, 2 heads, 3 tokens, 1]
        let k = Tensor::from_vec(vec![1f32, 2., 3., 10., 20., 30.], (1, 2, 3, 1), &dev).unwrap();
        store.write(0, &[6, 7, 2], &k, &k).unwrap();
        let idx = Tensor::new(&[6u32, 7, 2], &dev).unwrap();
        let (g, _) = store.gather(0, &idx).unwrap();
        assert_eq!(g.dims4().unwrap(), (1, 2, 3, 1));
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1., 2., 3., 10., 20., 30.]
        );
    }
}
