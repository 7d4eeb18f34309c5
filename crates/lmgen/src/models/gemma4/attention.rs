//! Gemma 4's attention (`Gemma4TextAttention`): q/k/v norms, unscaled scores, values = keys on
//! full layers with `attention_k_eq_v`, and shared KV layers that attend to an earlier layer's
//! keys and values.

use candle_core::{Tensor, D};

use super::{unit_rms_norm, LayerSpec};
use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::models::config::{LayerType, ModelConfig};
use crate::models::layers::attention::{attend, attend_causal, attend_masked, Scores};
use crate::models::layers::linear::{Linear, RowOutput, Rows};
use crate::models::layers::mask::LayerMask;
use crate::models::layers::norm::RmsNorm;
use crate::models::layers::rotary;
use crate::models::layers::LoadContext;
use crate::parallel::shard::rows;

/// Keys and values that shared KV layers attend to (HF `shared_kv_states`): the whole cached
/// sequence of the last non-shared layer of each type, as its cache returned them.
#[derive(Debug, Default)]
pub(super) struct SharedKv {
    full: Option<StoredKv>,
    sliding: Option<StoredKv>,
}

#[derive(Debug, Clone)]
enum StoredKv {
    /// `[b, nkv, s, d]` each.
    Dense(Tensor, Tensor),
    /// Per sequence of a packed batch, `[1, nkv, s_i, d]` each.
    Packed(Vec<(Tensor, Tensor)>),
}

impl SharedKv {
    fn slot(&mut self, t: LayerType) -> &mut Option<StoredKv> {
        match t {
            LayerType::SlidingAttention => &mut self.sliding,
            // Full attention (parse refuses recurrent layer types for Gemma 4).
            _ => &mut self.full,
        }
    }
}

/// `Gemma4TextAttention`.
#[derive(Debug, Clone)]
pub(super) struct Attention {
    q_proj: Linear,
    q_norm: RmsNorm,
    /// `k_proj` (and `v_proj`, fused after it), `k_norm`; `None` on a shared KV layer.
    kv: Option<(Linear, RmsNorm)>,
    o_proj: Linear,
    /// `[head_dim]` ones: `v_norm`'s missing weight.
    ones: Tensor,
    eps: f32,
    /// Query and key/value heads (this rank's, split across tensor-parallel ranks).
    num_heads: usize,
    num_kv_heads: usize,
    spec: LayerSpec,
    layer_type: LayerType,
    layer_idx: usize,
}

impl Attention {
    pub(super) fn load(
        ctx: &LoadContext<'_>,
        cfg: &ModelConfig,
        i: usize,
        spec: LayerSpec,
    ) -> Result<Self> {
        let p = format!("model.layers.{i}.self_attn");
        let (h, nh, d, nkv) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            spec.head_dim,
            spec.num_key_value_heads,
        );
        let norm =
            |name: &str| RmsNorm::load(ctx, &format!("{p}.{name}"), d, cfg.norm_eps, cfg.norm);
        let bias = cfg.qkv_bias;
        let (k, v) = (format!("{p}.k_proj"), format!("{p}.v_proj"));
        let kv_names = if spec.values_are_keys {
            &[k.as_str()][..]
        } else {
            &[k.as_str(), v.as_str()][..]
        };
        // Split across tensor-parallel ranks: this rank's query heads and the key/value heads
        // they read; q/k/v column-parallel, `o_proj` row-parallel.
        let split = match ctx.shard {
            None => None,
            Some(shard) => {
                let heads = shard.split(nh, "num_attention_heads")?;
                let kv =
                    shard.split_shared(nkv, "num_key_value_heads", (nh, "num_attention_heads"))?;
                Some((shard, heads, kv))
            }
        };
        let q = format!("{p}.q_proj");
        let q_proj = match &split {
            None => Linear::load(ctx, &q, h, nh * d, bias)?,
            Some((_, heads, _)) => {
                let part = Rows {
                    prefix: &q,
                    out: nh * d,
                    rows: rows(heads, d, 0),
                };
                Linear::load_rows(ctx, &[part], h, bias)?
            }
        };
        let kv = match (spec.kv_source, &split) {
            (Some(_), _) => None,
            (None, None) => {
                let parts: Vec<_> = kv_names.iter().map(|&n| (n, nkv * d)).collect();
                Some((Linear::load_fused(ctx, &parts, h, bias)?, norm("k_norm")?))
            }
            (None, Some((_, _, kv))) => {
                let parts: Vec<_> = kv_names
                    .iter()
                    .map(|&prefix| Rows {
                        prefix,
                        out: nkv * d,
                        rows: rows(kv, d, 0),
                    })
                    .collect();
                Some((Linear::load_rows(ctx, &parts, h, bias)?, norm("k_norm")?))
            }
        };
        let o = format!("{p}.o_proj");
        let o_proj = match &split {
            None => Linear::load(ctx, &o, nh * d, h, cfg.o_bias)?,
            Some((shard, heads, _)) => Linear::load_columns(
                ctx,
                &o,
                (nh * d, h),
                rows(heads, d, 0),
                cfg.o_bias,
                RowOutput::Reduced(shard.comm().clone()),
            )?,
        };
        let (heads, kv_heads) = split.map_or((nh, nkv), |(_, q, kv)| (q.len(), kv.len()));
        Ok(Self {
            q_proj,
            q_norm: norm("q_norm")?,
            kv,
            o_proj,
            ones: Tensor::ones(d, ctx.dtype, ctx.device)?,
            eps: cfg.norm_eps as f32,
            num_heads: heads,
            num_kv_heads: kv_heads,
            spec,
            layer_type: cfg.layer_types[i],
            layer_idx: i,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`: appends this layer's keys and values to `cache` (or
    /// reads those of its source layer from `shared`), and keeps them in `shared` when later
    /// layers read them.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: LayerMask<'_>,
        cache: &mut dyn KvCache,
        shared: &mut SharedKv,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, d, nkv) = (self.num_heads, self.spec.head_dim, self.num_kv_heads);
        let (cos, sin) = rope;
        // [b, t, n * d] -> [b, n, t, d]
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(self.q_proj.forward(x)?, nh)?;
        let q = rotary::apply(&self.q_norm.forward(&q)?, cos, sin)?;
        let new_kv = match &self.kv {
            None => None,
            Some((proj, k_norm)) => {
                let kv = proj.forward(x)?; // [b, t, (1 or 2) * nkv * d]
                let k = kv.narrow(D::Minus1, 0, nkv * d)?;
                let v = if self.spec.values_are_keys {
                    k.clone()
                } else {
                    kv.narrow(D::Minus1, nkv * d, nkv * d)?
                };
                let k = rotary::apply(&k_norm.forward(&heads(k, nkv)?)?, cos, sin)?;
                let v = unit_rms_norm(&heads(v, nkv)?, &self.ones, self.eps)?;
                Some((k, v))
            }
        };
        let scores = Scores {
            scale: 1.0,
            softcap: None,
            sinks: None,
        };
        let source = |shared: &mut SharedKv| -> Result<StoredKv> {
            shared.slot(self.layer_type).clone().ok_or_else(|| {
                Error::unsupported(format!(
                    "layer {} shares the keys of an earlier layer that did not run",
                    self.layer_idx
                ))
            })
        };
        let out = match mask {
            LayerMask::Dense(_) | LayerMask::Causal(_) => {
                let (k, v) = match &new_kv {
                    Some((k, v)) => cache.update(self.layer_idx, k, v)?, // [b, nkv, s, d]
                    None => match source(shared)? {
                        StoredKv::Dense(k, v) => (k, v),
                        StoredKv::Packed(_) => {
                            return Err(Error::unsupported("shared KV of a packed batch"))
                        }
                    },
                };
                if self.spec.kv_shared {
                    *shared.slot(self.layer_type) = Some(StoredKv::Dense(k.clone(), v.clone()));
                }
                match mask {
                    LayerMask::Causal(mask) => attend_causal(&q, &k, &v, mask, scores)?,
                    _ => attend(&q, &k, &v, mask.dense()?, scores)?,
                }
            }
            LayerMask::Packed { sequences, sliding } => {
                let from = match &new_kv {
                    Some(_) => None,
                    None => match source(shared)? {
                        StoredKv::Packed(kv) => Some(kv),
                        StoredKv::Dense(..) => {
                            return Err(Error::unsupported("shared KV of a dense batch"))
                        }
                    },
                };
                let mut kept = Vec::with_capacity(sequences.len());
                let mut outs = Vec::with_capacity(sequences.len());
                for (i, seq) in sequences.iter().enumerate() {
                    let part = |x: &Tensor| x.narrow(2, seq.start, seq.new)?.contiguous();
                    let (ks, vs) =
                        match &new_kv {
                            // [1, nkv, s_i, d]
                            Some((k, v)) => {
                                cache.update_sequence(self.layer_idx, i, &part(k)?, &part(v)?)?
                            }
                            None => from.as_ref().and_then(|kv| kv.get(i)).cloned().ok_or_else(
                                || {
                                    Error::unsupported(
                                        "a shared KV layer's batch differs from its source's",
                                    )
                                },
                            )?,
                        };
                    let mask = if sliding { &seq.sliding } else { &seq.full };
                    outs.push(attend_masked(&part(&q)?, &ks, &vs, mask, scores)?); // [1, nh, t_i, d]
                    kept.push((ks, vs));
                }
                if self.spec.kv_shared {
                    *shared.slot(self.layer_type) = Some(StoredKv::Packed(kept));
                }
                Tensor::cat(&outs, 2)? // [1, nh, t, d]
            }
        };
        // [b, nh, t, d] -> [b, t, nh * d]
        let out = out.transpose(1, 2)?.reshape((b, t, nh * d))?;
        self.o_proj.forward(&out)
    }
}
