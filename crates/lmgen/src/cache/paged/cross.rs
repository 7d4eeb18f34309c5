//! Cross-attention keys and values of encoder-decoder sequences in the pool's blocks.
//!
//! An encoder-decoder model's decoder layers attend to the encoder's output through keys and
//! values projected from it once per sequence (HF `EncoderDecoderCache.cross_attention_cache`,
//! filled on the first forward and reused). In the engine they live in blocks of the same pool as
//! the decoder's self-attention keys and values: a cross-attention head has the decoder's
//! self-attention shape (`heads`, `head_dim`), so one slot holds one encoder position of every
//! layer. A sequence holds `ceil(s / block_size)` such blocks from its admission until it
//! finishes, is preempted or cancelled, so that the scheduler's block accounting sees them.
//!
//! The step that first runs a sequence after its admission projects every layer's keys and values
//! from the encoder output and writes them into its slots; every later step gathers them back.

use candle_core::{Device, Tensor};

use super::store::KvStore;
use crate::error::{Error, Result};

/// One sequence's cross-attention keys and values in a packed batch.
#[derive(Debug)]
pub struct CrossSlots {
    /// The store slots of its `s` encoder positions.
    slots: Vec<u32>,
    /// The same, u32 `[s]`, for gathering.
    gather: Tensor,
    /// `[1, s, hidden]`: the encoder output to project and write in this step (the sequence's
    /// first step since its admission), `None` once its slots hold the keys and values.
    to_write: Option<Tensor>,
}

impl CrossSlots {
    /// Keys and values at `slots` (one per encoder position); with `to_write`, the encoder output
    /// `[1, s, hidden]` they are first computed from in this step.
    pub fn new(slots: Vec<u32>, to_write: Option<Tensor>, device: &Device) -> Result<Self> {
        if let Some(encoder) = &to_write {
            let s = encoder.dim(1)?;
            if s != slots.len() {
                return Err(Error::input(format!(
                    "cross-attention slots: {} slots for an encoder output of {s} positions",
                    slots.len()
                )));
            }
        }
        let gather = Tensor::new(slots.as_slice(), device)?;
        Ok(Self {
            slots,
            gather,
            to_write,
        })
    }

    /// Layer `layer`'s keys and values `[1, heads, s, d]`: projected by `project` from the
    /// encoder output and written into the slots on the sequence's first step, gathered from
    /// them afterwards.
    pub fn kv(
        &self,
        store: &KvStore,
        layer: usize,
        project: &mut dyn FnMut(&Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        match &self.to_write {
            Some(encoder) => {
                let (k, v) = project(encoder)?; // [1, heads, s, d]
                store.write(layer, &self.slots, &k, &v)?;
                Ok((k, v))
            }
            None => store.gather(layer, &self.gather),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::cache::paged::StoreShape;

    /// The first step projects and writes; a later step reads the same values back from the
    /// slots without projecting.
    #[test]
    fn written_once_then_gathered() -> Result<()> {
        let dev = Device::Cpu;
        let store = KvStore::new(
            StoreShape {
                layers: vec![(2, 1); 2],
                slots: 8,
            },
            DType::F32,
            &dev,
        )?;
        let encoder = Tensor::new(&[[[1f32, 2.], [3., 4.], [5., 6.]]], &dev)?; // [1, 3, 2]
        let heads = |e: &Tensor| -> Result<(Tensor, Tensor)> {
            let k = e.transpose(1, 2)?.unsqueeze(3)?.contiguous()?; // [1, 2, 3, 1]
            Ok((k.clone(), (k * 10.0)?))
        };
        let first = CrossSlots::new(vec![5, 6, 1], Some(encoder.clone()), &dev)?;
        let written = first.kv(&store, 1, &mut |e| heads(e))?;
        let later = CrossSlots::new(vec![5, 6, 1], None, &dev)?;
        let (k, v) = later.kv(&store, 1, &mut |_| Err(Error::input("projected again")))?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        assert_eq!(flat(&k)?, flat(&written.0)?);
        assert_eq!(flat(&v)?, [10., 30., 50., 20., 40., 60.]);
        let (k0, _) = later.kv(&store, 0, &mut |_| Err(Error::input("projected again")))?;
        assert_eq!(flat(&k0)?, [0.; 6], "layer 0 was never written");
        assert!(CrossSlots::new(vec![0, 1], Some(encoder), &dev).is_err());
        Ok(())
    }
}
