//! A packed batch over the paged store: the [`KvCache`] the engine hands to a model forward.
//!
//! The new tokens of every scheduled sequence lie side by side in one `[1, T]` input (a chunk of
//! a prompt, or one decode token); [`KvCache::spans`] tells the model where each sequence starts
//! and how much it has cached, and [`KvCache::update_sequence`] writes a sequence's new keys and
//! values into its blocks and gathers all of them back. An encoder-decoder model's sequences also
//! read their cross-attention keys and values from their own blocks
//! ([`KvCache::cross_attention_sequence`], [`super::cross`]).

use candle_core::{Device, Tensor};

use super::cross::CrossSlots;
use super::store::KvStore;
use crate::cache::{KvCache, LayerState, LayerStates, SequenceSpan};
use crate::error::{Error, Result};
use crate::models::layers::attention::Scores;

/// One forward's view of the store.
#[derive(Debug)]
pub struct PagedBatch<'a> {
    store: &'a KvStore,
    spans: Vec<SequenceSpan>,
    /// Per sequence, the slots of its `past + new` tokens.
    slots: Vec<Vec<u32>>,
    /// The same as u32 `[past + new]` tensors, for gathering: uploaded by the first layer that
    /// gathers the sequence (decode tokens read the store in place and never need them).
    gather: Vec<Option<Tensor>>,
    device: Device,
    /// Each sequence's recurrent-layer states (empty for attention-only models), handed in by
    /// the engine and taken back with [`PagedBatch::into_states`].
    states: Vec<LayerStates>,
    /// An encoder-decoder model's cross-attention slots, one entry per sequence
    /// ([`PagedBatch::with_cross_slots`]); empty for a decoder-only model.
    cross: Vec<CrossSlots>,
    /// On a GPU, the decode tokens' slots uploaded by the first layer and read by the others:
    /// `(the sequences and positions they were made for, the index)`.
    device_index: Option<(Vec<(usize, usize)>, crate::cuda::PagedIndex)>,
    /// On a GPU, every sequence's slots and new tokens, for steps with prompt chunks: uploaded
    /// by the first layer and read by the others.
    device_step: Option<crate::cuda::PagedStep>,
    /// A step captured as a CUDA graph: the decode tokens' index in a buffer that stays where
    /// it is, refilled before each replay ([`PagedBatch::with_fixed_index`]).
    fixed_index: Option<&'a crate::cuda::PagedIndex>,
}

impl<'a> PagedBatch<'a> {
    /// A batch of sequences with these `spans`; `slots[i]` has `past + new` entries.
    pub fn new(
        store: &'a KvStore,
        spans: Vec<SequenceSpan>,
        slots: Vec<Vec<u32>>,
        device: &Device,
    ) -> Result<Self> {
        if spans.len() != slots.len()
            || spans
                .iter()
                .zip(&slots)
                .any(|(s, sl)| s.past + s.new != sl.len())
        {
            return Err(Error::input(
                "paged batch: each sequence needs one slot per cached and new token",
            ));
        }
        let gather = vec![None; slots.len()];
        let states = vec![LayerStates::default(); spans.len()];
        Ok(Self {
            store,
            spans,
            slots,
            gather,
            device: device.clone(),
            states,
            cross: Vec::new(),
            device_index: None,
            device_step: None,
            fixed_index: None,
        })
    }

    /// With the decode tokens' index already on the device in `index` (a step captured as a
    /// CUDA graph, [`crate::engine`]'s step graphs): every sequence one new token, sequence `i`'s
    /// at input position `i`, as `index` was last refilled. A GPU forward attends through it and
    /// uploads nothing; on the CPU the host slots serve as before.
    pub fn with_fixed_index(mut self, index: &'a crate::cuda::PagedIndex) -> Self {
        self.fixed_index = Some(index);
        self
    }

    /// With each sequence's recurrent states (one entry per sequence, in order).
    pub fn with_states(mut self, states: Vec<LayerStates>) -> Result<Self> {
        if states.len() != self.spans.len() {
            return Err(Error::input(
                "paged batch: one set of recurrent states per sequence",
            ));
        }
        self.states = states;
        Ok(self)
    }

    /// With each sequence's cross-attention slots (an encoder-decoder model; one entry per
    /// sequence, in order).
    pub fn with_cross_slots(mut self, cross: Vec<CrossSlots>) -> Result<Self> {
        if cross.len() != self.spans.len() {
            return Err(Error::input(
                "paged batch: one set of cross-attention slots per sequence",
            ));
        }
        self.cross = cross;
        Ok(self)
    }

    /// The sequences' recurrent states after the forward.
    pub fn into_states(self) -> Vec<LayerStates> {
        self.states
    }

    fn states_of(&self, seq: Option<usize>) -> Result<usize> {
        match seq {
            Some(i) if i < self.states.len() => Ok(i),
            Some(i) => Err(Error::input(format!(
                "paged batch: no sequence {i} (it has {})",
                self.states.len()
            ))),
            None if self.states.len() == 1 => Ok(0),
            None => Err(Error::unsupported(
                "a packed batch of several sequences keeps recurrent state per sequence",
            )),
        }
    }
}

impl KvCache for PagedBatch<'_> {
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.spans.len() != 1 {
            return Err(Error::unsupported(
                "a packed batch of several sequences is updated per sequence",
            ));
        }
        self.update_sequence(layer, 0, k, v)
    }

    fn seq_len(&self) -> usize {
        match self.spans.as_slice() {
            [one] => one.past,
            _ => 0,
        }
    }

    fn reorder(&mut self, _beam_idx: &[usize]) -> Result<()> {
        Err(Error::unsupported(
            "the paged cache does not reorder rows (beam search runs on the dynamic cache)",
        ))
    }

    fn batch_repeat_interleave(&mut self, _n: usize) -> Result<()> {
        Err(Error::unsupported(
            "the paged cache does not repeat rows (contrastive search runs on the dynamic cache)",
        ))
    }

    fn spans(&self) -> Option<&[SequenceSpan]> {
        Some(&self.spans)
    }

    fn update_sequence(
        &mut self,
        layer: usize,
        seq: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let span = self.spans[seq];
        self.store
            .write(layer, &self.slots[seq][span.past..], k, v)?;
        let gather = match &self.gather[seq] {
            Some(g) => g.clone(),
            None => {
                let g = Tensor::new(self.slots[seq].as_slice(), &self.device)?;
                self.gather[seq] = Some(g.clone());
                g
            }
        };
        self.store.gather(layer, &gather)
    }

    fn decode_attention(
        &mut self,
        layer: usize,
        seqs: &[(usize, usize)],
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        let mut tokens = Vec::with_capacity(seqs.len());
        let mut slots = Vec::with_capacity(seqs.len());
        for &(i, position) in seqs {
            match self.spans.get(i) {
                Some(span) if span.new == 1 => {
                    tokens.push(position);
                    slots.push(self.slots[i].as_slice());
                }
                _ => return Ok(None),
            }
        }
        if let (Some(index), true) = (self.fixed_index, q.device().is_cuda()) {
            let in_order = seqs.iter().enumerate().all(|(j, &(i, p))| i == j && p == j);
            if seqs.len() != index.len() || !in_order {
                return Err(Error::input(format!(
                    "a step with a fixed paged index of {} decode tokens was asked to attend for \
                     {} tokens out of input order",
                    index.len(),
                    seqs.len()
                )));
            }
            let (sk, sv) = self.store.layer(layer)?;
            return crate::cuda::paged_decode_attention(sk, sv, [q, k, v], index, scale);
        }
        if q.device().is_cuda() {
            if self
                .device_index
                .as_ref()
                .is_none_or(|(made, _)| made != seqs)
            {
                let index = crate::cuda::PagedIndex::new(&tokens, &slots, q.device())?;
                self.device_index = Some((seqs.to_vec(), index));
            }
            if let Some((_, index)) = &self.device_index {
                let (sk, sv) = self.store.layer(layer)?;
                return crate::cuda::paged_decode_attention(sk, sv, [q, k, v], index, scale);
            }
        }
        super::decode::decode_attention(self.store, layer, &tokens, &slots, [q, k, v], scale)
    }

    fn packed_attention(
        &mut self,
        layer: usize,
        qkv: [&Tensor; 3],
        window: Option<usize>,
        scores: Scores<'_>,
    ) -> Result<Option<Tensor>> {
        if !qkv[0].device().is_cuda() {
            return Ok(None);
        }
        if self.device_step.is_none() {
            let news: Vec<usize> = self.spans.iter().map(|s| s.new).collect();
            let slots: Vec<&[u32]> = self.slots.iter().map(Vec::as_slice).collect();
            self.device_step = Some(crate::cuda::PagedStep::new(&news, &slots, &self.device)?);
        }
        let Some(step) = &self.device_step else {
            return Ok(None);
        };
        let (sk, sv) = self.store.layer(layer)?;
        crate::cuda::paged_flash_attention(sk, sv, qkv, step, window, scores)
    }

    fn state(&self, layer: usize, seq: Option<usize>) -> Result<Option<LayerState>> {
        Ok(self.states[self.states_of(seq)?].get(layer).cloned())
    }

    fn set_state(&mut self, layer: usize, seq: Option<usize>, state: LayerState) -> Result<()> {
        let i = self.states_of(seq)?;
        self.states[i].set(layer, state);
        Ok(())
    }

    fn cross_attention_sequence(
        &mut self,
        layer: usize,
        seq: usize,
        project: &mut dyn FnMut(&Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let cross = self.cross.get(seq).ok_or_else(|| {
            Error::input(format!(
                "paged batch: no cross-attention slots for sequence {seq} (it holds {}); an \
                 encoder-decoder model needs them for every sequence",
                self.cross.len()
            ))
        })?;
        cross.kv(self.store, layer, project)
    }
}
