//! Attention of encoder-decoder models (HF `T5Attention`, `BartAttention`, `WhisperAttention`):
//! the encoder's bidirectional self-attention, the decoder's causal self-attention over the KV
//! cache, and cross-attention from the decoder to the encoder's output, whose keys and values
//! are projected once per generation and kept in the cache ([`CrossAttention`]).
//!
//! `softmax(q k^T * scale + bias + mask) v` with separate `q`, `k`, `v` and output projections;
//! `bias` is T5's relative position bias (`[1 or b, heads, t, s]`), added to the mask as
//! transformers adds it.

use candle_core::{DType, Device, Tensor};

use super::attention::{attend, Scores};
use super::linear::{Linear, RowOutput, Rows};
use super::mask::PackedSequence;
use super::LoadContext;
use crate::cache::{CrossAttention, KvCache};
use crate::error::{Error, Result};
use crate::parallel::shard::rows;

/// Where the projections of one attention block are stored.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionNames<'a> {
    /// The query, key, value and output projections' names under the block's prefix
    /// (`q`, `k`, `v`, `o` for T5; `q_proj`, `k_proj`, `v_proj`, `out_proj` for BART and Whisper).
    pub q: &'a str,
    pub k: &'a str,
    pub v: &'a str,
    pub o: &'a str,
}

impl ProjectionNames<'static> {
    /// T5's `q`, `k`, `v`, `o`.
    #[allow(dead_code)] // until T5 lands
    pub const T5: Self = Self {
        q: "q",
        k: "k",
        v: "v",
        o: "o",
    };
    /// BART's, Marian's and Whisper's `q_proj`, `k_proj`, `v_proj`, `out_proj`.
    pub const BART: Self = Self {
        q: "q_proj",
        k: "k_proj",
        v: "v_proj",
        o: "out_proj",
    };
}

/// Which projections carry a bias.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionBias {
    pub q: bool,
    pub k: bool,
    pub v: bool,
    pub o: bool,
}

impl ProjectionBias {
    /// No bias anywhere (T5).
    #[allow(dead_code)] // until T5 lands
    pub const NONE: Self = Self {
        q: false,
        k: false,
        v: false,
        o: false,
    };
    /// Biases everywhere (BART, Marian).
    pub const ALL: Self = Self {
        q: true,
        k: true,
        v: true,
        o: true,
    };
    /// Whisper: every projection but `k_proj`.
    #[allow(dead_code)] // until Whisper lands
    pub const NO_KEY: Self = Self {
        q: true,
        k: false,
        v: true,
        o: true,
    };
}

/// One attention block of an encoder-decoder model.
#[derive(Debug, Clone)]
pub struct Seq2SeqAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    num_heads: usize,
    head_dim: usize,
    /// The multiplier on `q k^T`: `head_dim^-0.5`, or 1 for T5 (whose initialisation folds it in).
    scale: f64,
    /// Multiply the projected queries by `scale` before `q k^T` rather than the scores after it
    /// (see [`Seq2SeqAttention::scaling_queries`]).
    scale_queries: bool,
    /// The decoder layer, for the cache (self-attention keys and values, cross-attention's).
    layer_idx: usize,
}

impl Seq2SeqAttention {
    /// Loads `{prefix}.{q,k,v,o}` per `names`: `hidden -> num_heads * head_dim -> hidden`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        names: ProjectionNames<'_>,
        bias: ProjectionBias,
        hidden: usize,
        num_heads: usize,
        head_dim: usize,
        scale: f64,
        layer_idx: usize,
    ) -> Result<Self> {
        let inner = num_heads * head_dim;
        if let Some(shard) = ctx.shard {
            // Split across tensor-parallel ranks by heads: q/k/v column-parallel, the output
            // row-parallel with one all-reduce.
            let heads = shard.split(num_heads, "num_heads")?;
            let mine = rows(&heads, head_dim, 0);
            let name = |n: &str| format!("{prefix}.{n}");
            let (q, k, v, o) = (name(names.q), name(names.k), name(names.v), name(names.o));
            let column = |prefix: &str, bias| {
                let part = Rows {
                    prefix,
                    out: inner,
                    rows: mine.clone(),
                };
                Linear::load_rows(ctx, &[part], hidden, bias)
            };
            let output = RowOutput::Reduced(shard.comm().clone());
            return Ok(Self {
                q: column(&q, bias.q)?,
                k: column(&k, bias.k)?,
                v: column(&v, bias.v)?,
                o: Linear::load_columns(ctx, &o, (inner, hidden), mine.clone(), bias.o, output)?,
                num_heads: heads.len(),
                head_dim,
                scale,
                scale_queries: false,
                layer_idx,
            });
        }
        let lin =
            |name: &str, din, dout, b| Linear::load(ctx, &format!("{prefix}.{name}"), din, dout, b);
        Ok(Self {
            q: lin(names.q, hidden, inner, bias.q)?,
            k: lin(names.k, hidden, inner, bias.k)?,
            v: lin(names.v, hidden, inner, bias.v)?,
            o: lin(names.o, inner, hidden, bias.o)?,
            num_heads,
            head_dim,
            scale,
            scale_queries: false,
            layer_idx,
        })
    }

    /// Scales the projected queries, `(q_proj(x) * scale) k^T`, as `WhisperAttention` does "to
    /// follow the original implementation" (the rounding differs from scaling the scores).
    pub fn scaling_queries(mut self) -> Self {
        self.scale_queries = true;
        self
    }

    /// The queries `[b, heads, t, d]`, scaled here when [`Self::scaling_queries`].
    fn queries(&self, x: &Tensor) -> Result<Tensor> {
        if !self.scale_queries {
            return self.heads(&self.q, x);
        }
        let (b, t, _) = x.dims3()?;
        Ok((self.q.forward(x)? * self.scale)?
            .reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `[b, t, hidden] -> [b, heads, t, d]` through `proj`.
    fn heads(&self, proj: &Linear, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        Ok(proj
            .forward(x)?
            .reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `[b, heads, t, d] -> [b, t, hidden]` through the output projection.
    fn output(&self, out: &Tensor) -> Result<Tensor> {
        let (b, _, t, _) = out.dims4()?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, t, self.num_heads * self.head_dim))?;
        self.o.forward(&out)
    }

    fn scores(&self) -> Scores<'static> {
        Scores {
            scale: if self.scale_queries { 1.0 } else { self.scale },
            softcap: None,
            sinks: None,
        }
    }

    /// The encoder's self-attention: every position sees every real one. `mask` is the additive
    /// padding mask (and bias) `[b or 1, 1 or heads, 1 or t, t]`.
    pub fn forward_encoder(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let q = self.queries(x)?;
        let k = self.heads(&self.k, x)?;
        let v = self.heads(&self.v, x)?;
        self.output(&attend(&q, &k, &v, mask, self.scores())?)
    }

    /// The decoder's causal self-attention: appends this step's keys and values to `cache` and
    /// attends over all of them; `mask` `[b or 1, 1 or heads, t, past + t]` (causal mask and bias).
    pub fn forward_self(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let q = self.queries(x)?;
        let k = self.heads(&self.k, x)?;
        let v = self.heads(&self.v, x)?;
        let (k, v) = cache.update(self.layer_idx, &k, &v)?; // [b, heads, past + t, d]
        self.output(&attend(&q, &k, &v, mask, self.scores())?)
    }

    /// Cross-attention from the decoder's `x` `[b, t, hidden]` to the encoder's output, whose keys
    /// and values are projected on the first step and kept in `cross`; `mask` is the encoder's
    /// padding (and bias), `[b, 1 or heads, 1 or t, s]`.
    pub fn forward_cross(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cross: &mut CrossAttention,
    ) -> Result<Tensor> {
        let q = self.queries(x)?;
        let (k, v) = cross.kv(self.layer_idx, |encoder| {
            Ok((self.heads(&self.k, encoder)?, self.heads(&self.v, encoder)?))
        })?;
        self.output(&attend(&q, &k, &v, mask, self.scores())?)
    }
}

/// A packed batch (the continuous batching engine): the new tokens of several sequences side by
/// side in one `[1, T, hidden]` input, each attending only to its own keys and values. The
/// projections run once over all `T` tokens; attention runs per sequence.
impl Seq2SeqAttention {
    /// The decoder's causal self-attention over each sequence's own paged keys and values;
    /// `sequences[i].full` is sequence `i`'s additive mask (causal mask and bias)
    /// `[1, 1 or heads, new, past + new]`. `[1, T, hidden] -> [1, T, hidden]`.
    pub fn forward_self_packed(
        &self,
        x: &Tensor,
        sequences: &[PackedSequence],
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let q = self.queries(x)?; // [1, heads, T, d]
        let k = self.heads(&self.k, x)?;
        let v = self.heads(&self.v, x)?;
        let mut outs = Vec::with_capacity(sequences.len());
        for (i, seq) in sequences.iter().enumerate() {
            let part = |t: &Tensor| t.narrow(2, seq.start, seq.new)?.contiguous();
            let (ks, vs) = cache.update_sequence(self.layer_idx, i, &part(&k)?, &part(&v)?)?; // [1, heads, past + new, d]
            outs.push(attend(
                &part(&q)?,
                &ks,
                &vs,
                seq.full.tensor()?,
                self.scores(),
            )?);
        }
        self.output(&Tensor::cat(&outs, 2)?) // [1, heads, T, d] -> [1, T, hidden]
    }

    /// Cross-attention of each sequence to its own encoder output, whose keys and values the
    /// cache projects on the sequence's first step and keeps
    /// ([`KvCache::cross_attention_sequence`]). Nothing is masked: every encoder position of a
    /// sequence is real (the engine's prompts are not padded). `[1, T, hidden] -> [1, T, hidden]`.
    pub fn forward_cross_packed(
        &self,
        x: &Tensor,
        sequences: &[PackedSequence],
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let q = self.queries(x)?; // [1, heads, T, d]
        let mut project =
            |encoder: &Tensor| Ok((self.heads(&self.k, encoder)?, self.heads(&self.v, encoder)?));
        let mut outs = Vec::with_capacity(sequences.len());
        for (i, seq) in sequences.iter().enumerate() {
            let (k, v) = cache.cross_attention_sequence(self.layer_idx, i, &mut project)?; // [1, heads, s_i, d]
            let q = q.narrow(2, seq.start, seq.new)?.contiguous()?;
            outs.push(attend(&q, &k, &v, None, self.scores())?);
        }
        self.output(&Tensor::cat(&outs, 2)?)
    }
}

/// The additive padding mask `[b, 1, 1, s]` of an encoder batch (0 on real positions, the dtype's
/// minimum on padding, transformers' `_prepare_4d_attention_mask`), or `None` without padding.
pub fn padding_mask(
    mask: Option<&[Vec<u8>]>,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let Some(rows) = mask.filter(|rows| rows.iter().flatten().any(|&m| m == 0)) else {
        return Ok(None);
    };
    let (b, s) = (rows.len(), rows.first().map_or(0, Vec::len));
    let min = dtype_min(dtype);
    let data: Vec<f32> = rows
        .iter()
        .flatten()
        .map(|&m| if m == 0 { min } else { 0.0 })
        .collect();
    Ok(Some(
        Tensor::from_vec(data, (b, 1, 1, s), device)?.to_dtype(dtype)?,
    ))
}

/// transformers' `torch.finfo(dtype).min`, the value masked scores get.
pub fn dtype_min(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65504f32,
        DType::BF16 => -3.389_531_4e38,
        _ => f32::MIN,
    }
}

/// The decoder's cross-attention state, from the cache `generate()` built; an error naming the
/// cause for a cache without one (the decoder run on its own).
pub fn cross_attention(cache: &mut dyn KvCache) -> Result<&mut CrossAttention> {
    cache.cross_attention().ok_or_else(|| {
        Error::input(
            "this encoder-decoder model's decoder needs the encoder's output: run it through \
             `generate()` (or pass an `EncoderDecoderCache` holding the encoder's output)",
        )
    })
}
