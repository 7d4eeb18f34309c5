//! HF `EncoderDecoderCache`: the decoder's self-attention cache beside what cross-attention
//! reads, the encoder's output and each layer's keys and values of it.
//!
//! Cross-attention keys and values are computed from the encoder's output by each decoder layer
//! on its first step and then kept ([`CrossAttention::kv`]), as transformers' cross-attention
//! cache is filled on the first forward and reused (`is_updated`). Batch-row operations
//! (`reorder`, `batch_select_indices`, `batch_repeat_interleave`) move the encoder's rows with
//! the decoder's.
//!
//! The encoder runs once on the caller's rows; decoding loops that expand them (beam search's
//! `num_beams` rows per prompt, `num_return_sequences`) run the decoder on `n` times as many
//! rows, each prompt's copies next to each other. The first forward over such a batch repeats
//! every encoder row `n` times in place (HF `_expand_inputs_for_generation` expands
//! `encoder_outputs` with `repeat_interleave` the same way).

use candle_core::{DType, Tensor};

use super::state::LayerState;
use super::{KvCache, SequenceSpan};
use crate::error::{Error, Result};
use crate::models::layers::seq2seq_attention::padding_mask;
use crate::models::seq2seq::EncoderOutput;

/// What cross-attention attends to, per batch row.
#[derive(Debug, Clone)]
pub struct CrossAttention {
    /// `[b, s, hidden]`: the encoder's last hidden state.
    encoder_hidden_states: Tensor,
    /// `[b][s]` encoder padding (1 = attend), `None` without padding.
    encoder_attention_mask: Option<Vec<Vec<u8>>>,
    /// Per decoder layer, its projected keys and values `[b, heads, s, d]` once computed.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// The additive mask `[b, 1, 1, s]` built from `encoder_attention_mask`, per dtype.
    mask: Option<(DType, Tensor)>,
}

impl CrossAttention {
    /// Cross-attention over `encoder`'s output.
    pub fn new(encoder: EncoderOutput) -> Self {
        Self {
            encoder_hidden_states: encoder.last_hidden_state,
            encoder_attention_mask: encoder.attention_mask,
            layers: Vec::new(),
            mask: None,
        }
    }

    /// Rows held.
    pub fn batch(&self) -> Result<usize> {
        Ok(self.encoder_hidden_states.dim(0)?)
    }

    /// `[b, s, hidden]`: the encoder's output.
    pub fn encoder_hidden_states(&self) -> &Tensor {
        &self.encoder_hidden_states
    }

    /// `[b][s]` encoder padding, `None` without padding.
    pub fn encoder_attention_mask(&self) -> Option<&[Vec<u8>]> {
        self.encoder_attention_mask.as_deref()
    }

    /// Makes the rows match a decoder batch of `rows`: a multiple `n` of the rows held repeats
    /// each of them `n` times (see the module docs); any other count is an error.
    pub fn fit_rows(&mut self, rows: usize) -> Result<()> {
        let held = self.batch()?;
        if rows == held {
            return Ok(());
        }
        if held == 0 || !rows.is_multiple_of(held) {
            return Err(Error::input(format!(
                "the decoder runs {rows} rows but the encoder's output has {held}; \
                 an encoder-decoder batch must keep each prompt's rows together"
            )));
        }
        self.repeat_interleave(rows / held)
    }

    /// Layer `layer`'s keys and values `[b, heads, s, d]`: computed by `project` from the
    /// encoder's output `[b, s, hidden]` on the first call and kept.
    pub fn kv(
        &mut self,
        layer: usize,
        project: impl FnOnce(&Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        if let Some(kv) = &self.layers[layer] {
            return Ok(kv.clone());
        }
        let kv = project(&self.encoder_hidden_states)?;
        self.layers[layer] = Some(kv.clone());
        Ok(kv)
    }

    /// The additive cross-attention mask `[b, 1, 1, s]` in `dtype` (0 on real encoder
    /// positions, the dtype's minimum on padding, as transformers' `_prepare_4d_attention_mask`),
    /// or `None` without padding.
    pub fn additive_mask(&mut self, dtype: DType) -> Result<Option<Tensor>> {
        if let Some((d, mask)) = &self.mask {
            if *d == dtype {
                return Ok(Some(mask.clone()));
            }
        }
        let device = self.encoder_hidden_states.device().clone();
        let mask = padding_mask(self.encoder_attention_mask.as_deref(), dtype, &device)?;
        if let Some(mask) = &mask {
            self.mask = Some((dtype, mask.clone()));
        }
        Ok(mask)
    }

    /// Keeps rows `idx`, in that order.
    fn select(&mut self, idx: &[usize]) -> Result<()> {
        let device = self.encoder_hidden_states.device().clone();
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let ids = Tensor::new(ids, &device)?;
        self.encoder_hidden_states = self.encoder_hidden_states.index_select(&ids, 0)?;
        if let Some(mask) = &mut self.encoder_attention_mask {
            let old = std::mem::take(mask);
            *mask = idx.iter().map(|&i| old[i].clone()).collect();
        }
        for kv in self.layers.iter_mut().flatten() {
            *kv = (kv.0.index_select(&ids, 0)?, kv.1.index_select(&ids, 0)?);
        }
        self.mask = None;
        Ok(())
    }

    fn repeat_interleave(&mut self, n: usize) -> Result<()> {
        let b = self.batch()?;
        let idx: Vec<usize> = (0..b).flat_map(|i| std::iter::repeat_n(i, n)).collect();
        self.select(&idx)
    }

    /// Bytes of the encoder output and the projected keys and values held.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.encoder_hidden_states)
            + self
                .layers
                .iter()
                .flatten()
                .map(|(k, v)| size(k) + size(v))
                .sum::<usize>()
    }
}

/// A decoder's self-attention cache with the cross-attention state of an encoder-decoder model.
pub struct EncoderDecoderCache {
    self_attention: Box<dyn KvCache>,
    cross_attention: CrossAttention,
}

impl EncoderDecoderCache {
    /// `self_attention` (any kind of cache) beside cross-attention over `encoder`'s output.
    pub fn new(self_attention: Box<dyn KvCache>, encoder: EncoderOutput) -> Self {
        Self {
            self_attention,
            cross_attention: CrossAttention::new(encoder),
        }
    }
}

impl KvCache for EncoderDecoderCache {
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.self_attention.update(layer, k, v)
    }

    fn seq_len(&self) -> usize {
        self.self_attention.seq_len()
    }

    fn reorder(&mut self, beam_idx: &[usize]) -> Result<()> {
        self.self_attention.reorder(beam_idx)?;
        self.cross_attention.select(beam_idx)
    }

    fn spans(&self) -> Option<&[SequenceSpan]> {
        self.self_attention.spans()
    }

    fn batch_repeat_interleave(&mut self, n: usize) -> Result<()> {
        self.self_attention.batch_repeat_interleave(n)?;
        self.cross_attention.repeat_interleave(n)
    }

    fn batch_select_indices(&mut self, indices: &[usize]) -> Result<()> {
        self.self_attention.batch_select_indices(indices)?;
        self.cross_attention.select(indices)
    }

    fn crop(&mut self, len: usize) -> Result<()> {
        self.self_attention.crop(len)
    }

    fn checkpoint(&mut self) {
        self.self_attention.checkpoint();
    }

    fn state(&self, layer: usize, seq: Option<usize>) -> Result<Option<LayerState>> {
        self.self_attention.state(layer, seq)
    }

    fn set_state(&mut self, layer: usize, seq: Option<usize>, state: LayerState) -> Result<()> {
        self.self_attention.set_state(layer, seq, state)
    }

    fn cross_attention(&mut self) -> Option<&mut CrossAttention> {
        Some(&mut self.cross_attention)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::cache::DynamicCache;

    fn rows(t: &Tensor) -> Vec<f32> {
        t.narrow(1, 0, 1)
            .unwrap()
            .narrow(2, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Expanding, reordering and selecting rows moves the encoder's rows, its mask and the
    /// projected keys and values together.
    #[test]
    fn row_operations_follow_the_decoder() -> Result<()> {
        let dev = Device::Cpu;
        // Row r holds the value r everywhere: [2, 3, 4].
        let hidden = Tensor::new(&[[[0f32; 4]; 3], [[1f32; 4]; 3]], &dev)?;
        let mut cache = EncoderDecoderCache::new(
            Box::new(DynamicCache::new()),
            EncoderOutput {
                last_hidden_state: hidden,
                attention_mask: Some(vec![vec![1, 1, 0], vec![1, 1, 1]]),
            },
        );
        let cross = cache.cross_attention().unwrap();
        cross.fit_rows(4)?;
        assert_eq!(rows(cross.encoder_hidden_states()), [0.0, 0.0, 1.0, 1.0]);
        let (k, _) = cross.kv(0, |h| Ok((h.unsqueeze(1)?, h.unsqueeze(1)?)))?;
        assert_eq!(k.dims(), [4, 1, 3, 4]);
        let mask = cross.additive_mask(DType::F32)?.unwrap(); // [4, 1, 1, 3]
        let m: Vec<f32> = mask.flatten_all()?.to_vec1()?;
        assert_eq!(m[2], f32::MIN);
        assert_eq!(m[8], 0.0);
        cache.reorder(&[3, 0, 2, 1])?;
        let cross = cache.cross_attention().unwrap();
        assert_eq!(rows(cross.encoder_hidden_states()), [1.0, 0.0, 1.0, 0.0]);
        let (k, _) = cross.kv(0, |_| panic!("kept, not recomputed"))?;
        assert_eq!(
            k.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .step_by(12)
                .copied()
                .collect::<Vec<_>>(),
            [1.0, 0.0, 1.0, 0.0]
        );
        assert_eq!(
            cross.encoder_attention_mask().unwrap()[1],
            [1, 1, 0],
            "the mask moves with its row"
        );
        assert!(cross.fit_rows(3).is_err());
        Ok(())
    }
}
