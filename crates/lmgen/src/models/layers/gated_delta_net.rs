//! Gated DeltaNet linear attention (HF `Qwen3_5GatedDeltaNet`, `Qwen3NextGatedDeltaNet`): the
//! q/k/v projections go through a causal convolution and SiLU, then the gated delta rule updates
//! a `[key_head_dim, value_head_dim]` state per value head,
//!
//! ```text
//! S = S * exp(g_t);  S += k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T q_t
//! ```
//!
//! with `q`, `k` L2-normalised and `q` scaled by `key_head_dim^-0.5`; the output goes through a
//! gated RMSNorm (`norm(o) * silu(z)`) and `out_proj`.
//!
//! Over a prompt the rule runs on the host in f64, in transformers' chunked form; one token after
//! a state runs the recurrent form, on the host too for a CPU model, and as f32 device tensor
//! operations on a GPU ([`super::gated_delta_step`]), so a decode step never leaves the device.
//! The state stays in f32 between forwards, as transformers keeps it.

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;

use super::conv::CausalConv1d;
use super::gated_delta_step::{decode_step, DecayParams, StepInputs};
use super::linear::Linear;
use super::norm::RmsNorm;
use super::LoadContext;
use crate::cache::LayerState;
use crate::error::Result;
use crate::models::config::{LinearAttentionConfig, LinearAttentionLayout, ModelConfig, NormKind};

mod split;

/// One gated DeltaNet layer.
#[derive(Debug, Clone)]
pub struct GatedDeltaNet {
    /// `in_proj_qkv` and `in_proj_z` as one product: `[conv_dim + value_dim, hidden]`.
    in_proj: Linear,
    /// `in_proj_b` and `in_proj_a`, `[2 * value_heads, hidden]`, in f32 whatever the compute
    /// dtype: the decay `exp(-exp(A_log) softplus(a + dt_bias))` compounds over every token, and
    /// half-precision rounding of `a` would too.
    in_proj_ba: Linear,
    /// Over the q, k, v channels, SiLU after.
    conv1d: CausalConv1d,
    /// `-exp(A_log)`, f32 `[value_heads]`.
    neg_a: Vec<f32>,
    /// `dt_bias`, f32 `[value_heads]`.
    dt_bias: Vec<f32>,
    /// `neg_a` and `dt_bias` on the model's device, for the device decode step.
    decay: DecayParams,
    /// The gated RMSNorm's weight over `value_head_dim`.
    norm: RmsNorm,
    out_proj: Linear,
    cfg: LinearAttentionConfig,
    /// The dtype of the convolution and of `in_proj_ba`: f32 (f64 for a float64 model).
    wide: DType,
}

impl GatedDeltaNet {
    /// Loads `{prefix}` (`model.layers.{i}.linear_attn`).
    pub fn load(ctx: &LoadContext<'_>, prefix: &str, cfg: &ModelConfig) -> Result<Self> {
        let la = cfg.linear_attention.ok_or_else(|| {
            crate::error::Error::config("a `linear_attention` layer without `linear_*` fields")
        })?;
        if let Some(shard) = ctx.shard {
            return split::load_split(ctx, prefix, cfg, la, shard);
        }
        let h = cfg.hidden_size;
        let (nk, nv, dk, dv) = (
            la.num_key_heads,
            la.num_value_heads,
            la.key_head_dim,
            la.value_head_dim,
        );
        let name = |n: &str| format!("{prefix}.{n}");
        let (wide, ctx32) = wide_context(ctx);
        let (in_proj, in_proj_ba) = match la.layout {
            LinearAttentionLayout::Separate => (
                Linear::load_fused(
                    ctx,
                    &[
                        (&name("in_proj_qkv"), la.conv_dim()),
                        (&name("in_proj_z"), la.value_dim()),
                    ],
                    h,
                    false,
                )?,
                Linear::load_fused(
                    &ctx32,
                    &[(&name("in_proj_b"), nv), (&name("in_proj_a"), nv)],
                    h,
                    false,
                )?,
            ),
            LinearAttentionLayout::Grouped => {
                let r = nv / nk;
                let qkvz = ctx.weight(
                    &name("in_proj_qkvz.weight"),
                    &[nk * (2 * dk + 2 * r * dv), h],
                )?;
                let ba = ctx.tensor_as(&name("in_proj_ba.weight"), &[nk * 2 * r, h], wide)?;
                let (qkvz_order, ba_order) = grouped_row_order((nk, r, dk, dv), (0..nk, 0..nv));
                let rows = |w: &Tensor, order: &[u32]| -> Result<Tensor> {
                    let idx = Tensor::new(order, w.device())?;
                    Ok(w.index_select(&idx, 0)?.contiguous()?)
                };
                (
                    Linear::from_weight(
                        ctx,
                        &name("in_proj_qkvz.weight"),
                        rows(&qkvz, &qkvz_order)?,
                        None,
                    )?,
                    Linear::from_weight(
                        &ctx32,
                        &name("in_proj_ba.weight"),
                        rows(&ba, &ba_order)?,
                        None,
                    )?,
                )
            }
        };
        let (neg_a, dt_bias, decay) = Self::decay(ctx, prefix, nv, 0..nv)?;
        Ok(Self {
            in_proj,
            in_proj_ba,
            // In f32 whatever the compute dtype: the L2 norm of a small query or key turns the
            // rounding of a half-precision convolution into large output errors.
            conv1d: CausalConv1d::load(
                ctx,
                &name("conv1d"),
                (la.conv_dim(), la.conv_kernel_dim),
                false,
                wide,
            )?,
            neg_a,
            dt_bias,
            decay,
            norm: RmsNorm::load(ctx, &name("norm"), dv, cfg.norm_eps, NormKind::Rms)?,
            out_proj: Linear::load(ctx, &name("out_proj"), la.value_dim(), h, false)?,
            cfg: la,
            wide,
        })
    }

    /// The decay parameters of value heads `heads`: `-exp(A_log)` and `dt_bias` on the host and on
    /// the device.
    fn decay(
        ctx: &LoadContext<'_>,
        prefix: &str,
        nv: usize,
        heads: std::ops::Range<usize>,
    ) -> Result<(Vec<f32>, Vec<f32>, DecayParams)> {
        let part = |name: &str| -> Result<Tensor> {
            let all = ctx.tensor_as(&format!("{prefix}.{name}"), &[nv], DType::F32)?;
            Ok(all.narrow(0, heads.start, heads.len())?.contiguous()?)
        };
        let (a_log, dt_bias) = (part("A_log")?, part("dt_bias")?);
        let neg_a = a_log.to_vec1::<f32>()?.iter().map(|a| -a.exp()).collect();
        let decay = DecayParams {
            neg_a: a_log.exp()?.neg()?,
            dt_bias: dt_bias.clone(),
        };
        Ok((neg_a, dt_bias.to_vec1()?, decay))
    }

    /// `x` `[b, t, hidden]` (padding already zeroed) after `state` -> `[b, t, hidden]` and the
    /// new state.
    pub fn forward(&self, x: &Tensor, state: Option<&LayerState>) -> Result<(Tensor, LayerState)> {
        let (b, t, _) = x.dims3()?;
        let la = &self.cfg;
        let (nv, dv) = (la.num_value_heads, la.value_head_dim);
        let (cd, vd) = (la.conv_dim(), la.value_dim());
        let proj = self.in_proj.forward(x)?; // [b, t, cd + vd]
        let qkv = proj.narrow(D::Minus1, 0, cd)?.to_dtype(self.wide)?; // [b, t, cd]
        let z = proj.narrow(D::Minus1, cd, vd)?;
        let ba = self.in_proj_ba.forward(&x.to_dtype(self.wide)?)?; // [b, t, 2 nv]
        let beta = ba.narrow(D::Minus1, 0, nv)?;
        let a = ba.narrow(D::Minus1, nv, nv)?;
        let (mixed, conv_state) = self.conv1d.forward(&qkv, state.map(|s| &s.conv))?;
        let mixed = candle_nn::ops::silu(&mixed)?; // [b, t, cd]
        let previous = state.and_then(|s| s.recurrent.as_ref());
        let (out, recurrent) = match previous {
            // One token after a state on a GPU: device tensor operations, in f32.
            Some(s) if t == 1 && !x.device().is_cpu() && self.wide == DType::F32 => {
                let input = StepInputs {
                    mixed: &mixed,
                    beta: &beta,
                    a: &a,
                    state: s,
                };
                decode_step(la, &self.decay, &input)?
            }
            _ => self.host_rule(&mixed, &beta, &a, previous)?,
        };
        // [b, t, nv, dv] in the compute dtype.
        let out = out.to_dtype(x.dtype())?;
        // Gated RMSNorm: norm(o) * silu(z), per value head.
        let z = z.reshape((b, t, nv, dv))?;
        let gated = self
            .norm
            .forward(&out)?
            .broadcast_mul(&candle_nn::ops::silu(&z.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?)?;
        let y = self.out_proj.forward(&gated.reshape((b, t, vd))?)?;
        let len = state.map_or(0, |s| s.len) + t;
        Ok((
            y,
            LayerState {
                conv: conv_state,
                recurrent: Some(recurrent),
                len,
            },
        ))
    }
}

impl GatedDeltaNet {
    /// The rule on the host in f64 (see [`Rule`]): `mixed` `[b, t, conv_dim]`, `beta` and `a`
    /// `[b, t, nv]`, after `previous` (`[b, nv, dk, dv]`) -> the output `[b, t, nv, dv]` and the
    /// new state, both f32 on the model's device.
    fn host_rule(
        &self,
        mixed: &Tensor,
        beta: &Tensor,
        a: &Tensor,
        previous: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let la = &self.cfg;
        let (b, t, _) = mixed.dims3()?;
        let (nv, dv) = (la.num_value_heads, la.value_head_dim);
        let host = |x: &Tensor| -> Result<Vec<F>> {
            Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        };
        let initial = match previous {
            Some(r) => host(r)?,
            None => vec![0.0; b * nv * la.key_head_dim * dv],
        };
        let mut rule = Rule {
            cfg: la,
            b,
            t,
            qkv: host(mixed)?,
            beta: host(beta)?,
            a: host(a)?,
            state: initial,
        };
        let neg_a: Vec<F> = self.neg_a.iter().map(|&x| x as F).collect();
        let dt_bias: Vec<F> = self.dt_bias.iter().map(|&x| x as F).collect();
        let out = rule.run(&neg_a, &dt_bias, previous.is_some()); // [b, t, nv, dv]
        let device = mixed.device();
        let out = Tensor::from_vec(out, (b, t, nv, dv), &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(device)?;
        let recurrent = Tensor::from_vec(rule.state, (b, nv, la.key_head_dim, dv), &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_device(device)?;
        Ok((out, recurrent))
    }
}

/// f32 (f64 for a float64 model), and a load context that reads unquantized weights in it.
fn wide_context<'a>(ctx: &LoadContext<'a>) -> (DType, LoadContext<'a>) {
    let wide = if ctx.dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let ctx32 = LoadContext {
        dtype: wide,
        weight_dtype: wide,
        quantize: None,
        ..*ctx
    };
    (wide, ctx32)
}

/// Qwen3-Next stores `in_proj_qkvz` per key head `[q, k, v (r heads), z (r heads)]` and
/// `in_proj_ba` per key head `[b (r), a (r)]` (`nk` key heads, `r` value heads each); the rows of
/// key heads `keys` and value heads `values` (every head, or a tensor-parallel rank's) in the
/// order `[q those key heads, k, v those value heads, z]` and `[b, a]`.
fn grouped_row_order(
    (nk, r, dk, dv): (usize, usize, usize, usize),
    (keys, values): (std::ops::Range<usize>, std::ops::Range<usize>),
) -> (Vec<u32>, Vec<u32>) {
    debug_assert!(keys.end <= nk && values.end <= nk * r);
    let w = 2 * dk + 2 * r * dv; // rows per key head
    let span = |start: usize, n: usize| (start..start + n).map(|i| i as u32);
    let group = |h: usize| (h / r) * w; // the first row of value head h's key head
    let mut qkvz: Vec<u32> = keys.clone().flat_map(|g| span(g * w, dk)).collect();
    qkvz.extend(keys.flat_map(|g| span(g * w + dk, dk)));
    let v = |h: usize| group(h) + 2 * dk + (h % r) * dv;
    qkvz.extend(values.clone().flat_map(|h| span(v(h), dv)));
    qkvz.extend(values.clone().flat_map(|h| span(v(h) + r * dv, dv)));
    let b = |h: usize| ((h / r) * 2 * r + h % r) as u32;
    let mut ba: Vec<u32> = values.clone().map(b).collect();
    ba.extend(values.map(|h| b(h) + r as u32));
    (qkvz, ba)
}

/// The rule's arithmetic: f64, whatever the model's dtype (a query or key near zero makes
/// some positions ill-conditioned; the state is kept in f32 between forwards, as transformers
/// keeps it).
type F = f64;

/// One forward's inputs to the gated delta rule, on the host.
struct Rule<'a> {
    cfg: &'a LinearAttentionConfig,
    b: usize,
    t: usize,
    /// `[b, t, conv_dim]`: q (`[nk, dk]`), k (`[nk, dk]`), v (`[nv, dv]`) after the convolution.
    qkv: Vec<F>,
    /// `[b, t, nv]` before the sigmoid.
    beta: Vec<F>,
    /// `[b, t, nv]` before the softplus.
    a: Vec<F>,
    /// `[b, nv, dk, dv]`, updated in place.
    state: Vec<F>,
}

/// `torch.nn.functional.softplus` (threshold 20).
fn softplus(x: F) -> F {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `x / sqrt(sum(x^2) + 1e-6)` (the FLA library's `l2norm`, as transformers has it).
fn l2norm(x: &[F]) -> Vec<F> {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<F>() + 1e-6).sqrt();
    x.iter().map(|v| v * inv).collect()
}

/// One (row, value head)'s inputs over the forward's tokens.
struct Head {
    /// `[t][dk]`, L2-normalised and scaled by `dk^-0.5`.
    q: Vec<Vec<F>>,
    /// `[t][dk]`, L2-normalised.
    k: Vec<Vec<F>>,
    /// `[t][dv]`.
    v: Vec<Vec<F>>,
    /// `[t]`: the log decay `g`.
    g: Vec<F>,
    /// `[t]`: `sigmoid(b)`.
    beta: Vec<F>,
}

/// Tokens per chunk of the chunked form (transformers' `chunk_size`).
const CHUNK: usize = 64;

impl Head {
    /// HF `torch_recurrent_gated_delta_rule` (a decode step): updates `s` (`[dk * dv]`) token by
    /// token; returns `[t * dv]`.
    fn recurrent(&self, s: &mut [F], dv: usize) -> Vec<F> {
        let t = self.g.len();
        let mut o = vec![0.0 as F; t * dv];
        let mut kv_mem = vec![0.0 as F; dv];
        for ti in 0..t {
            let (q, k, v) = (&self.q[ti], &self.k[ti], &self.v[ti]);
            let decay = self.g[ti].exp();
            s.iter_mut().for_each(|x| *x *= decay);
            kv_mem.iter_mut().for_each(|x| *x = 0.0);
            for (i, ki) in k.iter().enumerate() {
                for (m, sij) in kv_mem.iter_mut().zip(&s[i * dv..(i + 1) * dv]) {
                    *m += sij * ki;
                }
            }
            let delta: Vec<F> = v
                .iter()
                .zip(&kv_mem)
                .map(|(vj, mj)| (vj - mj) * self.beta[ti])
                .collect();
            for (i, ki) in k.iter().enumerate() {
                for (sij, dj) in s[i * dv..(i + 1) * dv].iter_mut().zip(&delta) {
                    *sij += ki * dj;
                }
            }
            let ot = &mut o[ti * dv..(ti + 1) * dv];
            for (i, qi) in q.iter().enumerate() {
                for (oj, sij) in ot.iter_mut().zip(&s[i * dv..(i + 1) * dv]) {
                    *oj += sij * qi;
                }
            }
        }
        o
    }

    /// HF `torch_chunk_gated_delta_rule` (a prompt, or several tokens after a state): chunks of
    /// [`CHUNK`] tokens, within a chunk the UT transform `(I + L)^-1` of the strictly lower
    /// `L = (beta k k^T) * decay` by forward substitution, across chunks the state; updates `s`
    /// (`[dk * dv]`), returns `[t * dv]`.
    fn chunked(&self, s: &mut [F], dv: usize) -> Vec<F> {
        let t = self.g.len();
        let dot = |a: &[F], b: &[F]| a.iter().zip(b).map(|(x, y)| x * y).sum::<F>();
        let mut o = vec![0.0 as F; t * dv];
        let mut start = 0;
        while start < t {
            let c = CHUNK.min(t - start);
            let r = start..start + c;
            let (q, k, v) = (&self.q[r.clone()], &self.k[r.clone()], &self.v[r.clone()]);
            let (g, beta) = (&self.g[r.clone()], &self.beta[r]);
            let mut cum = vec![0.0 as F; c];
            let mut acc = 0.0 as F;
            for (ci, gi) in cum.iter_mut().zip(g) {
                acc += gi;
                *ci = acc;
            }
            let pair = |i: usize, j: usize| (cum[i] - cum[j]).exp(); // j <= i
            let k_beta: Vec<Vec<F>> = k
                .iter()
                .zip(beta)
                .map(|(ki, b)| ki.iter().map(|x| x * b).collect())
                .collect();
            // (I + L)^-1 applied to v * beta and to k * beta * exp(cum).
            let mut new_values: Vec<Vec<F>> = v
                .iter()
                .zip(beta)
                .map(|(vi, b)| vi.iter().map(|x| x * b).collect())
                .collect();
            let mut k_cumdecay: Vec<Vec<F>> = k_beta
                .iter()
                .zip(&cum)
                .map(|(kb, ci)| kb.iter().map(|x| x * ci.exp()).collect())
                .collect();
            for (i, kb) in k_beta.iter().enumerate().skip(1) {
                for (j, kj) in k.iter().enumerate().take(i) {
                    let l = dot(kb, kj) * pair(i, j);
                    let (done, rest) = new_values.split_at_mut(i);
                    rest[0]
                        .iter_mut()
                        .zip(&done[j])
                        .for_each(|(x, y)| *x -= l * y);
                    let (done, rest) = k_cumdecay.split_at_mut(i);
                    rest[0]
                        .iter_mut()
                        .zip(&done[j])
                        .for_each(|(x, y)| *x -= l * y);
                }
            }
            let last = cum[c - 1];
            // v_new = new_values - k_cumdecay @ S
            let v_new: Vec<Vec<F>> = (0..c)
                .map(|i| {
                    let mut row = new_values[i].clone();
                    for (a, kc) in k_cumdecay[i].iter().enumerate() {
                        for (x, sa) in row.iter_mut().zip(&s[a * dv..(a + 1) * dv]) {
                            *x -= kc * sa;
                        }
                    }
                    row
                })
                .collect();
            for i in 0..c {
                let out = &mut o[(start + i) * dv..(start + i + 1) * dv];
                // (q exp(cum)) @ S
                let qd = cum[i].exp();
                for (a, qa) in q[i].iter().enumerate() {
                    let w = qa * qd;
                    for (x, sa) in out.iter_mut().zip(&s[a * dv..(a + 1) * dv]) {
                        *x += w * sa;
                    }
                }
                // + sum_j (q_i . k_j) decay(i, j) v_new_j
                for j in 0..=i {
                    let w = dot(&q[i], &k[j]) * pair(i, j);
                    for (x, vn) in out.iter_mut().zip(&v_new[j]) {
                        *x += w * vn;
                    }
                }
            }
            // S = S exp(cum_last) + sum_i (k_i exp(cum_last - cum_i))^T v_new_i
            let chunk_decay = last.exp();
            s.iter_mut().for_each(|x| *x *= chunk_decay);
            for i in 0..c {
                let kd = (last - cum[i]).exp();
                for (a, ka) in k[i].iter().enumerate() {
                    let w = ka * kd;
                    for (x, vn) in s[a * dv..(a + 1) * dv].iter_mut().zip(&v_new[i]) {
                        *x += w * vn;
                    }
                }
            }
            start += c;
        }
        o
    }
}

impl Rule<'_> {
    /// Runs every token (the recurrent form for one token after a state, as transformers
    /// decodes, the chunked form otherwise); returns the output `[b, t, nv, dv]`.
    fn run(&mut self, neg_a: &[F], dt_bias: &[F], has_state: bool) -> Vec<F> {
        let la = self.cfg;
        let (nk, nv, dk, dv) = (
            la.num_key_heads,
            la.num_value_heads,
            la.key_head_dim,
            la.value_head_dim,
        );
        let (b, t, cd) = (self.b, self.t, la.conv_dim());
        let r = nv / nk;
        let scale = (dk as F).powf(-0.5);
        let (qkv, beta, a) = (&self.qkv, &self.beta, &self.a);
        let recurrent = has_state && t == 1;
        // q and k of each (row, token, key head), normalised once for the value heads sharing
        // them: `[b * t * nk]` rows of `dk`.
        let (qn, kn): (Vec<Vec<F>>, Vec<Vec<F>>) = qkv
            .chunks_exact(cd)
            .flat_map(|row| {
                (0..nk).map(move |kh| {
                    let q = l2norm(&row[kh * dk..(kh + 1) * dk]);
                    let k = l2norm(&row[nk * dk + kh * dk..nk * dk + (kh + 1) * dk]);
                    (q.iter().map(|x| x * scale).collect(), k)
                })
            })
            .unzip();
        // Each (row, value head) pair is independent: its state slice and output columns.
        let mut heads: Vec<(usize, &mut [F])> =
            self.state.chunks_mut(dk * dv).enumerate().collect();
        let results: Vec<(usize, Vec<F>)> = heads
            .par_iter_mut()
            .map(|(i, s)| {
                let (bi, h) = (*i / nv, *i % nv);
                let kh = h / r;
                let row = |ti: usize| &qkv[(bi * t + ti) * cd..(bi * t + ti + 1) * cd];
                let at = |ti: usize| (bi * t + ti) * nv + h;
                let qk = |ti: usize| (bi * t + ti) * nk + kh;
                let head = Head {
                    q: (0..t).map(|ti| qn[qk(ti)].clone()).collect(),
                    k: (0..t).map(|ti| kn[qk(ti)].clone()).collect(),
                    v: (0..t)
                        .map(|ti| {
                            row(ti)[2 * nk * dk + h * dv..2 * nk * dk + (h + 1) * dv].to_vec()
                        })
                        .collect(),
                    g: (0..t)
                        .map(|ti| neg_a[h] * softplus(a[at(ti)] + dt_bias[h]))
                        .collect(),
                    beta: (0..t)
                        .map(|ti| 1.0 / (1.0 + (-beta[at(ti)]).exp()))
                        .collect(),
                };
                let o = if recurrent {
                    head.recurrent(s, dv)
                } else {
                    head.chunked(s, dv)
                };
                (*i, o)
            })
            .collect();
        let mut out = vec![0.0 as F; b * t * nv * dv];
        for (i, o) in results {
            let (bi, h) = (i / nv, i % nv);
            for ti in 0..t {
                let at = ((bi * t + ti) * nv + h) * dv;
                out[at..at + dv].copy_from_slice(&o[ti * dv..(ti + 1) * dv]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{grouped_row_order, Rule, F};
    use crate::models::config::{LinearAttentionConfig, LinearAttentionLayout};
    use crate::models::layers::gated_delta_step::{decode_step, DecayParams, StepInputs};

    /// Deterministic values in about [-scale, scale].
    fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) as f32 * 0.618).sin() * scale)
            .collect()
    }

    #[test]
    fn gated_delta_device_step_matches_the_host_recurrence() {
        // 2 key heads shared by 3 value heads each, batch 2.
        let cfg = LinearAttentionConfig {
            num_key_heads: 2,
            num_value_heads: 6,
            key_head_dim: 8,
            value_head_dim: 5,
            conv_kernel_dim: 4,
            layout: LinearAttentionLayout::Separate,
        };
        let (b, nv, dk, dv, cd) = (2, 6, 8, 5, cfg.conv_dim());
        let mixed = values(b * cd, 1, 1.0);
        let beta = values(b * nv, 2, 3.0);
        // One past softplus' threshold of 20.
        let mut a = values(b * nv, 3, 4.0);
        a[0] = 25.0;
        let state = values(b * nv * dk * dv, 4, 0.5);
        let neg_a: Vec<f32> = values(nv, 5, 1.0).iter().map(|x| -x.exp()).collect();
        let dt_bias = values(nv, 6, 1.0);

        let wide = |v: &[f32]| v.iter().map(|&x| x as F).collect::<Vec<F>>();
        let mut rule = Rule {
            cfg: &cfg,
            b,
            t: 1,
            qkv: wide(&mixed),
            beta: wide(&beta),
            a: wide(&a),
            state: wide(&state),
        };
        let host_out = rule.run(&wide(&neg_a), &wide(&dt_bias), true);

        let cpu = Device::Cpu;
        let params = DecayParams {
            neg_a: Tensor::new(neg_a.as_slice(), &cpu).unwrap(),
            dt_bias: Tensor::new(dt_bias.as_slice(), &cpu).unwrap(),
        };
        let mixed = Tensor::from_vec(mixed, (b, 1, cd), &cpu).unwrap();
        let beta = Tensor::from_vec(beta, (b, 1, nv), &cpu).unwrap();
        let a = Tensor::from_vec(a, (b, 1, nv), &cpu).unwrap();
        let state = Tensor::from_vec(state, (b, nv, dk, dv), &cpu).unwrap();
        let input = StepInputs {
            mixed: &mixed,
            beta: &beta,
            a: &a,
            state: &state,
        };
        let (out, new_state) = decode_step(&cfg, &params, &input).unwrap();
        assert_eq!(out.dims(), &[b, 1, nv, dv]);
        assert_eq!(new_state.dims(), &[b, nv, dk, dv]);
        let close = |device: Vec<f32>, host: &[F]| {
            assert_eq!(device.len(), host.len());
            for (i, (d, h)) in device.iter().zip(host).enumerate() {
                assert!(
                    (*d as F - h).abs() <= 1e-5 * (1.0 + h.abs()),
                    "element {i}: {d} on the device, {h} on the host"
                );
            }
        };
        close(out.flatten_all().unwrap().to_vec1().unwrap(), &host_out);
        close(
            new_state.flatten_all().unwrap().to_vec1().unwrap(),
            &rule.state,
        );
    }

    #[test]
    fn grouped_rows_become_head_major() {
        // 2 key heads, 2 value heads each, dk = 1, dv = 1: qkvz rows per key head [q k v v z z].
        let (qkvz, ba) = grouped_row_order((2, 2, 1, 1), (0..2, 0..4));
        assert_eq!(qkvz, vec![0, 6, 1, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
        assert_eq!(ba, vec![0, 1, 4, 5, 2, 3, 6, 7]);
        // A tensor-parallel rank with key head 1 and its second value head (head 3).
        let (qkvz, ba) = grouped_row_order((2, 2, 1, 1), (1..2, 3..4));
        assert_eq!(qkvz, vec![6, 7, 9, 11]);
        assert_eq!(ba, vec![5, 7]);
    }
}
