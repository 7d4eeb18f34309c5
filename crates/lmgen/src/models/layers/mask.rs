//! Attention masks: causal, padding and sliding window, as transformers' `masking_utils.py`.
//!
//! Key `j` is visible to the query at absolute (cache) position `i` when `j <= i`, the key is not
//! padding, and, for sliding layers, `i - j < sliding_window` (`sliding_window_overlay`:
//! `kv_idx > q_idx - sliding_window`). Positions are cache indices, padding included, as in
//! transformers. A query that sees nothing (a padding token of a left-padded prompt) gets what
//! transformers gives it, although no real token ever reads it: its masked scores are the
//! dtype's minimum rather than `-inf`, so eager attention spreads it uniformly over every key
//! (transformers' eager float mask), and [`ForwardMasks::padding_queries`] lets sdpa-semantics
//! attention zero its output (torch's `scaled_dot_product_attention` returns 0 for a fully
//! masked row). The difference shows where padding values are read back: a quantized cache whose
//! groups span tokens, and returned hidden states and attention weights. In f16, whose minimum is
//! too small to add a score to safely, such a query sees every key instead (finite either way).

use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::cache::{KvCache, SequenceSpan};
use crate::error::{Error, Result};
use crate::models::config::{LayerType, ModelConfig};
use crate::models::{ForwardInput, LogitsToKeep};

/// One sequence of a packed batch: where its new tokens sit in the `[1, T]` input and its masks
/// over its own `past + new` keys.
#[derive(Debug, Clone)]
pub struct PackedSequence {
    /// Index of its first new token in the input.
    pub start: usize,
    /// Its new tokens.
    pub new: usize,
    /// `[1, 1, new, past + new]` for full-attention layers (by position, built only if asked
    /// for), [`DenseMask::None`] when nothing is masked.
    pub full: DenseMask,
    /// The same for sliding-window layers.
    pub sliding: DenseMask,
}

/// The mask of a dense batch without padding: each query masked by its position only (causal,
/// and a sliding window). Attention kernels that mask by position read its lengths and
/// [`CausalMask::window`] and never build the tensor (`[b, 1, t, past + t]`: 4 GiB in f32
/// for a 32k-token prompt); the others get it from [`CausalMask::tensor`], built on first use
/// and shared by every layer after.
#[derive(Debug, Clone)]
pub struct CausalMask {
    batch: usize,
    q_len: usize,
    kv_len: usize,
    window: Option<usize>,
    dtype: DType,
    device: Device,
    tensor: OnceLock<Option<Tensor>>,
}

impl CausalMask {
    /// The new tokens (queries) of each row.
    pub fn q_len(&self) -> usize {
        self.q_len
    }

    /// Cached plus new tokens (keys) of each row.
    pub fn kv_len(&self) -> usize {
        self.kv_len
    }

    /// The sliding window: a query sees the keys fewer than this many positions behind it.
    pub fn window(&self) -> Option<usize> {
        self.window
    }

    /// The dtype of the additive mask ([`masked_value`] on a hidden key).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The additive mask `[b, 1, q_len, kv_len]` ([`build`] without padding), built the first
    /// time it is asked for; `None` when it masks nothing.
    pub fn tensor(&self) -> Result<Option<&Tensor>> {
        if self.tensor.get().is_none() {
            let spec = MaskSpec {
                padding: None,
                batch: self.batch,
                q_len: self.q_len,
                kv_len: self.kv_len,
            };
            let built = build(&spec, self.window, self.dtype, &self.device)?;
            // Another thread may have set it meanwhile: the same tensor either way.
            let _ = self.tensor.set(built);
        }
        Ok(self.tensor.get().and_then(Option::as_ref))
    }

    /// The additive mask of query rows `rows` over keys `keys` only, `[1, 1, rows, keys]` (every
    /// batch row alike): [`CausalMask::tensor`]'s values there, without building the whole
    /// tensor; `None` where it masks nothing in that region.
    pub fn block(&self, rows: Range<usize>, keys: Range<usize>) -> Result<Option<Tensor>> {
        let spec = MaskSpec {
            padding: None,
            batch: 1,
            q_len: self.q_len,
            kv_len: self.kv_len,
        };
        build_region(&spec, self.window, (rows, keys), self.dtype, &self.device)
    }
}

impl LayerMask<'_> {
    /// The additive mask of a dense batch (built now for a [`LayerMask::Causal`] one); an error
    /// for a packed batch.
    pub fn dense(&self) -> Result<Option<&Tensor>> {
        match self {
            Self::Dense(mask) => Ok(*mask),
            Self::Causal(mask) => mask.tensor(),
            Self::Packed { .. } => Err(Error::unsupported(
                "a packed batch has a mask per sequence, not one for the batch",
            )),
        }
    }
}

/// A dense batch's mask for one kind of layer.
#[derive(Debug, Clone)]
pub enum DenseMask {
    /// Nothing is masked.
    None,
    /// Padding among the keys: the additive mask `[b, 1, t, past + t]`.
    Tensor(Tensor),
    /// Masked by position only.
    Causal(CausalMask),
}

impl DenseMask {
    /// The mask of `spec` (`window` for sliding layers): by position where no key is padding.
    pub(crate) fn new(
        spec: &MaskSpec<'_>,
        window: Option<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let padded = spec
            .padding
            .is_some_and(|rows| rows.iter().any(|r| r.contains(&0)));
        if padded {
            return Ok(match build(spec, window, dtype, device)? {
                Some(mask) => Self::Tensor(mask),
                None => Self::None,
            });
        }
        // Without padding some key is hidden from some query exactly when a query has a later
        // token (two or more queries), or the first key lies a window or more behind the last
        // query (`mask::tests` checks this against `build`).
        let masked = spec.q_len >= 2 || window.is_some_and(|w| spec.kv_len > w);
        Ok(if masked {
            Self::Causal(CausalMask {
                batch: spec.batch,
                q_len: spec.q_len,
                kv_len: spec.kv_len,
                window,
                dtype,
                device: device.clone(),
                tensor: OnceLock::new(),
            })
        } else {
            Self::None
        })
    }

    /// The additive mask (built now for a mask by position), `None` when nothing is masked.
    pub fn tensor(&self) -> Result<Option<&Tensor>> {
        match self {
            Self::None => Ok(None),
            Self::Tensor(mask) => Ok(Some(mask)),
            Self::Causal(mask) => mask.tensor(),
        }
    }

    /// Whether nothing is masked.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// The sliding window of a mask by position.
    pub fn window(&self) -> Option<usize> {
        match self {
            Self::Causal(mask) => mask.window,
            _ => None,
        }
    }

    fn layer(&self) -> LayerMask<'_> {
        match self {
            Self::None => LayerMask::Dense(None),
            Self::Tensor(mask) => LayerMask::Dense(Some(mask)),
            Self::Causal(mask) => LayerMask::Causal(mask),
        }
    }
}

/// The masks one forward needs, built once and shared by every layer.
// One value a forward, never stored in bulk: boxing the dense variant (larger in the CUDA build)
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ForwardMasks {
    /// A dense `[b, t]` batch: `[b, 1, t, past + t]` for full and for sliding layers.
    Dense {
        full: DenseMask,
        sliding: DenseMask,
        /// `[b, t, 1]`: 0 on the new tokens that are padding, 1 elsewhere, for recurrent layers
        /// (which multiply their input by it so that padding never enters their state); `None`
        /// when no new token is padding, at a single-token step, or without recurrent layers
        /// (HF `create_recurrent_attention_mask`).
        padding: Option<Tensor>,
        /// `[b, 1, t, 1]`: 0 for the new tokens that see no key (padding queries), 1 elsewhere;
        /// `None` when every query sees a key.
        padding_queries: Option<Tensor>,
    },
    /// A packed batch (the cache reports [`KvCache::spans`]): masks per sequence.
    Packed(Vec<PackedSequence>),
}

/// What a recurrent layer (linear attention, convolution) reads of the batch layout.
#[derive(Debug, Clone, Copy)]
pub enum StateRows<'a> {
    /// A dense batch whose new tokens' padding is zeroed with this `[b, t, 1]` mask (if any).
    Dense(Option<&'a Tensor>),
    /// A packed batch: each sequence continues its own state.
    Packed(&'a [PackedSequence]),
}

/// `[b, t, 1]` of the last `t` entries of each padding row, or `None` when all are 1.
fn new_token_padding(
    rows: &[Vec<u8>],
    t: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    fn tail(r: &[u8], t: usize) -> &[u8] {
        &r[r.len().saturating_sub(t)..]
    }
    if rows.iter().all(|r| tail(r, t).iter().all(|&m| m != 0)) {
        return Ok(None);
    }
    let mut flat = Vec::with_capacity(rows.len() * t);
    for r in rows {
        let tail = tail(r, t);
        if tail.len() != t {
            return Err(Error::input(format!(
                "an attention mask row has {} entries for {t} new tokens",
                r.len()
            )));
        }
        flat.extend(tail.iter().map(|&m| if m != 0 { 1f32 } else { 0. }));
    }
    Ok(Some(
        Tensor::from_vec(flat, (rows.len(), t, 1), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?,
    ))
}

/// `[b, 1, t, 1]`: 0 where one of the `t` new tokens is padding (a query that sees no key: left
/// padding precedes every real token), `None` when none is.
fn blind_queries(
    rows: &[Vec<u8>],
    t: usize,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let tails = new_token_padding(rows, t, dtype, device)?;
    Ok(tails.map(|m| m.unsqueeze(1)).transpose()?) // [b, t, 1] -> [b, 1, t, 1]
}

/// What one layer's attention masks with.
#[derive(Debug, Clone, Copy)]
pub enum LayerMask<'a> {
    /// A dense batch's additive mask `[b, 1, t, past + t]`, `None` when nothing is masked.
    Dense(Option<&'a Tensor>),
    /// A dense batch masked by position only (causal, and a sliding window): no padding.
    Causal(&'a CausalMask),
    Packed {
        sequences: &'a [PackedSequence],
        /// Use each sequence's sliding-window mask.
        sliding: bool,
    },
}

impl ForwardMasks {
    /// The masks for `input` continuing `cache`.
    pub fn build(
        input: &ForwardInput<'_>,
        cfg: &ModelConfig,
        cache: &dyn KvCache,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (b, t) = input.input_ids.dims2()?;
        let has_sliding = cfg.layer_types.contains(&LayerType::SlidingAttention);
        // (full-attention layers' mask, sliding layers')
        let masks = |padding, batch, q_len, kv_len| -> Result<(DenseMask, DenseMask)> {
            let spec = MaskSpec {
                padding,
                batch,
                q_len,
                kv_len,
            };
            let full = DenseMask::new(&spec, None, dtype, device)?;
            let sliding = if has_sliding {
                DenseMask::new(&spec, cfg.sliding_window, dtype, device)?
            } else {
                DenseMask::None
            };
            Ok((full, sliding))
        };
        let Some(spans) = cache.spans() else {
            let (full, sliding) = masks(input.attention_mask, b, t, cache.seq_len() + t)?;
            let recurrent = cfg.layer_types.iter().any(|l| !l.is_attention());
            let padding = match input.attention_mask {
                Some(rows) if recurrent && t > 1 => new_token_padding(rows, t, dtype, device)?,
                _ => None,
            };
            let padding_queries = match input.attention_mask {
                Some(rows) => blind_queries(rows, t, dtype, device)?,
                None => None,
            };
            return Ok(Self::Dense {
                full,
                sliding,
                padding,
                padding_queries,
            });
        };
        let total: usize = spans.iter().map(|s| s.new).sum();
        if b != 1 || total != t || input.attention_mask.is_some() {
            return Err(Error::input(format!(
                "a packed batch takes `[1, {total}]` input ids without an attention mask, got [{b}, {t}]"
            )));
        }
        let mut start = 0;
        let mut sequences = Vec::with_capacity(spans.len());
        for span in spans {
            let (full, sliding) = masks(None, 1, span.new, span.past + span.new)?;
            sequences.push(PackedSequence {
                start,
                new: span.new,
                full,
                sliding,
            });
            start += span.new;
        }
        Ok(Self::Packed(sequences))
    }

    /// The mask of a layer of `layer_type`.
    pub fn for_layer(&self, layer_type: LayerType) -> LayerMask<'_> {
        let sliding = layer_type == LayerType::SlidingAttention;
        match self {
            Self::Dense {
                full, sliding: s, ..
            } => {
                if sliding {
                    s.layer()
                } else {
                    full.layer()
                }
            }
            Self::Packed(sequences) => LayerMask::Packed { sequences, sliding },
        }
    }

    /// `[b, 1, t, 1]`, 0 on the queries that see no key (see the module docs), `None` when
    /// there are none.
    pub fn padding_queries(&self) -> Option<&Tensor> {
        match self {
            Self::Dense {
                padding_queries, ..
            } => padding_queries.as_ref(),
            Self::Packed(_) => None,
        }
    }

    /// What recurrent layers read.
    pub fn for_state(&self) -> StateRows<'_> {
        match self {
            Self::Dense { padding, .. } => StateRows::Dense(padding.as_ref()),
            Self::Packed(sequences) => StateRows::Packed(sequences),
        }
    }

    /// The final norm over the last layer's output `x` (`[b, t, h]`), for the kept positions only
    /// unless hidden states are collected in `hidden`: then over every position, which becomes the
    /// last hidden state. Returns `[b, t_kept, h]`, what the LM head reads.
    pub fn final_norm(
        &self,
        x: Tensor,
        norm: impl Fn(&Tensor) -> Result<Tensor>,
        hidden: &mut Option<Vec<Tensor>>,
        which: LogitsToKeep,
    ) -> Result<Tensor> {
        match hidden {
            Some(states) => {
                let normed = norm(&x)?;
                states.push(normed.clone());
                self.keep(normed, which)
            }
            None => norm(&self.keep(x, which)?),
        }
    }

    /// The hidden states to compute logits for: `[b, t, h] -> [b, t_kept, h]`; for a packed
    /// batch, `Last` keeps each sequence's last token, `[1, sequences, h]`.
    pub fn keep(&self, x: Tensor, which: LogitsToKeep) -> Result<Tensor> {
        Ok(match (which, self) {
            (LogitsToKeep::All, _) => x,
            (LogitsToKeep::Last, Self::Dense { .. }) => {
                let t = x.dim(1)?;
                x.narrow(1, t - 1, 1)?
            }
            (LogitsToKeep::LastN(n), Self::Dense { .. }) => {
                let t = x.dim(1)?;
                let n = n.clamp(1, t);
                x.narrow(1, t - n, n)?
            }
            (LogitsToKeep::LastN(_), Self::Packed(_)) => {
                return Err(Error::unsupported(
                    "a packed batch keeps all logits or each sequence's last",
                ))
            }
            // Every sequence one token: each is its own last.
            (LogitsToKeep::Last, Self::Packed(sequences))
                if sequences.iter().all(|s| s.new == 1) =>
            {
                x
            }
            (LogitsToKeep::Last, Self::Packed(sequences)) => {
                let last: Vec<u32> = sequences
                    .iter()
                    .map(|s| (s.start + s.new - 1) as u32)
                    .collect();
                let idx = Tensor::new(last, x.device())?;
                x.index_select(&idx, 1)?
            }
        })
    }
}

/// A packed batch's sequences (`spans`, in input order), each with `mask_of(span)` as its
/// full-attention mask `[1, 1 or heads, new, past + new]`, for models that build their masks
/// themselves (encoder-decoder decoders); checks that `input` holds the `[1, sum(new)]` ids of
/// those sequences without an attention mask.
pub fn packed_sequences(
    input: &ForwardInput<'_>,
    spans: &[SequenceSpan],
    mut mask_of: impl FnMut(SequenceSpan) -> Result<Option<Tensor>>,
) -> Result<Vec<PackedSequence>> {
    let (b, t) = input.input_ids.dims2()?;
    let total: usize = spans.iter().map(|s| s.new).sum();
    if b != 1 || total != t || input.attention_mask.is_some() {
        return Err(Error::input(format!(
            "a packed batch takes `[1, {total}]` input ids without an attention mask, got [{b}, {t}]"
        )));
    }
    let mut start = 0;
    let mut sequences = Vec::with_capacity(spans.len());
    for &span in spans {
        sequences.push(PackedSequence {
            start,
            new: span.new,
            full: match mask_of(span)? {
                Some(mask) => DenseMask::Tensor(mask),
                None => DenseMask::None,
            },
            sliding: DenseMask::None,
        });
        start += span.new;
    }
    Ok(sequences)
}

/// Each sequence's causal mask over its own `past + new` keys, `[1, 1, new, past + new]`
/// (`None` for a single new token, which sees every key).
pub fn causal_of(span: SequenceSpan, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
    let spec = MaskSpec {
        padding: None,
        batch: 1,
        q_len: span.new,
        kv_len: span.past + span.new,
    };
    build(&spec, None, dtype, device)
}

/// What a mask is built from.
#[derive(Debug, Clone, Copy)]
pub struct MaskSpec<'a> {
    /// Per row, `past + t` flags (1 = real token). `None` = no padding.
    pub padding: Option<&'a [Vec<u8>]>,
    pub batch: usize,
    /// New tokens in this forward.
    pub q_len: usize,
    /// Cached plus new tokens.
    pub kv_len: usize,
}

/// Additive mask `[b, 1, q_len, kv_len]` (0, or the dtype's minimum where masked), or `None`
/// when nothing is masked.
pub fn build(
    spec: &MaskSpec<'_>,
    sliding_window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let region = (0..spec.q_len, 0..spec.kv_len);
    build_region(spec, sliding_window, region, dtype, device)
}

/// The additive mask's value on a hidden key in `dtype` (as f32): transformers'
/// `torch.finfo(dtype).min`, so a query that sees nothing gets equal scores.
pub fn masked_value(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65504f32,
        DType::BF16 => -3.389_531_4e38,
        _ => f32::MIN,
    }
}

/// [`build`]'s rows `rows` and columns `keys` only, `[batch, 1, rows, keys]`; `None` where
/// nothing is masked there.
fn build_region(
    spec: &MaskSpec<'_>,
    sliding_window: Option<usize>,
    (rows, keys): (Range<usize>, Range<usize>),
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let MaskSpec {
        padding,
        batch,
        q_len,
        kv_len,
    } = *spec;
    let past = kv_len - q_len;
    let visible = |row: usize, i: usize, j: usize| -> bool {
        let q = past + i;
        j <= q
            && padding.is_none_or(|p| p[row].get(j).copied().unwrap_or(1) != 0)
            && sliding_window.is_none_or(|w| q - j < w)
    };
    let masked = masked_value(dtype);
    let any_masked = (0..batch).any(|r| {
        rows.clone()
            .any(|i| keys.clone().any(|j| !visible(r, i, j)))
    });
    if !any_masked {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(batch * rows.len() * keys.len());
    for r in 0..batch {
        for i in rows.clone() {
            // f16's minimum is only -65504: a score below about -16 added to it overflows to
            // -inf, and a padding query whose every score did would give NaN. There it sees every
            // key unmasked instead (finite; sdpa semantics zero its output all the same).
            let blind = dtype == DType::F16 && (0..kv_len).all(|j| !visible(r, i, j));
            data.extend(keys.clone().map(|j| {
                if blind || visible(r, i, j) {
                    0f32
                } else {
                    masked
                }
            }));
        }
    }
    let shape = (batch, 1, rows.len(), keys.len());
    Ok(Some(
        Tensor::from_vec(data, shape, device)?.to_dtype(dtype)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(spec: &MaskSpec<'_>, w: Option<usize>) -> Vec<Vec<Vec<bool>>> {
        let m = build(spec, w, DType::F32, &Device::Cpu).unwrap();
        match m {
            None => vec![vec![vec![true; spec.kv_len]; spec.q_len]; spec.batch],
            Some(m) => m
                .squeeze(1)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap()
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|q| q.into_iter().map(|x| x == 0.0).collect())
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn causal_with_left_padding() {
        let pad = vec![vec![0, 1, 1]];
        let m = dense(
            &MaskSpec {
                padding: Some(&pad),
                batch: 1,
                q_len: 3,
                kv_len: 3,
            },
            None,
        );
        assert_eq!(
            m[0],
            vec![
                vec![false, false, false],
                vec![false, true, false],
                vec![false, true, true]
            ]
        );
    }

    #[test]
    fn sliding_window_limits_keys() {
        let m = dense(
            &MaskSpec {
                padding: None,
                batch: 1,
                q_len: 1,
                kv_len: 5,
            },
            Some(2),
        );
        assert_eq!(m[0][0], vec![false, false, false, true, true]);
    }

    #[test]
    fn decode_without_padding_needs_no_mask() {
        let spec = MaskSpec {
            padding: None,
            batch: 2,
            q_len: 1,
            kv_len: 7,
        };
        assert!(build(&spec, None, DType::F32, &Device::Cpu)
            .unwrap()
            .is_none());
    }

    /// Without padding, [`DenseMask::new`] keeps the mask by position exactly where [`build`]
    /// masks something, and its tensor, when built, is [`build`]'s; with padding (all ones is
    /// none) it holds [`build`]'s tensor.
    #[test]
    fn mask_by_position_matches_the_built_mask() {
        let ones = vec![vec![1u8; 6]; 2];
        let padded = vec![vec![1u8; 6], vec![0, 1, 1, 1, 1, 1]];
        for q_len in 1..=4 {
            for kv_len in q_len..=6 {
                for window in [None, Some(1), Some(2), Some(3), Some(5), Some(9)] {
                    for padding in [None, Some(&ones), Some(&padded)] {
                        let rows: Option<Vec<Vec<u8>>> =
                            padding.map(|p| p.iter().map(|r| r[6 - kv_len..].to_vec()).collect());
                        let spec = MaskSpec {
                            padding: rows.as_deref(),
                            batch: 2,
                            q_len,
                            kv_len,
                        };
                        let want = build(&spec, window, DType::F32, &Device::Cpu).unwrap();
                        let got = DenseMask::new(&spec, window, DType::F32, &Device::Cpu).unwrap();
                        let what = format!("q {q_len} kv {kv_len} window {window:?} {padding:?}");
                        let padded_here = rows
                            .as_ref()
                            .is_some_and(|r| r.iter().flatten().any(|&m| m == 0));
                        let got = match (&got, padded_here) {
                            (DenseMask::Causal(_), true) => panic!("{what}: padding by position"),
                            (DenseMask::Tensor(_), false) => panic!("{what}: built eagerly"),
                            _ => got.layer().dense().unwrap().cloned(),
                        };
                        match (got, want) {
                            (None, None) => {}
                            (Some(g), Some(w)) => {
                                let diff = (g - w).unwrap().abs().unwrap();
                                let max = diff.flatten_all().unwrap().max(0).unwrap();
                                assert_eq!(max.to_scalar::<f32>().unwrap(), 0.0, "{what}");
                            }
                            (g, w) => panic!("{what}: {:?} vs {:?}", g.is_some(), w.is_some()),
                        }
                    }
                }
            }
        }
    }
}
