//! Gemma 4's MoE block (`Gemma4TextRouter`, `Gemma4TextExperts`): beside the dense MLP, routed on
//! the layer's input through a weightless norm and a learned `scale`, softmax over all experts,
//! top-k renormalised, then each expert's weight times its `per_expert_scale`.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use super::{unit_rms_norm, MoeSpec};
use crate::error::Result;
use crate::models::config::{Activation, ModelConfig};
use crate::models::layers::linear::Linear;
use crate::models::layers::mlp::activate;
use crate::models::layers::moe::route;
use crate::models::layers::norm::RmsNorm;
use crate::models::layers::LoadContext;
use crate::parallel::Communicator;

/// One expert: `down(act(gate(x)) * up(x))` with the gate's and up's rows stacked.
#[derive(Debug, Clone)]
struct Expert {
    /// `[2 * intermediate, hidden]`: the gate's rows, then the up's.
    gate_up: Linear,
    /// `[hidden, intermediate]`.
    down: Linear,
}

/// The sparse MoE of a layer (`Gemma4TextRouter`, `Gemma4TextExperts`) and its three norms.
#[derive(Debug, Clone)]
pub(super) struct Moe {
    /// `router.proj`, `[num_experts, hidden]`.
    proj: Linear,
    /// `router.scale * hidden^-0.5`, `[hidden]`.
    scale: Tensor,
    /// `router.per_expert_scale`.
    per_expert_scale: Vec<f32>,
    /// `[hidden]` ones: the router norm's missing weight.
    ones: Tensor,
    /// Experts `first_expert..` of the router's: all of them, or, split across tensor-parallel
    /// ranks (expert parallel), this rank's, whose outputs `reduce` sums over the ranks before
    /// `post_feedforward_layernorm_2`. The router is whole on every rank.
    experts: Vec<Expert>,
    first_expert: usize,
    reduce: Option<Arc<dyn Communicator>>,
    intermediate: usize,
    top_k: usize,
    act: Activation,
    eps: f32,
    post_feedforward_layernorm_1: RmsNorm,
    pre_feedforward_layernorm_2: RmsNorm,
    post_feedforward_layernorm_2: RmsNorm,
}

impl Moe {
    pub(super) fn load(
        ctx: &LoadContext<'_>,
        cfg: &ModelConfig,
        p: &str,
        spec: MoeSpec,
    ) -> Result<Self> {
        let (h, n, i) = (cfg.hidden_size, spec.num_experts, spec.intermediate_size);
        let mine = match ctx.shard {
            Some(shard) => shard.split(n, "num_experts")?,
            None => 0..n,
        };
        let gate_up = ctx.weight(&format!("{p}.experts.gate_up_proj"), &[n, 2 * i, h])?;
        let down = ctx.weight(&format!("{p}.experts.down_proj"), &[n, h, i])?;
        let experts = mine
            .clone()
            .map(|e| {
                let name = |w: &str| format!("{p}.experts.{e}.{w}");
                Ok(Expert {
                    gate_up: Linear::from_weight(
                        ctx,
                        &name("gate_up_proj"),
                        gate_up.get(e)?,
                        None,
                    )?,
                    down: Linear::from_weight(ctx, &name("down_proj"), down.get(e)?, None)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let scale = ctx.tensor_as(&format!("{p}.router.scale"), &[h], DType::F32)?;
        let scale = (scale * (h as f64).powf(-0.5))?.to_dtype(ctx.dtype)?;
        let norm =
            |name: &str| RmsNorm::load(ctx, &format!("{p}.{name}"), h, cfg.norm_eps, cfg.norm);
        Ok(Self {
            proj: Linear::load(ctx, &format!("{p}.router.proj"), h, n, false)?,
            scale,
            per_expert_scale: ctx
                .tensor_as(&format!("{p}.router.per_expert_scale"), &[n], DType::F32)?
                .to_vec1()?,
            ones: Tensor::ones(h, ctx.dtype, ctx.device)?,
            experts,
            first_expert: mine.start,
            reduce: ctx.shard.map(|s| s.comm().clone()),
            intermediate: i,
            top_k: spec.top_k,
            act: cfg.hidden_act,
            eps: cfg.norm_eps as f32,
            post_feedforward_layernorm_1: norm("post_feedforward_layernorm_1")?,
            pre_feedforward_layernorm_2: norm("pre_feedforward_layernorm_2")?,
            post_feedforward_layernorm_2: norm("post_feedforward_layernorm_2")?,
        })
    }

    /// The MLP's output `mlp` and the layer's input `residual` (both `[b, t, hidden]`) ->
    /// `post_1(mlp) + post_2(experts(pre_2(residual)))`, routed on `residual`.
    pub(super) fn forward(&self, mlp: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (b, t, h) = residual.dims3()?;
        let xs = residual.reshape((b * t, h))?; // [n, h]
        let routed = unit_rms_norm(&xs, &self.ones, self.eps)?.broadcast_mul(&self.scale)?;
        let logits = self.proj.forward(&routed)?.to_dtype(DType::F32)?; // [n, experts]
        let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2()?;
        let routes = route(&probs, self.top_k, true, logits.dim(1)?)?;
        let routes = &routes[self.first_expert..]; // this rank's experts
        let inputs = self.pre_feedforward_layernorm_2.forward(&xs)?;
        let device = xs.device();
        let mut out = inputs.zeros_like()?; // [n, h]
        for (e, (expert, (tokens, weights))) in self.experts.iter().zip(routes).enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let idx = Tensor::new(tokens.as_slice(), device)?; // [n_e]
            let gu = expert.gate_up.forward(&inputs.index_select(&idx, 0)?)?; // [n_e, 2i]
            let i = self.intermediate;
            let hidden = (activate(&gu.narrow(D::Minus1, 0, i)?, self.act)?
                * gu.narrow(D::Minus1, i, i)?)?;
            let y = expert.down.forward(&hidden)?; // [n_e, h]
            let scale = self.per_expert_scale[self.first_expert + e];
            let w: Vec<f32> = weights.iter().map(|w| w * scale).collect();
            let w = Tensor::new(w.as_slice(), device)?
                .to_dtype(y.dtype())?
                .unsqueeze(1)?; // [n_e, 1]
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        if let Some(comm) = &self.reduce {
            out = comm.all_reduce_sum(&out)?; // every rank's experts
        }
        let experts = self
            .post_feedforward_layernorm_2
            .forward(&out.reshape((b, t, h))?)?;
        Ok((self.post_feedforward_layernorm_1.forward(mlp)? + experts)?)
    }
}
