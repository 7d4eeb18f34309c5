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

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::mlp::GatedMlp;
use super::LoadContext;
use crate::error::{Error, Result};
use crate::models::config::{ModelConfig, MoeConfig, MoeLayout};

/// A sparse MoE MLP.
#[derive(Debug, Clone)]
pub struct SparseMoe {
    /// `[num_experts, hidden]`.
    gate: Linear,
    experts: Vec<GatedMlp>,
    top_k: usize,
    norm_topk_prob: bool,
}

impl SparseMoe {
    /// Loads the router and every expert of layer `prefix` (`model.layers.{i}`).
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        cfg: &ModelConfig,
        moe: &MoeConfig,
    ) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, moe.moe_intermediate_size);
        let (block, [gate, up, down]) = match moe.layout {
            MoeLayout::Qwen => ("mlp", ["gate_proj", "up_proj", "down_proj"]),
            MoeLayout::Mixtral => ("block_sparse_moe", ["w1", "w3", "w2"]),
        };
        let p = format!("{prefix}.{block}");
        let experts = (0..moe.num_experts)
            .map(|e| {
                let name = |n: &str| format!("{p}.experts.{e}.{n}");
                GatedMlp::load_separate(
                    ctx,
                    [&name(gate), &name(up), &name(down)],
                    (h, i),
                    false,
                    cfg.hidden_act,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            gate: Linear::load(ctx, &format!("{p}.gate"), h, moe.num_experts, false)?,
            experts,
            top_k: moe.num_experts_per_tok,
            norm_topk_prob: moe.norm_topk_prob || moe.layout == MoeLayout::Mixtral,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let xs = x.reshape((b * t, h))?; // [n, h]
        let logits = self.gate.forward(&xs)?.to_dtype(DType::F32)?; // [n, experts]
        let probs: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2()?;
        let routes = route(&probs, self.top_k, self.norm_topk_prob, self.experts.len())?;
        let device = x.device();
        let mut out = xs.zeros_like()?; // [n, h]
        for (expert, (tokens, weights)) in self.experts.iter().zip(&routes) {
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
        Ok(out.reshape((b, t, h))?)
    }
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
        if row.len() != num_experts || row.iter().any(|p| p.is_nan()) {
            return Err(Error::input(format!(
                "the router of a mixture-of-experts layer gave {} probabilities (NaN: {}) for {num_experts} experts",
                row.len(),
                row.iter().any(|p| p.is_nan())
            )));
        }
        let mut order: Vec<usize> = (0..num_experts).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        order.truncate(top_k);
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
