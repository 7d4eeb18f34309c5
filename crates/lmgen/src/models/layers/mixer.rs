//! A decoder layer's token mixer: attention over cached keys and values, or a recurrent layer
//! (gated DeltaNet, short convolution) that continues a fixed-size state per sequence.

use candle_core::Tensor;

use super::attention::{Attention, AttentionInput};
use super::gated_delta_net::GatedDeltaNet;
use super::mask::StateRows;
use super::short_conv::ShortConv;
use crate::cache::{KvCache, LayerState};
use crate::error::Result;

/// What mixes information across positions in one layer.
#[derive(Debug, Clone)]
pub enum Mixer {
    /// `self_attn`.
    Attention(Attention),
    /// `linear_attn` (Qwen3.5, Qwen3-Next).
    GatedDeltaNet(GatedDeltaNet),
    /// `conv` (LFM2).
    ShortConv(ShortConv),
}

impl Mixer {
    /// `[b, t, hidden] -> [b, t, hidden]`, updating layer `layer`'s keys and values or state in
    /// `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        attention: &AttentionInput<'_>,
        rows: StateRows<'_>,
        layer: usize,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        if let Mixer::Attention(a) = self {
            return a.forward(x, attention, cache);
        }
        let step = |x: &Tensor, state: Option<&LayerState>| match self {
            Mixer::GatedDeltaNet(l) => l.forward(x, state),
            Mixer::ShortConv(l) => l.forward(x, state),
            Mixer::Attention(_) => unreachable!("handled above"),
        };
        match rows {
            StateRows::Dense(padding) => {
                let x = match padding {
                    Some(m) => x.broadcast_mul(m)?,
                    None => x.clone(),
                };
                let state = cache.state(layer, None)?;
                let (y, state) = step(&x, state.as_ref())?;
                cache.set_state(layer, None, state)?;
                Ok(y)
            }
            StateRows::Packed(sequences) => {
                let mut outs = Vec::with_capacity(sequences.len());
                for (i, seq) in sequences.iter().enumerate() {
                    let part = x.narrow(1, seq.start, seq.new)?; // [1, t_i, hidden]
                    let state = cache.state(layer, Some(i))?;
                    let (y, state) = step(&part, state.as_ref())?;
                    cache.set_state(layer, Some(i), state)?;
                    outs.push(y);
                }
                Ok(Tensor::cat(&outs, 1)?)
            }
        }
    }
}
