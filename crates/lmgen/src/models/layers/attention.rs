//! Multi-head attention with grouped-query heads, RoPE, optional score soft-capping, and the KV cache.
//!
//! HF `LlamaAttention` / `eager_attention_forward`: `softmax(q k^T * scale (+ softcap) + mask) v`.
//! Grouped-query attention is computed without copying keys: the `n_rep` query heads that share a
//! key/value head are folded into the query length, `[b, h, t, d] -> [b, kvh, n_rep * t, d]`.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use super::linear::Linear;
use super::mask::{CausalMask, DenseMask, LayerMask};
use super::norm::RmsNorm;
use super::rotary;
use super::LoadContext;
use crate::cache::KvCache;
use crate::cuda::FusedQkv;
use crate::error::{Error, Result};
use crate::models::config::{ModelConfig, ProjectionLayout, QkNorm};
use crate::models::AttnImplementation;
use crate::parallel::Communicator;

mod causal_cpu;
pub use causal_cpu::BLOCK_ROWS as CAUSAL_BLOCK_ROWS;
mod decode_avx2;
mod decode_avx512;
pub(crate) mod decode_cpu;
mod heads;
mod softmax_cpu;

/// One attention block.
#[derive(Debug, Clone)]
pub struct Attention {
    /// q, k and v projections as one `[(nh + 2 nkv) * d, hidden]` product (fused at load, or
    /// stored fused).
    qkv: Linear,
    o_proj: Linear,
    /// RMSNorm on queries and keys before RoPE (`q_norm`, `k_norm`).
    qk_norm: Option<(QkNorm, RmsNorm, RmsNorm)>,
    shape: AttentionShape,
    scale: f64,
    softcap: Option<f64>,
    /// gpt-oss: `[num_heads]` sink logits, f32 (see [`ModelConfig::attention_sinks`]).
    sinks: Option<Tensor>,
    /// Qwen3.5: `q_proj` yields `[query, gate]` per head and the output is multiplied by
    /// `sigmoid(gate)` ([`ModelConfig::attn_output_gate`]).
    output_gate: bool,
    /// transformers' `eager` attention: the only one that returns its weights
    /// (`output_attentions`); `sdpa` returns none.
    eager: bool,
    layer_idx: usize,
    /// Split across tensor-parallel ranks by heads: the group whose ranks' attention weights
    /// make up every head's (`None`: every head here).
    heads_comm: Option<Arc<dyn Communicator>>,
}

/// [`Attention::dense_decode_parts`].
#[derive(Debug, Clone, Copy)]
pub struct DenseAttention<'a> {
    pub qkv: (&'a Tensor, Option<&'a Tensor>),
    pub o_proj: (&'a Tensor, Option<&'a Tensor>),
    /// Query heads, key/value heads, head size.
    pub heads: (usize, usize, usize),
    pub scale: f64,
    /// The cache layer the block reads and writes.
    pub layer_idx: usize,
}

/// Head counts and size.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Per-forward inputs shared by every layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionInput<'a> {
    /// `cos`/`sin` `[b, t, r/2]`, or `None` for a layer without RoPE.
    pub rope: Option<(&'a Tensor, &'a Tensor)>,
    /// Additive mask `[b, 1, t, past + t]` (dense batch), or per sequence (packed batch).
    pub mask: LayerMask<'a>,
    /// `[b, 1, t, 1]` multipliers on the rotated queries (Ministral 3's position-dependent
    /// scaling), or `None`.
    pub query_scale: Option<&'a Tensor>,
    /// `[b, 1, t, 1]`: 0 on queries that see no key (left padding), whose output sdpa-semantics
    /// attention zeroes as torch's `scaled_dot_product_attention` does; `None` when there are
    /// none ([`super::mask::ForwardMasks::padding_queries`]).
    pub padding_queries: Option<&'a Tensor>,
    /// `[b]` u32 in device memory: each row's cache slot for a one-token step whose slots must
    /// be read on the device (a captured decode graph, [`KvCache::decode_at`]); `None`
    /// otherwise.
    pub slots: Option<&'a Tensor>,
}

impl Attention {
    /// The decoder layout: `{prefix}.{q,k,v,o}_proj` or `{prefix}.qkv_proj`, with `q_norm` and
    /// `k_norm` when the config has them.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        cfg: &ModelConfig,
        layer_idx: usize,
    ) -> Result<Self> {
        if let Some(shard) = ctx.shard {
            return heads::load_split(ctx, prefix, cfg, layer_idx, shard);
        }
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        // With the output gate, each head's query is followed by its gate: `[nh, 2 d]`.
        let q_width = if cfg.attn_output_gate {
            2 * nh * d
        } else {
            nh * d
        };
        let qkv = match cfg.projections {
            ProjectionLayout::Separate => {
                let (q, k, v) = (
                    format!("{prefix}.q_proj"),
                    format!("{prefix}.k_proj"),
                    format!("{prefix}.v_proj"),
                );
                let parts = [
                    (q.as_str(), q_width),
                    (k.as_str(), nkv * d),
                    (v.as_str(), nkv * d),
                ];
                Linear::load_fused(ctx, &parts, h, cfg.qkv_bias)?
            }
            ProjectionLayout::Fused => Linear::load(
                ctx,
                &format!("{prefix}.qkv_proj"),
                h,
                q_width + 2 * nkv * d,
                cfg.qkv_bias,
            )?,
        };
        let qk_norm = qk_norms(ctx, prefix, cfg)?;
        let shape = AttentionShape {
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
        };
        let mut attention = Self::new(
            qkv,
            Linear::load(ctx, &format!("{prefix}.o_proj"), nh * d, h, cfg.o_bias)?,
            shape,
            cfg.attention_scaling,
            layer_idx,
        );
        attention.qk_norm = qk_norm;
        if cfg.attention_sinks {
            attention.sinks = Some(ctx.tensor_as(&format!("{prefix}.sinks"), &[nh], DType::F32)?);
        }
        Ok(attention.configured(ctx, cfg))
    }

    /// The output gate, softcap and eager flag that `cfg` and the load options set.
    fn configured(mut self, ctx: &LoadContext<'_>, cfg: &ModelConfig) -> Self {
        self.output_gate = cfg.attn_output_gate;
        // transformers' default attention (sdpa) ignores `attn_logit_softcapping`; only eager applies it.
        self.softcap = match ctx.attn_implementation {
            AttnImplementation::Eager => cfg.attn_logit_softcapping,
            AttnImplementation::Sdpa => None,
        };
        self.eager = ctx.attn_implementation == AttnImplementation::Eager;
        self
    }

    /// Attention over already-loaded projections: `qkv` `[(nh + 2 nkv) * d, hidden]`, `o_proj`,
    /// scores multiplied by `scale`.
    pub fn new(
        qkv: Linear,
        o_proj: Linear,
        shape: AttentionShape,
        scale: f64,
        layer_idx: usize,
    ) -> Self {
        Self {
            qkv,
            o_proj,
            qk_norm: None,
            shape,
            scale,
            softcap: None,
            sinks: None,
            output_gate: false,
            eager: false,
            layer_idx,
            heads_comm: None,
        }
    }

    /// An attention block that runs some of the heads of a block split across tensor-parallel
    /// ranks: its attention weights ([`Attention::forward_with_weights`]) are gathered from
    /// every rank of `comm`, so that each returns every head's.
    pub fn with_split_heads(mut self, comm: Arc<dyn Communicator>) -> Self {
        self.heads_comm = Some(comm);
        self
    }

    /// Whether [`Attention::forward_with_weights`] returns the weights (transformers' `eager`
    /// attention, `attn_implementation` at load).
    pub fn with_eager(mut self, eager: bool) -> Self {
        self.eager = eager;
        self
    }

    /// `[b, t, hidden] -> [b, t, hidden]`; appends this step's keys/values to `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        input: &AttentionInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        Ok(self.forward_with_weights(x, input, cache, false)?.0)
    }

    /// [`Attention::forward`], plus with `keep_weights` the attention weights (HF
    /// `output_attentions`), `[b, nh, t, past + t]` f32, after the softmax; `None` unless the
    /// model was loaded with eager attention, as transformers' `sdpa` returns none. A packed
    /// batch returns none either.
    pub fn forward_with_weights(
        &self,
        x: &Tensor,
        input: &AttentionInput<'_>,
        cache: &mut dyn KvCache,
        keep_weights: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let keep_weights = keep_weights && self.eager;
        let (b, t, _) = x.dims3()?;
        // [b, t, (nh (x2 with the gate) + 2 nkv) * d], the bias left out where the launch that
        // splits the heads adds it
        let (product, bias) = self.qkv.forward_deferred_bias(x)?;
        let fused = match input.slots {
            None => self.fused_heads(&product, bias, input)?,
            Some(_) => None,
        };
        let qkv = match bias {
            Some(bias) if fused.is_none() => product.broadcast_add(bias)?,
            _ => product,
        };
        if let Some(slots) = input.slots {
            // A captured decode step: the token's norms, rotation and cache write in one launch
            // where the cache and the GPU take it.
            if let Some(token) = self.decode_token(&qkv, input, keep_weights) {
                if let Some(out) =
                    cache.decode_token_at(self.layer_idx, &token, slots, self.scale)?
                {
                    return self.finish(out, None, b, t, None);
                }
            }
        }
        let (mut q, k, v, gate) = match fused {
            Some((q, k, v)) => (q, k, v, None),
            None => self.split_heads(&qkv, input, b, t)?,
        };
        if let Some(scale) = input.query_scale {
            q = q.broadcast_mul(scale)?; // [b, nh, t, d] * [b, 1, t, 1]
        }
        let mut weights = None;
        if let Some(slots) = input.slots {
            // A step captured as a CUDA graph: the cache writes and attends at slots read on
            // the device, never at a length baked into the launches.
            let plain = t == 1
                && matches!(input.mask, LayerMask::Dense(None))
                && input.padding_queries.is_none();
            let out = match plain && !keep_weights && self.takes_device_slots() {
                true => cache.decode_at(self.layer_idx, &q, &k, &v, slots, self.scale)?,
                false => None,
            };
            let out = out.ok_or_else(|| {
                Error::unsupported(
                    "this step cannot read its cache slots on the device (a mask, attention \
                     weights, softcapping, sinks, split heads, or a cache without room reserved)",
                )
            })?;
            return self.finish(out, gate, b, t, weights);
        }
        let out = match input.mask {
            LayerMask::Dense(_) | LayerMask::Causal(_) => {
                let (k, v) = cache.update(self.layer_idx, &k, &v)?; // [b, nkv, s, d]
                let out = if keep_weights {
                    // The weights whole: not split into blocks (see `attend`).
                    let mask = input.mask.dense()?;
                    let (out, probs) = attend_with_weights(&q, &k, &v, mask, self.scores())?;
                    let probs = probs.to_dtype(DType::F32)?; // [b, nh, t, s]
                    weights = Some(match &self.heads_comm {
                        Some(comm) => comm.all_gather(&probs, 1)?, // every rank's heads
                        None => probs,
                    });
                    out
                } else if let LayerMask::Causal(mask) = input.mask {
                    attend_causal(&q, &k, &v, mask, self.scores())?
                } else {
                    self.attend_dense(&q, &k, &v, input.mask.dense()?)?
                };
                match input.padding_queries {
                    // [b, nh, t, d] * [b, 1, t, 1]
                    Some(rows) if !self.eager => out.broadcast_mul(rows)?,
                    _ => out,
                }
            }
            LayerMask::Packed { sequences, sliding } => {
                // Decode tokens (one new token, nothing masked) all at once where the cache reads
                // its store in place (the paged store, on the CPU and on CUDA); the rest one at a
                // time.
                let unmasked = |seq: &super::mask::PackedSequence| {
                    if sliding {
                        seq.sliding.is_none()
                    } else {
                        seq.full.is_none()
                    }
                };
                // (sequence, its token's position in the input)
                let decode: Vec<(usize, usize)> = if self.softcap.is_none() && self.sinks.is_none()
                {
                    sequences
                        .iter()
                        .enumerate()
                        .filter(|(_, seq)| seq.new == 1 && unmasked(seq))
                        .map(|(i, seq)| (i, seq.start))
                        .collect()
                } else {
                    Vec::new()
                };
                if decode.len() < sequences.len() {
                    // Prompt chunks among them: every sequence at once where the cache attends
                    // over its store in place (the paged store on a GPU), each causal over its own
                    // keys; the sliding layers' window is the one their masks were built with.
                    let window = sequences
                        .iter()
                        .find_map(|seq| seq.sliding.window())
                        .filter(|_| sliding);
                    let all = cache.packed_attention(
                        self.layer_idx,
                        [&q, &k, &v],
                        window,
                        self.scores(),
                    )?;
                    if let Some(out) = all {
                        return self.finish(out, gate, b, t, weights); // [1, nh, t, d]
                    }
                }
                let decoded = if decode.is_empty() {
                    None
                } else {
                    // [1, nh, decode.len(), d]
                    cache.decode_attention(self.layer_idx, &decode, &q, &k, &v, self.scale)?
                };
                if let Some(out) = &decoded {
                    if decode.len() == sequences.len() {
                        return self.finish(out.clone(), gate, b, t, weights);
                    }
                }
                let mut outs = Vec::with_capacity(sequences.len());
                let mut next_decoded = 0;
                for (i, seq) in sequences.iter().enumerate() {
                    if let Some(out) = decoded
                        .as_ref()
                        .filter(|_| decode.get(next_decoded).map(|&(j, _)| j) == Some(i))
                    {
                        outs.push(out.narrow(2, next_decoded, 1)?); // [1, nh, 1, d]
                        next_decoded += 1;
                        continue;
                    }
                    let part = |x: &Tensor| x.narrow(2, seq.start, seq.new)?.contiguous();
                    let (ks, vs) =
                        cache.update_sequence(self.layer_idx, i, &part(&k)?, &part(&v)?)?; // [1, nkv, s_i, d]
                    let mask = if sliding { &seq.sliding } else { &seq.full };
                    outs.push(attend_masked(&part(&q)?, &ks, &vs, mask, self.scores())?);
                    // [1, nh, t_i, d]
                }
                Tensor::cat(&outs, 2)? // [1, nh, t, d]
            }
        };
        self.finish(out, gate, b, t, weights)
    }

    /// The attention output `[b, nh, t, d]` through the output gate and `o_proj`.
    fn finish(
        &self,
        out: Tensor,
        gate: Option<Tensor>,
        b: usize,
        t: usize,
        weights: Option<Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let AttentionShape {
            num_heads: nh,
            head_dim: d,
            ..
        } = self.shape;
        // [b, nh, t, d] -> [b, t, nh * d]
        let mut out = out.transpose(1, 2)?.reshape((b, t, nh * d))?;
        if let Some(gate) = gate {
            out = (out * candle_nn::ops::sigmoid(&gate)?)?;
        }
        Ok((self.o_proj.forward(&out)?, weights))
    }

    /// Queries `[b, nh, t, d]`, keys and values `[b, nkv, t, d]` (normed and rotated) and the
    /// output gate `[b, t, nh * d]` of the projection `qkv` (its bias added), through candle's
    /// ops.
    fn split_heads(
        &self,
        qkv: &Tensor,
        input: &AttentionInput<'_>,
        b: usize,
        t: usize,
    ) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
        let AttentionShape {
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
        } = self.shape;
        let (mut q, gate, q_width) = if self.output_gate {
            // [b, t, nh, 2d]: each head's query, then its gate.
            let qg = qkv
                .narrow(D::Minus1, 0, 2 * nh * d)?
                .reshape((b, t, nh, 2 * d))?;
            let gate = qg.narrow(D::Minus1, d, d)?.reshape((b, t, nh * d))?;
            let q = qg.narrow(D::Minus1, 0, d)?.reshape((b, t, nh * d))?;
            (q, Some(gate), 2 * nh * d)
        } else {
            (qkv.narrow(D::Minus1, 0, nh * d)?, None, nh * d)
        };
        let mut k = qkv.narrow(D::Minus1, q_width, nkv * d)?;
        let v = qkv.narrow(D::Minus1, q_width + nkv * d, nkv * d)?;
        if let Some((QkNorm::Projection, q_norm, k_norm)) = &self.qk_norm {
            q = q_norm.forward(&q)?; // over [b, t, nh * d]
            k = k_norm.forward(&k)?;
        }
        // [b, t, n * d] -> [b, n, t, d]
        let mut q = q.reshape((b, t, nh, d))?.transpose(1, 2)?.contiguous()?;
        let mut k = k.reshape((b, t, nkv, d))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, d))?.transpose(1, 2)?.contiguous()?;
        if let Some((QkNorm::PerHead, q_norm, k_norm)) = &self.qk_norm {
            q = q_norm.forward(&q)?; // over each head's d
            k = k_norm.forward(&k)?;
        }
        let (q, k) = match input.rope {
            Some((cos, sin)) => (rotary::apply(&q, cos, sin)?, rotary::apply(&k, cos, sin)?),
            None => (q, k),
        };
        Ok((q, k, v, gate))
    }

    /// [`Attention::split_heads`] in one launch where the GPU takes it
    /// ([`crate::cuda::qkv_heads`], which adds the projection's `bias` on the way): without an
    /// output gate, with per-head norms or none. `None` otherwise.
    fn fused_heads(
        &self,
        product: &Tensor,
        bias: Option<&Tensor>,
        input: &AttentionInput<'_>,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let Some(norms) = self.head_norms().filter(|_| !self.output_gate) else {
            return Ok(None);
        };
        let fused = FusedQkv {
            qkv: product,
            num_heads: self.shape.num_heads,
            num_kv_heads: self.shape.num_kv_heads,
            head_dim: self.shape.head_dim,
            rope: input.rope,
            norms,
        };
        crate::cuda::qkv_heads(&fused, bias)
    }

    /// The per-head query and key norms as the fused kernels take them (weights and eps), `None`
    /// inside for none; `None` where they take them not (norms over the whole projection, or
    /// a norm whose weight is split).
    #[allow(clippy::type_complexity)]
    fn head_norms(&self) -> Option<Option<(&Tensor, &Tensor, f32)>> {
        match &self.qk_norm {
            None => Some(None),
            Some((QkNorm::PerHead, q_norm, k_norm)) => {
                let ((qw, eps), (kw, _)) = (q_norm.weight_eps()?, k_norm.weight_eps()?);
                Some(Some((qw, kw, eps)))
            }
            Some((QkNorm::Projection, ..)) => None,
        }
    }

    /// This step's one new token per row as the fused projection gives it, where nothing else
    /// touches it between the projection and the cache (no output gate, query scaling, mask,
    /// attention weights, or norm over all heads at once): `None` otherwise.
    fn decode_token<'a>(
        &'a self,
        qkv: &'a Tensor,
        input: &AttentionInput<'a>,
        keep_weights: bool,
    ) -> Option<FusedQkv<'a>> {
        let plain = qkv.dim(1).ok() == Some(1)
            && matches!(input.mask, LayerMask::Dense(None))
            && input.padding_queries.is_none()
            && input.query_scale.is_none()
            && !keep_weights
            && !self.output_gate
            && self.takes_device_slots();
        let norms = self.head_norms()?;
        plain.then_some(FusedQkv {
            qkv,
            num_heads: self.shape.num_heads,
            num_kv_heads: self.shape.num_kv_heads,
            head_dim: self.shape.head_dim,
            rope: input.rope,
            norms,
        })
    }

    /// What [`crate::cuda::decode_layer`] takes of this block: the fused q/k/v and o_proj weights
    /// with their biases, the heads, the score scale and the cache layer, for a block of plain
    /// scaled scores over rotated (or unrotated) heads without per-head norms or an output gate,
    /// on whole dense weights; `None` otherwise.
    pub fn dense_decode_parts(&self) -> Option<DenseAttention<'_>> {
        let plain = self.takes_device_slots() && self.qk_norm.is_none() && !self.output_gate;
        plain.then_some(())?;
        let s = self.shape;
        Some(DenseAttention {
            qkv: self.qkv.dense()?,
            o_proj: self.o_proj.dense()?,
            heads: (s.num_heads, s.num_kv_heads, s.head_dim),
            scale: self.scale,
            layer_idx: self.layer_idx,
        })
    }

    /// Whether this block's decode step can run at cache slots held in device memory
    /// ([`AttentionInput::slots`]): plain scaled scores (no softcap, no sinks) on unsplit heads,
    /// with sdpa semantics.
    pub fn takes_device_slots(&self) -> bool {
        self.softcap.is_none() && self.sinks.is_none() && self.heads_comm.is_none() && !self.eager
    }

    /// How this block turns `q k^T` into scores.
    fn scores(&self) -> Scores<'_> {
        Scores {
            scale: self.scale,
            softcap: self.softcap,
            sinks: self.sinks.as_ref(),
        }
    }

    /// [`Attention::attend`], through the fused decode kernel ([`crate::cuda::decode_attention`],
    /// [`decode_cpu::decode_attention`] on the CPU) where it applies: one query per head, no
    /// mask, softcap or sinks.
    fn attend_dense(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        if mask.is_none() && self.softcap.is_none() && self.sinks.is_none() {
            return attend_unmasked(q, k, v, self.scale);
        }
        self.attend(q, k, v, mask)
    }

    /// `softmax(q k^T * scale (+ softcap) + mask) v` with this block's scores ([`attend`]).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        attend(q, k, v, mask, self.scores())
    }
}

/// `softmax(q k^T * scale) v` without a mask, softcap or sinks: through the fused decode
/// kernel where one applies (one query per head: [`crate::cuda::decode_attention`] on a GPU,
/// [`decode_cpu::decode_attention`] on the CPU), else [`attend`]. `q` `[b, nh, t, d]`, `k`, `v`
/// `[b, nkv, s, d]` -> `[b, nh, t, d]`.
pub fn attend_unmasked(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if let Some(out) = crate::cuda::decode_attention(q, k, v, scale)? {
        return Ok(out);
    }
    if let Some(out) = decode_cpu::decode_attention(q, k, v, scale)? {
        return Ok(out);
    }
    let scores = Scores {
        scale,
        softcap: None,
        sinks: None,
    };
    attend(q, k, v, None, scores)
}

/// `softmax(q k^T * scores + mask) v` under a mask by position ([`CausalMask`]): on a GPU through
/// [`crate::cuda::flash_attention`], which never builds the mask nor the scores; on the CPU in
/// blocks of queries over the keys each block may see ([`causal_cpu`]); else [`attend`] with the
/// mask's tensor. `q` `[b, nh, t, d]`, `k`, `v` `[b, nkv, s, d]` -> `[b, nh, t, d]`.
pub fn attend_causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &CausalMask,
    scores_of: Scores<'_>,
) -> Result<Tensor> {
    if q.dim(2)? == mask.q_len() && k.dim(2)? == mask.kv_len() {
        if let Some(out) = crate::cuda::flash_attention(q, k, v, mask.window(), scores_of)? {
            return Ok(out);
        }
        if let Some(out) = causal_cpu::attend_causal_blocks(q, k, v, mask, scores_of)? {
            return Ok(out);
        }
    }
    attend(q, k, v, mask.tensor()?, scores_of)
}

/// [`attend`] under a [`DenseMask`]: a mask by position through [`attend_causal`].
pub fn attend_masked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &DenseMask,
    scores_of: Scores<'_>,
) -> Result<Tensor> {
    match mask {
        DenseMask::Causal(mask) => attend_causal(q, k, v, mask, scores_of),
        other => attend(q, k, v, other.tensor()?, scores_of),
    }
}

/// `q_norm` and `k_norm` of a block, over each head or over the whole projection, when the
/// config has them.
fn qk_norms(
    ctx: &LoadContext<'_>,
    prefix: &str,
    cfg: &ModelConfig,
) -> Result<Option<(QkNorm, RmsNorm, RmsNorm)>> {
    let Some(kind) = cfg.qk_norm else {
        return Ok(None);
    };
    let d = cfg.head_dim;
    let (q_dim, k_dim) = match kind {
        QkNorm::PerHead => (d, d),
        QkNorm::Projection => (cfg.num_attention_heads * d, cfg.num_key_value_heads * d),
    };
    let norm = |name: &str, dim| {
        RmsNorm::load(
            ctx,
            &format!("{prefix}.{name}"),
            dim,
            cfg.norm_eps,
            cfg.norm,
        )
    };
    Ok(Some((kind, norm("q_norm", q_dim)?, norm("k_norm", k_dim)?)))
}

/// How [`attend`] turns `q k^T` into scores.
#[derive(Debug, Clone, Copy)]
pub struct Scores<'a> {
    /// The multiplier on `q k^T` (HF `scaling`).
    pub scale: f64,
    /// `tanh(s / cap) * cap` on the scores, or `None`.
    pub softcap: Option<f64>,
    /// gpt-oss: `[num_heads]` sink logits, f32 (see [`ModelConfig::attention_sinks`]).
    pub sinks: Option<&'a Tensor>,
}

/// The most elements one block of attention scores may have: candle's CUDA softmax (and other
/// kernels) index their input with 32-bit signed ints, so a larger `[b, nh, t, s]` block reads
/// out of bounds (`CUDA_ERROR_ILLEGAL_ADDRESS`; a 16k-token prompt of a 14-head model is
/// already 3.8e9). [`attend`] splits the queries into blocks under it.
const MAX_SCORES_PER_BLOCK: usize = i32::MAX as usize;

/// `softmax(q k^T * scale (+ softcap) + mask) v`: `q` `[b, nh, t, d]` (contiguous), `k`, `v`
/// `[b, nkv, s, d]`, `mask` `[b, 1, t, s]` (or `[.., 1, s]`) -> `[b, nh, t, d]`. Each query row
/// is independent, so long prompts run in blocks of query rows whose scores stay under
/// [`MAX_SCORES_PER_BLOCK`] elements.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scores_of: Scores<'_>,
) -> Result<Tensor> {
    attend_in_blocks(q, k, v, mask, scores_of, MAX_SCORES_PER_BLOCK)
}

/// [`attend`] with blocks of at most `max_scores` score elements (a query row at least).
fn attend_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scores_of: Scores<'_>,
    max_scores: usize,
) -> Result<Tensor> {
    let (b, nh, t, _) = q.dims4()?;
    // The sinks add one column to the softmax.
    let per_row = b * nh * (k.dim(2)? + 1);
    let rows = (max_scores / per_row).max(1);
    if t <= rows {
        return Ok(attend_with_weights(q, k, v, mask, scores_of)?.0);
    }
    let mut outs = Vec::with_capacity(t.div_ceil(rows));
    for start in (0..t).step_by(rows) {
        let len = rows.min(t - start);
        let q_block = q.narrow(2, start, len)?.contiguous()?; // [b, nh, len, d]
        let mask_block = match mask {
            Some(m) if m.dim(2)? == t => Some(m.narrow(2, start, len)?), // [b, 1, len, s]
            other => other.cloned(),
        };
        outs.push(attend_with_weights(&q_block, k, v, mask_block.as_ref(), scores_of)?.0);
    }
    Ok(Tensor::cat(&outs, 2)?) // [b, nh, t, d]
}

/// [`attend`], also returning the attention weights `[b, nh, t, s]` (the softmax, in the
/// scores' dtype).
pub fn attend_with_weights(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scores_of: Scores<'_>,
) -> Result<(Tensor, Tensor)> {
    let (b, nh, t, d) = q.dims4()?;
    let nkv = k.dim(1)?;
    let s = k.dim(2)?;
    let n_rep = nh / nkv;
    // [b, nh, t, d] -> [b, nkv, n_rep * t, d]: the heads sharing a kv head are contiguous.
    let q = q.reshape((b, nkv, n_rep * t, d))?;
    let raw = q.matmul(&k.t()?)?; // [b, nkv, n_rep * t, s]
    if scores_of.softcap.is_none() && scores_of.sinks.is_none() && raw.dtype() == DType::F32 {
        // The scale, mask and softmax in one pass on the CPU (equal to the ops below).
        if let Some(probs) =
            softmax_cpu::scaled_masked_softmax(&raw.reshape((b, nh, t, s))?, scores_of.scale, mask)?
        {
            let out = probs.reshape((b, nkv, n_rep * t, s))?.matmul(v)?; // [b, nkv, n_rep * t, d]
            return Ok((out.reshape((b, nh, t, d))?, probs));
        }
    }
    let mut scores = (raw * scores_of.scale)?; // [b, nkv, n_rep * t, s]
    if let Some(cap) = scores_of.softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
    let mut scores = scores.reshape((b, nh, t, s))?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = match scores_of.sinks {
        // Each head's sink logit joins the softmax as one more column, then is dropped.
        Some(sinks) => {
            let sink = sinks.reshape((1, nh, 1, 1))?.broadcast_as((b, nh, t, 1))?;
            let all = Tensor::cat(&[&scores.to_dtype(DType::F32)?, &sink.contiguous()?], 3)?; // [b, nh, t, s + 1]
            candle_nn::ops::softmax_last_dim(&all)?
                .narrow(3, 0, s)?
                .contiguous()?
                .to_dtype(scores.dtype())?
        }
        None if matches!(scores.dtype(), DType::F32 | DType::F64) => {
            candle_nn::ops::softmax_last_dim(&scores)?
        }
        // Half precision: softmax in f32, as transformers' eager attention does
        // (`dtype=torch.float32`).
        None => candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            .to_dtype(scores.dtype())?,
    };
    let out = probs.reshape((b, nkv, n_rep * t, s))?.matmul(v)?; // [b, nkv, n_rep * t, d]
    Ok((out.reshape((b, nh, t, d))?, probs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Blocks of query rows give the one-block result, with a full mask and a broadcast one.
    #[test]
    fn attention_in_blocks_matches_one_block() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nh, nkv, t, s, d) = (2, 4, 2, 7, 9, 8);
        let q = Tensor::randn(0f32, 1., (b, nh, t, d), &dev)?;
        let k = Tensor::randn(0f32, 1., (b, nkv, s, d), &dev)?;
        let v = Tensor::randn(0f32, 1., (b, nkv, s, d), &dev)?;
        let full = Tensor::randn(0f32, 1., (b, 1, t, s), &dev)?;
        let broadcast = Tensor::randn(0f32, 1., (b, 1, 1, s), &dev)?;
        let scores = Scores {
            scale: 0.3,
            softcap: Some(5.0),
            sinks: None,
        };
        for mask in [Some(&full), Some(&broadcast), None] {
            let whole = attend_with_weights(&q, &k, &v, mask, scores)?.0;
            // 1, 2 and 3 query rows per block (a row is b * nh * (s + 1) = 80 elements).
            for max in [1, 160, 250] {
                let blocks = attend_in_blocks(&q, &k, &v, mask, scores, max)?;
                let diff = (&blocks - &whole)?.abs()?.flatten_all()?.max(0)?;
                assert!(diff.to_scalar::<f32>()? < 1e-6, "max {max}: {diff}");
                assert_eq!(blocks.dims(), whole.dims());
            }
        }
        Ok(())
    }
}
