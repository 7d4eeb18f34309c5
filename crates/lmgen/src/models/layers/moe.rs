//! Sparse mixture of experts (HF `Qwen3MoeSparseMoeBlock`, `MixtralSparseMoeBlock`): a router
//! picks `num_experts_per_tok` of `num_experts` gated MLPs for each token, whose outputs are
//! summed, weighted by the router's probabilities.
//!
//! Routing as transformers: `softmax` of the router logits in f32, `topk` (ties to the lower
//! expert), divided by their sum when `norm_topk_prob` (always for Mixtral). Each expert then runs
//! once per forward on the tokens routed to it (gathered with `index_select`, scattered back with
//! `index_add`, experts in increasing order as transformers adds them), so a step costs the active
//! experts' weights, not a loop over tokens. The routing decision is taken on the host: the
//! `[tokens, num_experts]` probabilities are small next to the experts' weights.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use super::linear::{Linear, RowOutput};
use super::mlp::{GateUp, GatedMlp, MlpSplit};
use super::LoadContext;
use crate::error::{Error, Result};
use crate::models::config::{ModelConfig, MoeConfig, MoeLayout};
use crate::parallel::Communicator;

/// How the router's logits become each token's experts and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// `softmax` over every expert, then the top k (divided by their sum when `normalize`).
    SoftmaxTopK { normalize: bool },
    /// The top k logits, then their `softmax` (gpt-oss).
    TopKSoftmax,
}

/// gpt-oss's clamped SwiGLU: `gate = min(gate, limit)`, `up = clamp(up, -limit, limit)`,
/// `(up + 1) * gate * sigmoid(alpha * gate)`.
const GPT_OSS_ALPHA: f64 = 1.702;
const GPT_OSS_LIMIT: f64 = 7.0;

/// One expert.
#[derive(Debug, Clone)]
enum Expert {
    /// `down(act(gate(x)) * up(x))`.
    Gated(GatedMlp),
    /// gpt-oss: `down(swiglu_clamped(gate(x) + b, up(x) + b)) + b`; `gate_up` holds the gate's
    /// rows, then the up's (de-interleaved at load).
    Clamped {
        gate_up: Linear,
        intermediate: usize,
        down: Linear,
    },
}

impl Expert {
    /// `[n, hidden] -> [n, hidden]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Expert::Gated(mlp) => mlp.forward(x),
            Expert::Clamped {
                gate_up,
                intermediate,
                down,
            } => {
                let gu = gate_up.forward(x)?; // [n, 2 * i]
                let i = *intermediate;
                let gate = gu.narrow(D::Minus1, 0, i)?.clamp(f64::MIN, GPT_OSS_LIMIT)?;
                let up = gu
                    .narrow(D::Minus1, i, i)?
                    .clamp(-GPT_OSS_LIMIT, GPT_OSS_LIMIT)?;
                let glu = (&gate * candle_nn::ops::sigmoid(&(&gate * GPT_OSS_ALPHA)?)?)?;
                down.forward(&((up + 1.0)? * glu)?)
            }
        }
    }
}

/// A sparse MoE MLP.
#[derive(Debug, Clone)]
pub struct SparseMoe {
    /// `[num_experts, hidden]`.
    gate: Linear,
    experts: Vec<Expert>,
    top_k: usize,
    routing: Routing,
    /// Qwen3-Next: `shared_expert` (a gated MLP every token goes through) and
    /// `shared_expert_gate` `[1, hidden]`, whose sigmoid scales it.
    shared: Option<(GatedMlp, Linear)>,
    /// Split across tensor-parallel ranks (expert parallel): `experts` are experts
    /// `first_expert..` of the router's, the shared expert is this rank's part of its
    /// intermediate features, and the ranks' outputs are summed by one all-reduce. The router
    /// is whole on every rank, so every rank routes alike.
    first_expert: usize,
    reduce: Option<Arc<dyn Communicator>>,
}

impl SparseMoe {
    /// Loads the router and every expert of layer `prefix` (`model.layers.{i}`).
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        cfg: &ModelConfig,
        moe: &MoeConfig,
    ) -> Result<Self> {
        let (h, i, n) = (cfg.hidden_size, moe.moe_intermediate_size, moe.num_experts);
        // The router and the experts are whole; only their assignment to ranks splits.
        let whole = &LoadContext {
            shard: None,
            ..*ctx
        };
        let mine = match ctx.shard {
            Some(shard) => shard.split(n, "num_experts")?,
            None => 0..n,
        };
        let reduce = ctx.shard.map(|s| s.comm().clone());
        if moe.layout == MoeLayout::GptOss {
            let mut moe = Self::load_gpt_oss(whole, prefix, (h, i, n), moe)?;
            moe.experts = moe.experts.drain(mine.clone()).collect();
            moe.first_expert = mine.start;
            moe.reduce = reduce;
            return Ok(moe);
        }
        let (block, [gate, up, down]) = match moe.layout {
            MoeLayout::Mixtral => ("block_sparse_moe", ["w1", "w3", "w2"]),
            _ => ("mlp", ["gate_proj", "up_proj", "down_proj"]),
        };
        let p = format!("{prefix}.{block}");
        let experts = mine
            .clone()
            .map(|e| {
                let name = |n: &str| format!("{p}.experts.{e}.{n}");
                let mlp = GatedMlp::load_separate(
                    whole,
                    [&name(gate), &name(up), &name(down)],
                    (h, i),
                    false,
                    cfg.hidden_act,
                )?;
                Ok(Expert::Gated(mlp))
            })
            .collect::<Result<Vec<_>>>()?;
        let shared = match moe.shared_expert_intermediate_size {
            None => None,
            Some(si) => {
                let name = |n: &str| format!("{p}.shared_expert.{n}");
                let names = [name("gate_proj"), name("up_proj"), name("down_proj")];
                let names = [names[0].as_str(), names[1].as_str(), names[2].as_str()];
                let mlp = match ctx.shard {
                    None => GatedMlp::load_separate(ctx, names, (h, si), false, cfg.hidden_act)?,
                    // Its `down_proj` partial sums join the experts' in the one all-reduce.
                    Some(shard) => GatedMlp::load_split(
                        ctx,
                        (GateUp::Separate(names[0], names[1]), names[2]),
                        (h, si),
                        false,
                        cfg.hidden_act,
                        MlpSplit {
                            shard,
                            field: "shared_expert_intermediate_size",
                            output: RowOutput::Partial {
                                first: shard.rank() == 0,
                            },
                        },
                    )?,
                };
                let gate = Linear::load(whole, &format!("{p}.shared_expert_gate"), h, 1, false)?;
                Some((mlp, gate))
            }
        };
        Ok(Self {
            gate: Linear::load(whole, &format!("{p}.gate"), h, n, false)?,
            experts,
            top_k: moe.num_experts_per_tok,
            routing: Routing::SoftmaxTopK {
                normalize: moe.norm_topk_prob || moe.layout == MoeLayout::Mixtral,
            },
            shared,
            first_expert: mine.start,
            reduce,
        })
    }

    /// gpt-oss: the stacked experts, split per expert; the interleaved gate/up columns
    /// (`[..., ::2]` gate, `[..., 1::2]` up) become the gate's rows then the up's.
    fn load_gpt_oss(
        ctx: &LoadContext<'_>,
        prefix: &str,
        (h, i, n): (usize, usize, usize),
        moe: &MoeConfig,
    ) -> Result<Self> {
        let p = format!("{prefix}.mlp");
        let mxfp4 = ctx.contains(&format!("{p}.experts.gate_up_proj_blocks"));
        // Per expert [2i, h] and [h, i]: stored dense as [n, h, 2i] and [n, i, h], or as MXFP4
        // blocks of [n, 2i, h] and [n, h, i] (the published checkpoints).
        let (gate_up, down): (Vec<Tensor>, Vec<Tensor>) = if mxfp4 {
            (
                super::mxfp4::load_experts(
                    ctx,
                    &format!("{p}.experts.gate_up_proj"),
                    [n, 2 * i, h],
                )?,
                super::mxfp4::load_experts(ctx, &format!("{p}.experts.down_proj"), [n, h, i])?,
            )
        } else {
            let gate_up = ctx.weight(&format!("{p}.experts.gate_up_proj"), &[n, h, 2 * i])?;
            let down = ctx.weight(&format!("{p}.experts.down_proj"), &[n, i, h])?;
            let per_expert = |w: &Tensor| -> Result<Vec<Tensor>> {
                (0..n).map(|e| Ok(w.get(e)?.t()?.contiguous()?)).collect()
            };
            (per_expert(&gate_up)?, per_expert(&down)?)
        };
        let gate_up_bias = ctx.tensor(&format!("{p}.experts.gate_up_proj_bias"), &[n, 2 * i])?;
        let down_bias = ctx.tensor(&format!("{p}.experts.down_proj_bias"), &[n, h])?;
        let device = gate_up_bias.device();
        // [2i]: even columns (gate) first, then odd ones (up).
        let order: Vec<u32> = (0..i as u32)
            .map(|j| 2 * j)
            .chain((0..i as u32).map(|j| 2 * j + 1))
            .collect();
        let order = Tensor::new(order.as_slice(), device)?;
        let experts = (0..n)
            .map(|e| {
                let w = gate_up[e].index_select(&order, 0)?; // [2i, h]
                let b = gate_up_bias.get(e)?.index_select(&order, 0)?; // [2i]
                let name = format!("{p}.experts.{e}");
                let d = down[e].clone(); // [h, i]
                Ok(Expert::Clamped {
                    gate_up: Linear::from_weight(ctx, &format!("{name}.gate_up_proj"), w, Some(b))?,
                    intermediate: i,
                    down: Linear::from_weight(
                        ctx,
                        &format!("{name}.down_proj"),
                        d,
                        Some(down_bias.get(e)?),
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            gate: Linear::load(ctx, &format!("{p}.router"), h, n, true)?,
            experts,
            top_k: moe.num_experts_per_tok,
            routing: Routing::TopKSoftmax,
            shared: None,
            first_expert: 0,
            reduce: None,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let xs = x.reshape((b * t, h))?; // [n, h]
        let logits = self.gate.forward(&xs)?.to_dtype(DType::F32)?; // [n, experts]
        let n = logits.dim(1)?; // every expert, also those of other ranks
        let routes = match self.routing {
            Routing::SoftmaxTopK { normalize } => {
                let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2()?;
                route(&probs, self.top_k, normalize, n)?
            }
            Routing::TopKSoftmax => route_top_logits(&logits.to_vec2()?, self.top_k, n)?,
        };
        let routes = &routes[self.first_expert..];
        let device = x.device();
        let mut out = xs.zeros_like()?; // [n, h]
        for (expert, (tokens, weights)) in self.experts.iter().zip(routes) {
            if tokens.is_empty() {
                continue;
            }
            let idx = Tensor::new(tokens.as_slice(), device)?; // [n_e]
            let y = expert.forward(&xs.index_select(&idx, 0)?)?; // [n_e, h]
            let w = Tensor::new(weights.as_slice(), device)?
                .to_dtype(y.dtype())?
                .unsqueeze(1)?; // [n_e, 1]
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        if let Some((mlp, gate)) = &self.shared {
            // expert_output + sigmoid(shared_expert_gate(x)) * shared_expert(x)
            let g = candle_nn::ops::sigmoid(&gate.forward(&xs)?)?; // [n, 1]
            out = (out + mlp.forward(&xs)?.broadcast_mul(&g)?)?;
        }
        if let Some(comm) = &self.reduce {
            out = comm.all_reduce_sum(&out)?; // every rank's experts
        }
        Ok(out.reshape((b, t, h))?)
    }
}

/// gpt-oss's routing: each token's `top_k` largest logits (ties to the lower expert), weighted
/// by their `softmax`.
pub fn route_top_logits(
    logits: &[Vec<f32>],
    top_k: usize,
    num_experts: usize,
) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
    let mut routes = vec![(Vec::new(), Vec::new()); num_experts];
    for (token, row) in logits.iter().enumerate() {
        let order = top(row, top_k, num_experts)?;
        let max = order.first().map_or(0.0, |&e| row[e]);
        let exps: Vec<f32> = order.iter().map(|&e| (row[e] - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        for (e, x) in order.into_iter().zip(exps) {
            routes[e].0.push(token as u32);
            routes[e].1.push(x / sum);
        }
    }
    Ok(routes)
}

/// The indices of the `k` largest of `row` (`torch.topk`: ties to the lower index), largest
/// first; an error for a row of the wrong width or with NaN.
fn top(row: &[f32], k: usize, num_experts: usize) -> Result<Vec<usize>> {
    if row.len() != num_experts || row.iter().any(|p| p.is_nan()) {
        return Err(Error::input(format!(
            "the router of a mixture-of-experts layer gave {} values (NaN: {}) for {num_experts} experts",
            row.len(),
            row.iter().any(|p| p.is_nan())
        )));
    }
    let mut order: Vec<usize> = (0..num_experts).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(k);
    Ok(order)
}

/// Per expert, the tokens routed to it and their weights: each token's `top_k` most probable
/// experts (`torch.topk`: ties to the lower index), their probabilities divided by their sum
/// when `normalize`. Tokens come in increasing order within an expert.
pub fn route(
    probs: &[Vec<f32>],
    top_k: usize,
    normalize: bool,
    num_experts: usize,
) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
    let mut routes = vec![(Vec::new(), Vec::new()); num_experts];
    for (token, row) in probs.iter().enumerate() {
        let order = top(row, top_k, num_experts)?;
        let sum: f32 = order.iter().map(|&e| row[e]).sum();
        for e in order {
            let w = if normalize { row[e] / sum } else { row[e] };
            routes[e].0.push(token as u32);
            routes[e].1.push(w);
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_goes_to_its_top_k_experts_with_their_weights() -> Result<()> {
        let probs = vec![vec![0.1, 0.6, 0.3], vec![0.4, 0.2, 0.4]];
        let routes = route(&probs, 2, false, 3)?;
        assert_eq!(routes[0], (vec![1], vec![0.4]));
        assert_eq!(routes[1], (vec![0], vec![0.6]));
        // A tie goes to the lower expert: token 1 picks 0 and 2, in that order.
        assert_eq!(routes[2], (vec![0, 1], vec![0.3, 0.4]));
        let normalized = route(&probs, 2, true, 3)?;
        assert!((normalized[1].1[0] - 0.6 / 0.9).abs() < 1e-6);
        assert!((normalized[2].1[1] - 0.5).abs() < 1e-6);
        Ok(())
    }
}
