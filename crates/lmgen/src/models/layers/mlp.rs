//! Feed-forward blocks: the gated MLP of Llama-family models and GPT-2's plain MLP.

use candle_core::{Tensor, D};

use super::linear::Linear;
use super::LoadContext;
use crate::error::Result;
use crate::models::config::{Activation, ModelConfig, ProjectionLayout};

/// Applies the configured activation.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Silu => candle_nn::ops::silu(x)?,
        Activation::GeluTanh => x.gelu()?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::Relu => x.relu()?,
    })
}

/// `down(act(gate(x)) * up(x))` (HF `LlamaMLP`, `Gemma2MLP`, `Phi3MLP`).
#[derive(Debug, Clone)]
pub struct GatedMlp {
    /// `gate_proj` and `up_proj` as one `[2 * intermediate, hidden]` product (fused at load).
    gate_up_proj: Linear,
    intermediate: usize,
    down_proj: Linear,
    act: Activation,
}

impl GatedMlp {
    /// Loads `{prefix}.{gate,up,down}_proj`, or `{prefix}.{gate_up,down}_proj` (the gate's rows
    /// first) when the config stores them fused.
    pub fn load(ctx: &LoadContext<'_>, prefix: &str, cfg: &ModelConfig) -> Result<Self> {
        let (hidden, intermediate, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        match cfg.projections {
            ProjectionLayout::Separate => Self::load_separate(
                ctx,
                [
                    &format!("{prefix}.gate_proj"),
                    &format!("{prefix}.up_proj"),
                    &format!("{prefix}.down_proj"),
                ],
                (hidden, intermediate),
                bias,
                cfg.hidden_act,
            ),
            ProjectionLayout::Fused => Ok(Self {
                gate_up_proj: Linear::load(
                    ctx,
                    &format!("{prefix}.gate_up_proj"),
                    hidden,
                    2 * intermediate,
                    bias,
                )?,
                intermediate,
                down_proj: Linear::load(
                    ctx,
                    &format!("{prefix}.down_proj"),
                    intermediate,
                    hidden,
                    bias,
                )?,
                act: cfg.hidden_act,
            }),
        }
    }

    /// Loads the gate, up and down projections named `[gate, up, down]` (the gate and up fused
    /// at load) of a `(hidden, intermediate)` MLP: an expert of a sparse MoE, or a dense MLP.
    pub fn load_separate(
        ctx: &LoadContext<'_>,
        [gate, up, down]: [&str; 3],
        (hidden, intermediate): (usize, usize),
        bias: bool,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            gate_up_proj: Linear::load_fused(
                ctx,
                &[(gate, intermediate), (up, intermediate)],
                hidden,
                bias,
            )?,
            intermediate,
            down_proj: Linear::load(ctx, down, intermediate, hidden, bias)?,
            act,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(x)?; // [b, t, 2 * intermediate]
        let i = self.intermediate;
        if self.act == Activation::Silu {
            // One launch on a GPU: [b, t, 2 * intermediate] -> [b, t, intermediate]
            if let Some(h) = crate::cuda::swiglu(&gate_up, i)? {
                return self.down_proj.forward(&h);
            }
        }
        let gate = activate(&gate_up.narrow(D::Minus1, 0, i)?, self.act)?;
        let up = gate_up.narrow(D::Minus1, i, i)?;
        self.down_proj.forward(&(gate * up)?)
    }
}

/// `c_proj(act(c_fc(x)))` (HF `GPT2MLP`).
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

impl Mlp {
    /// `c_proj(act(c_fc(x)))` over loaded projections.
    pub fn new(c_fc: Linear, c_proj: Linear, act: Activation) -> Self {
        Self { c_fc, c_proj, act }
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj
            .forward(&activate(&self.c_fc.forward(x)?, self.act)?)
    }
}
