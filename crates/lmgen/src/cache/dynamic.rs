//! HF `DynamicCache`: grows with the sequence.
//!
//! Each layer keeps a preallocated buffer `[b, kv_heads, capacity, d]` written in place; the
//! capacity doubles when full, so appending a token costs O(1) amortised instead of re-copying the
//! whole cache every step. Sliding-window layers keep every token and rely on the mask, which is
//! what transformers' sliding layers compute too.
//!
//! Recurrent layers (linear attention, short convolutions) keep their fixed-size state here too;
//! [`KvCache::checkpoint`] remembers it so that [`KvCache::crop`] can go back.

use candle_core::{Tensor, D};

use super::state::{LayerState, LayerStates};
use super::KvCache;
use crate::error::{Error, Result};

/// Initial capacity in tokens; grows by doubling.
const MIN_CAPACITY: usize = 64;

#[derive(Debug, Clone)]
struct LayerKv {
    /// `[b, kv_heads, capacity, d]`
    k: Tensor,
    v: Tensor,
    len: usize,
}

/// [`crate::cuda::decode_attention_at`] of `q` over `e`'s buffers (a CUDA cache whose token is
/// written at `slots` already), or an error naming what it does not take.
fn attend_at(e: &LayerKv, q: &Tensor, slots: &Tensor, scale: f64) -> Result<Tensor> {
    crate::cuda::decode_attention_at(q, &e.k, &e.v, slots, scale)?.ok_or_else(|| {
        Error::unsupported(format!(
            "decode attention at device slots does not take q {:?} {:?} over keys {:?} {:?}",
            q.dims(),
            q.dtype(),
            e.k.dims(),
            e.k.dtype()
        ))
    })
}

/// A cache that grows as tokens are appended.
#[derive(Debug, Clone, Default)]
pub struct DynamicCache {
    layers: Vec<Option<LayerKv>>,
    /// Recurrent layers' states.
    states: LayerStates,
    /// The states at the last [`KvCache::checkpoint`].
    checkpoint: Option<LayerStates>,
    /// Allocate every layer at this many tokens and never grow (the static cache); `None`
    /// grows by doubling.
    fixed_capacity: Option<usize>,
}

impl DynamicCache {
    /// An empty cache; layers are allocated on their first [`KvCache::update`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache whose layers are each allocated at `capacity` tokens on their first
    /// [`KvCache::update`] and never grow: an update past it is an error (see
    /// [`super::StaticCache`]).
    pub(crate) fn with_fixed_capacity(capacity: usize) -> Self {
        Self {
            fixed_capacity: Some(capacity),
            ..Self::default()
        }
    }

    /// `layer`'s buffers where they are allocated with room for one more token (a decode step
    /// at device slots, [`KvCache::decode_at`]), else `None`.
    fn layer_with_room(&mut self, layer: usize) -> Result<Option<&mut LayerKv>> {
        match self.layers.get_mut(layer) {
            Some(Some(e)) if e.len < e.k.dim(2)? => Ok(Some(e)),
            _ => Ok(None),
        }
    }

    /// Bytes of key/value buffers allocated (capacity, not just the tokens held), plus
    /// recurrent states.
    pub fn allocated_bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let kv: usize = self
            .layers
            .iter()
            .flatten()
            .map(|l| size(&l.k) + size(&l.v))
            .sum();
        kv + self.states.bytes()
    }

    /// The capacity a layer of `len` tokens needs to take `t` more, or the error of a fixed
    /// capacity too small.
    fn capacity_for(&self, current: usize, len: usize, t: usize) -> Result<usize> {
        match self.fixed_capacity {
            Some(fixed) if len + t > fixed => Err(static_full(fixed, len + t)),
            Some(fixed) => Ok(fixed),
            None if current == 0 => Ok(t.max(MIN_CAPACITY)),
            None => Ok((2 * current).max(len + t)),
        }
    }
}

/// The error of a step needing `needed` tokens per row of a static cache of `fixed`.
pub(crate) fn static_full(fixed: usize, needed: usize) -> Error {
    Error::input(format!(
        "the static cache holds {fixed} tokens per sequence (`max_cache_len`, else \
         `max_length - 1`) and this step needs {needed}; raise `max_cache_len`"
    ))
}

/// [`KvCache::decode_at`] where the slots can be read directly (the CPU): the token written at
/// each row's slot, then attention over each row's keys up to it, as the plain step computes it
/// (one batch when every row is at the same slot).
fn decode_at_on_host(
    e: &LayerKv,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    slots: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    use crate::models::layers::attention::attend_unmasked;
    let slots: Vec<u32> = slots.to_vec1()?;
    let capacity = e.k.dim(2)?;
    if let Some(&slot) = slots.iter().find(|&&s| s as usize >= capacity) {
        return Err(Error::input(format!(
            "decode slot {slot} is past the {capacity} reserved"
        )));
    }
    let attend_rows = |rows: std::ops::Range<usize>, slot: usize| -> Result<Tensor> {
        let n = rows.len();
        let row = |t: &Tensor| t.narrow(0, rows.start, n);
        for (buf, new) in [(&e.k, k), (&e.v, v)] {
            row(buf)?.slice_set(&row(new)?.contiguous()?, 2, slot)?;
        }
        let (ks, vs) = (
            row(&e.k)?.narrow(2, 0, slot + 1)?,
            row(&e.v)?.narrow(2, 0, slot + 1)?,
        );
        // What the plain step's attention runs (`Attention::attend_dense`).
        attend_unmasked(&row(q)?, &ks, &vs, scale)
    };
    match slots.first() {
        Some(&first) if slots.iter().all(|&s| s == first) => {
            attend_rows(0..slots.len(), first as usize)
        }
        _ => {
            let outs = (0..slots.len())
                .map(|r| attend_rows(r..r + 1, slots[r] as usize))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&outs, 0)?)
        }
    }
}

fn grow(buf: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
    let (b, h, _, d) = buf.dims4()?;
    let new = Tensor::zeros((b, h, capacity, d), buf.dtype(), buf.device())?;
    new.slice_set(&buf.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    Ok(new)
}

impl KvCache for DynamicCache {
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let t = k.dim(2)?;
        let entry = match self.layers[layer].take() {
            None => {
                let capacity = self.capacity_for(0, 0, t)?;
                let (b, h, _, d) = k.dims4()?;
                LayerKv {
                    k: Tensor::zeros((b, h, capacity, d), k.dtype(), k.device())?,
                    v: Tensor::zeros((b, h, capacity, d), v.dtype(), v.device())?,
                    len: 0,
                }
            }
            Some(mut e) => {
                let capacity = e.k.dim(2)?;
                if e.len + t > capacity {
                    let capacity = match self.capacity_for(capacity, e.len, t) {
                        Ok(c) => c,
                        Err(err) => {
                            self.layers[layer] = Some(e);
                            return Err(err);
                        }
                    };
                    e.k = grow(&e.k, e.len, capacity)?;
                    e.v = grow(&e.v, e.len, capacity)?;
                }
                e
            }
        };
        entry.k.slice_set(&k.contiguous()?, 2, entry.len)?;
        entry.v.slice_set(&v.contiguous()?, 2, entry.len)?;
        let len = entry.len + t;
        let out = (
            entry.k.narrow(D::Minus2, 0, len)?,
            entry.v.narrow(D::Minus2, 0, len)?,
        );
        self.layers[layer] = Some(LayerKv { len, ..entry });
        Ok(out)
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
        let Some(e) = self.layer_with_room(layer)? else {
            return Ok(None);
        };
        let out = if e.k.device().is_cuda() {
            if e.k.dim(2)? > crate::cuda::DECODE_MAX_KEYS || !crate::cuda::enabled() {
                return Ok(None);
            }
            crate::cuda::kv_write(&e.k, k, slots)?;
            crate::cuda::kv_write(&e.v, v, slots)?;
            attend_at(e, q, slots, scale)?
        } else {
            decode_at_on_host(e, q, k, v, slots, scale)?
        };
        e.len += 1;
        Ok(Some(out))
    }

    fn decode_token_at(
        &mut self,
        layer: usize,
        token: &crate::cuda::FusedQkv<'_>,
        slots: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        let Some(e) = self.layer_with_room(layer)? else {
            return Ok(None);
        };
        if e.k.dim(2)? > crate::cuda::DECODE_MAX_KEYS {
            return Ok(None);
        }
        let Some(q) = crate::cuda::rope_kv_write(token, &e.k, &e.v, slots)? else {
            return Ok(None);
        };
        let out = attend_at(e, &q, slots, scale)?;
        e.len += 1;
        Ok(Some(out))
    }

    fn decode_layer_at(
        &mut self,
        layer: usize,
        run: &mut super::LayerLaunch<'_>,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Some(e) = self.layer_with_room(layer)? else {
            return Ok(None);
        };
        let out = run(&e.k, &e.v)?;
        if out.is_some() {
            e.len += 1;
        }
        Ok(out)
    }

    fn reserve(&mut self, tokens: usize) -> Result<bool> {
        if !self.states.is_empty() || self.layers.iter().flatten().next().is_none() {
            return Ok(false);
        }
        if let Some(fixed) = self.fixed_capacity {
            return Ok(tokens <= fixed);
        }
        for e in self.layers.iter_mut().flatten() {
            if e.k.dim(2)? < tokens {
                e.k = grow(&e.k, e.len, tokens)?;
                e.v = grow(&e.v, e.len, tokens)?;
            }
        }
        Ok(true)
    }

    fn advance(&mut self, t: usize) -> Result<()> {
        for e in self.layers.iter().flatten() {
            let capacity = e.k.dim(2)?;
            if e.len + t > capacity {
                return Err(Error::input(format!(
                    "a replayed decode step appends past the {capacity} tokens reserved"
                )));
            }
        }
        for e in self.layers.iter_mut().flatten() {
            e.len += t;
        }
        Ok(())
    }

    fn seq_len(&self) -> usize {
        let kv = self.layers.iter().flatten().next().map_or(0, |l| l.len);
        kv.max(self.states.max_len().unwrap_or(0))
    }

    fn reorder(&mut self, beam_idx: &[usize]) -> Result<()> {
        let device = match (self.layers.iter().flatten().next(), self.states.first()) {
            (Some(first), _) => first.k.device().clone(),
            (None, Some(state)) => state.conv.device().clone(),
            (None, None) => return Ok(()),
        };
        let idx: Vec<u32> = beam_idx.iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx, &device)?; // [b']
        for layer in self.layers.iter_mut().flatten() {
            // [b, kv_heads, capacity, d] -> [b', kv_heads, capacity, d]
            layer.k = layer.k.index_select(&idx, 0)?;
            layer.v = layer.v.index_select(&idx, 0)?;
        }
        self.states.select_rows(&idx)?;
        self.checkpoint = None;
        Ok(())
    }

    fn batch_repeat_interleave(&mut self, n: usize) -> Result<()> {
        let b = match (self.layers.iter().flatten().next(), self.states.first()) {
            (Some(first), _) => first.k.dim(0)?,
            (None, Some(state)) => state.conv.dim(0)?,
            (None, None) => return Ok(()),
        };
        let idx: Vec<usize> = (0..b).flat_map(|i| std::iter::repeat_n(i, n)).collect();
        self.reorder(&idx)
    }

    /// O(1): only the lengths change; the buffers keep their capacity and the dropped slots are
    /// overwritten by the next `update`. Recurrent states past `len` go back to the checkpoint.
    fn crop(&mut self, len: usize) -> Result<()> {
        let len = if len == 0 {
            self.states.clear();
            self.checkpoint = None;
            0
        } else if self.states.max_len().is_some_and(|l| l > len) {
            match &self.checkpoint {
                Some(saved) if saved.max_len().unwrap_or(0) <= len => {
                    self.states = saved.clone();
                    self.states.min_len().unwrap_or(0)
                }
                _ => {
                    return Err(Error::unsupported(format!(
                        "the recurrent state holds {} tokens and cannot go back to {len}: \
                         no checkpoint at or before it",
                        self.states.max_len().unwrap_or(0)
                    )))
                }
            }
        } else {
            len
        };
        for layer in self.layers.iter_mut().flatten() {
            layer.len = layer.len.min(len);
        }
        Ok(())
    }

    fn checkpoint(&mut self) {
        self.checkpoint = Some(self.states.clone());
    }

    fn state(&self, layer: usize, seq: Option<usize>) -> Result<Option<LayerState>> {
        dense_only(seq)?;
        Ok(self.states.get(layer).cloned())
    }

    fn set_state(&mut self, layer: usize, seq: Option<usize>, state: LayerState) -> Result<()> {
        dense_only(seq)?;
        self.states.set(layer, state);
        Ok(())
    }
}

fn dense_only(seq: Option<usize>) -> Result<()> {
    match seq {
        None => Ok(()),
        Some(_) => Err(Error::unsupported(
            "the dynamic cache holds dense batches, not packed sequences",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn appends_and_grows_past_capacity() {
        let mut cache = DynamicCache::new();
        let dev = Device::Cpu;
        let mut all = Vec::new();
        for step in 0..70u32 {
            let t = if step == 0 { 3 } else { 1 };
            let vals: Vec<f32> = (0..t * 2).map(|i| (step * 10 + i as u32) as f32).collect();
            all.extend(vals.iter().copied());
            let k = Tensor::from_vec(vals, (1, 1, t, 2), &dev).unwrap();
            let (ks, vs) = cache.update(0, &k, &k).unwrap();
            assert_eq!(ks.dims4().unwrap(), (1, 1, all.len() / 2, 2));
            let got: Vec<f32> = ks.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got, all);
            assert_eq!(vs.flatten_all().unwrap().to_vec1::<f32>().unwrap(), all);
        }
        assert_eq!(cache.seq_len(), 72);
    }

    /// The whole-layer seam: the buffers handed over hold room for the token, the token counts
    /// only where the launch ran, and a layer without room is never handed over.
    #[test]
    fn decode_layer_at_counts_the_token_only_where_it_ran() {
        let dev = Device::Cpu;
        let mut cache = DynamicCache::with_fixed_capacity(5);
        let k = Tensor::zeros((1, 2, 3, 4), DType::F32, &dev).unwrap();
        cache.update(0, &k, &k).unwrap();
        assert!(cache.reserve(5).unwrap());
        let mut declined = |_: &Tensor, _: &Tensor| Ok(None);
        assert!(cache.decode_layer_at(0, &mut declined).unwrap().is_none());
        assert_eq!(cache.seq_len(), 3);
        let mut ran = |k: &Tensor, v: &Tensor| {
            assert_eq!(k.dims4().unwrap(), (1, 2, 5, 4));
            assert_eq!(v.dims(), k.dims());
            Ok(Some((k.clone(), v.clone())))
        };
        for len in [4, 5] {
            assert!(cache.decode_layer_at(0, &mut ran).unwrap().is_some());
            assert_eq!(cache.seq_len(), len);
        }
        // Full: not handed over.
        let mut never = |_: &Tensor, _: &Tensor| -> Result<Option<(Tensor, Tensor)>> {
            panic!("a full layer was handed over")
        };
        assert!(cache.decode_layer_at(0, &mut never).unwrap().is_none());
        assert!(cache.decode_layer_at(1, &mut never).unwrap().is_none());
        assert_eq!(cache.seq_len(), 5);
    }

    #[test]
    fn reorder_selects_batch_rows() {
        let dev = Device::Cpu;
        let mut cache = DynamicCache::new();
        let k = Tensor::from_vec(vec![1f32, 2., 3.], (3, 1, 1, 1), &dev).unwrap();
        cache.update(0, &k, &k).unwrap();
        cache.reorder(&[2, 2, 0]).unwrap();
        let one = Tensor::from_vec(vec![7f32, 8., 9.], (3, 1, 1, 1), &dev).unwrap();
        let (ks, _) = cache.update(0, &one, &one).unwrap();
        let got: Vec<f32> = ks.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![3., 7., 3., 8., 1., 9.]);
    }

    #[test]
    fn repeat_interleave_then_select_rows() {
        let dev = Device::Cpu;
        let mut cache = DynamicCache::new();
        let k = Tensor::from_vec(vec![1f32, 2.], (2, 1, 1, 1), &dev).unwrap();
        cache.update(0, &k, &k).unwrap();
        cache.batch_repeat_interleave(3).unwrap();
        let step =
            Tensor::from_vec(vec![10f32, 11., 12., 20., 21., 22.], (6, 1, 1, 1), &dev).unwrap();
        let (ks, _) = cache.update(0, &step, &step).unwrap();
        assert_eq!(ks.dims4().unwrap(), (6, 1, 2, 1));
        let got: Vec<f32> = ks.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            got,
            vec![1., 10., 1., 11., 1., 12., 2., 20., 2., 21., 2., 22.]
        );
        cache.batch_select_indices(&[2, 3]).unwrap();
        let one = Tensor::from_vec(vec![7f32, 8.], (2, 1, 1, 1), &dev).unwrap();
        let (ks, vs) = cache.update(0, &one, &one).unwrap();
        let got: Vec<f32> = ks.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![1., 12., 7., 2., 20., 8.]);
        assert_eq!(vs.flatten_all().unwrap().to_vec1::<f32>().unwrap(), got);
        assert_eq!(cache.seq_len(), 3);
    }

    #[test]
    fn crop_drops_the_tail_and_appends_after_it() {
        let dev = Device::Cpu;
        let mut cache = DynamicCache::new();
        let k = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 4, 1), &dev).unwrap();
        cache.update(0, &k, &k).unwrap();
        let k2 = k.narrow(2, 0, 2).unwrap();
        cache.update(1, &k2, &k2).unwrap();
        cache.crop(3).unwrap();
        assert_eq!(cache.seq_len(), 3);
        let one = Tensor::from_vec(vec![9f32], (1, 1, 1, 1), &dev).unwrap();
        let (ks, _) = cache.update(0, &one, &one).unwrap();
        let got: Vec<f32> = ks.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![1., 2., 3., 9.]);
        // A layer shorter than the crop length keeps its tokens.
        let (ks, _) = cache.update(1, &one, &one).unwrap();
        assert_eq!(ks.dim(2).unwrap(), 3);
        cache.crop(0).unwrap();
        assert_eq!(cache.seq_len(), 0);
    }
}
