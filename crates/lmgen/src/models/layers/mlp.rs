//! Feed-forward blocks: the gated MLP of Llama-family models and GPT-2's plain MLP.

use candle_core::{Tensor, D};

use super::linear::Linear;
use super::LoadContext;
use crate::error::Result;
use crate::models::config::Activation;

/// Applies the configured activation.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Silu => candle_nn::ops::silu(x)?,
        Activation::GeluTanh => x.gelu()?,
        Activation::Gelu => x.gelu_erf()?,
    })
}

/// `down(act(gate(x)) * up(x))` (HF `LlamaMLP`, `Gemma2MLP`).
#[derive(Debug, Clone)]
pub struct GatedMlp {
    /// `gate_proj` and `up_proj` as one `[2 * intermediate, hidden]` product (fused at load).
    gate_up_proj: Linear,
    intermediate: usize,
    down_proj: Linear,
    act: Activation,
}

impl GatedMlp {
    /// Loads `{prefix}.{gate,up,down}_proj`.
    pub fn load(
        ctx: &LoadContext<'_>,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        bias: bool,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            gate_up_proj: Linear::load_fused(
                ctx,
                &[
                    (&format!("{prefix}.gate_proj"), intermediate),
                    (&format!("{prefix}.up_proj"), intermediate),
                ],
                hidden,
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
            act,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(x)?; // [b, t, 2 * intermediate]
        let i = self.intermediate;
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
    /// Loads GPT-2's `{prefix}.c_fc` and `{prefix}.c_proj` (Conv1D layout).
    pub fn load_gpt2(
        ctx: &LoadContext<'_>,
        prefix: &str,
        hidden: usize,
        inner: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            c_fc: Linear::load_conv1d(ctx, &format!("{prefix}.c_fc"), hidden, inner)?,
            c_proj: Linear::load_conv1d(ctx, &format!("{prefix}.c_proj"), inner, hidden)?,
            act,
        })
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj
            .forward(&activate(&self.c_fc.forward(x)?, self.act)?)
    }
}
