//! One decode step of the gated delta rule as device tensor operations (HF
//! `torch_recurrent_gated_delta_rule` for one token): on a GPU the state, queries and keys never
//! leave the device, where the host form in [`super::gated_delta_net`] copies them out and back
//! for every layer and token. Arithmetic in f32, as transformers' decode runs it; the state stays
//! `[b, value_heads, key_head_dim, value_head_dim]` in f32.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::models::config::LinearAttentionConfig;

/// A layer's per-head constants, f32 `[value_heads]` on the model's device.
#[derive(Debug, Clone)]
pub struct DecayParams {
    /// `-exp(A_log)`.
    pub neg_a: Tensor,
    /// `dt_bias`.
    pub dt_bias: Tensor,
}

/// One token's inputs to the rule, after the convolution.
pub struct StepInputs<'a> {
    /// `[b, 1, conv_dim]`: q (`[nk, dk]`), k (`[nk, dk]`), v (`[nv, dv]`), after SiLU.
    pub mixed: &'a Tensor,
    /// `[b, 1, nv]` before the sigmoid.
    pub beta: &'a Tensor,
    /// `[b, 1, nv]` before the softplus.
    pub a: &'a Tensor,
    /// `[b, nv, dk, dv]`, f32.
    pub state: &'a Tensor,
}

/// `x / sqrt(sum(x^2) + 1e-6)` over the last dimension (FLA's `l2norm`).
fn l2norm(x: &Tensor) -> Result<Tensor> {
    let inv = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-6)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?)
}

/// `softplus(x) = max(x, 0) + ln(1 + exp(-|x|))`: torch's softplus without its threshold (past
/// 20 the two differ by less than `exp(-20)`).
fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

/// `[b, nk, d]` -> `[b, nv, d]`: each key head repeated for the `nv / nk` value heads that share
/// it (value head `h` reads key head `h / r`).
fn per_value_head(x: &Tensor, r: usize) -> Result<Tensor> {
    let (b, nk, d) = x.dims3()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, nk, r, d))?
        .reshape((b, nk * r, d))?)
}

/// Runs one token: returns the output `[b, 1, nv, dv]` (f32) and the new state.
pub fn decode_step(
    cfg: &LinearAttentionConfig,
    params: &DecayParams,
    input: &StepInputs<'_>,
) -> Result<(Tensor, Tensor)> {
    let (nk, nv, dk, dv) = (
        cfg.num_key_heads,
        cfg.num_value_heads,
        cfg.key_head_dim,
        cfg.value_head_dim,
    );
    let b = input.mixed.dim(0)?;
    let r = nv / nk;
    let mixed = input
        .mixed
        .to_dtype(DType::F32)?
        .reshape((b, cfg.conv_dim()))?;
    // [b, nk * dk] -> [b, nk, dk], normalised once per key head, then per value head.
    let q = l2norm(&mixed.narrow(1, 0, nk * dk)?.reshape((b, nk, dk))?)?;
    let q = per_value_head(&(q * (dk as f64).powf(-0.5))?, r)?; // [b, nv, dk]
    let k = per_value_head(
        &l2norm(&mixed.narrow(1, nk * dk, nk * dk)?.reshape((b, nk, dk))?)?,
        r,
    )?;
    let v = mixed
        .narrow(1, 2 * nk * dk, nv * dv)?
        .reshape((b * nv, 1, dv))?;
    // g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b): [b, nv].
    let a = input.a.to_dtype(DType::F32)?.reshape((b, nv))?;
    let g = softplus(&a.broadcast_add(&params.dt_bias)?)?.broadcast_mul(&params.neg_a)?;
    let decay = g.exp()?.reshape((b * nv, 1, 1))?;
    let beta = input.beta.to_dtype(DType::F32)?.reshape((b * nv, 1, 1))?;
    let beta = (beta.neg()?.exp()? + 1.0)?.recip()?;
    // S = S exp(g); kv_mem = k S; S += k^T ((v - kv_mem) beta); o = q S.
    let s = input
        .state
        .reshape((b * nv, dk, dv))?
        .broadcast_mul(&decay)?;
    let k = k.reshape((b * nv, 1, dk))?.contiguous()?;
    let kv_mem = k.matmul(&s)?; // [b nv, 1, dv]
    let delta = (v - kv_mem)?.broadcast_mul(&beta)?;
    let s = (s + k.transpose(1, 2)?.contiguous()?.matmul(&delta)?)?; // [b nv, dk, dv]
    let q = q.reshape((b * nv, 1, dk))?.contiguous()?;
    let o = q.matmul(&s)?.reshape((b, 1, nv, dv))?;
    Ok((o, s.reshape((b, nv, dk, dv))?))
}
