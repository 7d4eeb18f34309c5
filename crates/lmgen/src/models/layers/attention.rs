//! Multi-head attention with grouped-query heads, RoPE, optional score soft-capping, and the KV cache.
//!
//! HF `LlamaAttention` / `eager_attention_forward`: `softmax(q k^T * scale (+ softcap) + mask) v`.
//! Grouped-query attention is computed without copying keys: the `n_rep` query heads that share a
//! key/value head are folded into the query length, `[b, h, t, d] -> [b, kvh, n_rep * t, d]`.

use candle_core::{DType, Tensor, D};

use super::linear::Linear;
use super::mask::LayerMask;
use super::rotary;
use super::LoadContext;
use crate::cache::KvCache;
use crate::error::Result;
use crate::models::config::ModelConfig;
use crate::models::AttnImplementation;

/// One attention block.
#[derive(Debug, Clone)]
pub struct Attention {
    /// q, k and v projections as one `[(nh + 2 nkv) * d, hidden]` product (fused at load).
    qkv: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    softcap: Option<f64>,
    layer_idx: usize,
}

/// Per-forward inputs shared by every layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionInput<'a> {
    /// `cos`/`sin` `[b, t, d/2]`, or `None` for models without RoPE.
    pub rope: Option<(&'a Tensor, &'a Tensor)>,
    /// Additive mask `[b, 1, t, past + t]` (dense batch), or per sequence (packed batch).
    pub mask: LayerMask<'a>,
}

impl Attention {
    /// Llama-family layout: `{prefix}.{q,k,v,o}_proj`.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        cfg: &ModelConfig,
        layer_idx: usize,
    ) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (q, k, v) = (
            format!("{prefix}.q_proj"),
            format!("{prefix}.k_proj"),
            format!("{prefix}.v_proj"),
        );
        let parts = [
            (q.as_str(), nh * d),
            (k.as_str(), nkv * d),
            (v.as_str(), nkv * d),
        ];
        Ok(Self {
            qkv: Linear::load_fused(ctx, &parts, h, cfg.qkv_bias)?,
            o_proj: Linear::load(ctx, &format!("{prefix}.o_proj"), nh * d, h, cfg.o_bias)?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            scale: cfg.attention_scale.powf(-0.5),
            // transformers' default attention (sdpa) ignores `attn_logit_softcapping`; only eager applies it.
            softcap: match ctx.attn_implementation {
                AttnImplementation::Eager => cfg.attn_logit_softcapping,
                AttnImplementation::Sdpa => None,
            },
            layer_idx,
        })
    }

    /// GPT-2 layout: fused `{prefix}.c_attn` and `{prefix}.c_proj` (Conv1D).
    pub fn load_gpt2(
        ctx: &LoadContext<'_>,
        prefix: &str,
        cfg: &ModelConfig,
        layer_idx: usize,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let mut scale = cfg.attention_scale.powf(-0.5);
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer_idx + 1) as f64;
        }
        Ok(Self {
            qkv: Linear::load_conv1d(ctx, &format!("{prefix}.c_attn"), h, 3 * h)?,
            o_proj: Linear::load_conv1d(ctx, &format!("{prefix}.c_proj"), h, h)?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim,
            scale,
            softcap: None,
            layer_idx,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`; appends this step's keys/values to `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        input: &AttentionInput<'_>,
        cache: &mut dyn KvCache,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qkv = self.qkv.forward(x)?; // [b, t, (nh + 2 nkv) * d]
        let q = qkv.narrow(D::Minus1, 0, nh * d)?;
        let k = qkv.narrow(D::Minus1, nh * d, nkv * d)?;
        let v = qkv.narrow(D::Minus1, (nh + nkv) * d, nkv * d)?;
        // [b, t, n * d] -> [b, n, t, d]
        let q = q.reshape((b, t, nh, d))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, t, nkv, d))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, d))?.transpose(1, 2)?.contiguous()?;
        let (q, k) = match input.rope {
            Some((cos, sin)) => (rotary::apply(&q, cos, sin)?, rotary::apply(&k, cos, sin)?),
            None => (q, k),
        };
        let out = match input.mask {
            LayerMask::Dense(mask) => {
                let (k, v) = cache.update(self.layer_idx, &k, &v)?; // [b, nkv, s, d]
                self.attend(&q, &k, &v, mask)?
            }
            LayerMask::Packed { sequences, sliding } => {
                // One sequence at a time over its own cached keys; b = 1.
                let mut outs = Vec::with_capacity(sequences.len());
                for (i, seq) in sequences.iter().enumerate() {
                    let part = |x: &Tensor| x.narrow(2, seq.start, seq.new)?.contiguous();
                    let (ks, vs) =
                        cache.update_sequence(self.layer_idx, i, &part(&k)?, &part(&v)?)?; // [1, nkv, s_i, d]
                    let mask = if sliding { &seq.sliding } else { &seq.full };
                    outs.push(self.attend(&part(&q)?, &ks, &vs, mask.as_ref())?);
                    // [1, nh, t_i, d]
                }
                Tensor::cat(&outs, 2)? // [1, nh, t, d]
            }
        };
        // [b, nh, t, d] -> [b, t, nh * d]
        let out = out.transpose(1, 2)?.reshape((b, t, nh * d))?;
        self.o_proj.forward(&out)
    }

    /// `softmax(q k^T * scale (+ softcap) + mask) v`: `q` `[b, nh, t, d]` (contiguous), `k`, `v`
    /// `[b, nkv, s, d]`, `mask` `[b, 1, t, s]` -> `[b, nh, t, d]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, nh, t, d) = q.dims4()?;
        let nkv = self.num_kv_heads;
        let s = k.dim(2)?;
        let n_rep = nh / nkv;
        // [b, nh, t, d] -> [b, nkv, n_rep * t, d]: the heads sharing a kv head are contiguous.
        let q = q.reshape((b, nkv, n_rep * t, d))?;
        let mut scores = (q.matmul(&k.t()?)? * self.scale)?; // [b, nkv, n_rep * t, s]
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let mut scores = scores.reshape((b, nh, t, s))?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = if scores.dtype() == DType::F32 {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            // Softmax in f32, as transformers' eager attention does (`dtype=torch.float32`).
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
                .to_dtype(scores.dtype())?
        };
        let out = probs.reshape((b, nkv, n_rep * t, s))?.matmul(v)?; // [b, nkv, n_rep * t, d]
        Ok(out.reshape((b, nh, t, d))?)
    }
}
