//! Feed-forward blocks: the gated MLP of Llama-family models and GPT-2's plain MLP.

use candle_core::{Tensor, D};

use super::linear::{Linear, RowOutput, Rows};
use super::LoadContext;
use crate::error::Result;
use crate::models::config::{Activation, ModelConfig, ProjectionLayout};
use crate::parallel::shard::rows;
use crate::parallel::Shard;

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
        if let Some(shard) = ctx.shard {
            let (gate, up, fused) = (
                format!("{prefix}.gate_proj"),
                format!("{prefix}.up_proj"),
                format!("{prefix}.gate_up_proj"),
            );
            let gate_up = match cfg.projections {
                ProjectionLayout::Separate => GateUp::Separate(&gate, &up),
                ProjectionLayout::Fused => GateUp::Fused(&fused),
            };
            let split = MlpSplit {
                shard,
                field: "intermediate_size",
                output: RowOutput::Reduced(shard.comm().clone()),
            };
            let down = format!("{prefix}.down_proj");
            let dims = (hidden, intermediate);
            return Self::load_split(ctx, (gate_up, &down), dims, bias, cfg.hidden_act, split);
        }
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

    /// This rank's `intermediate / world_size` features of a `(hidden, intermediate)` MLP split
    /// across tensor-parallel ranks: gate and up column-parallel (each cut, then fused), down
    /// row-parallel with `split.output`.
    pub fn load_split(
        ctx: &LoadContext<'_>,
        (gate_up, down): (GateUp<'_>, &str),
        (hidden, intermediate): (usize, usize),
        bias: bool,
        act: Activation,
        split: MlpSplit<'_>,
    ) -> Result<Self> {
        let mine = split.shard.split(intermediate, split.field)?;
        let part = |prefix, out, offset| Rows {
            prefix,
            out,
            rows: rows(&mine, 1, offset),
        };
        let parts = match gate_up {
            GateUp::Separate(gate, up) => [part(gate, intermediate, 0), part(up, intermediate, 0)],
            GateUp::Fused(fused) => [
                part(fused, 2 * intermediate, 0),
                part(fused, 2 * intermediate, intermediate),
            ],
        };
        Ok(Self {
            gate_up_proj: Linear::load_rows(ctx, &parts, hidden, bias)?,
            intermediate: mine.len(),
            down_proj: Linear::load_columns(
                ctx,
                down,
                (intermediate, hidden),
                mine,
                bias,
                split.output,
            )?,
            act,
        })
    }

    /// The fused gate/up weight `[2 inter, hidden]` and `down_proj` `[hidden, inter]` (each with
    /// its bias) of a SiLU-gated MLP of whole dense layers, for [`crate::cuda::decode_layer`].
    #[allow(clippy::type_complexity)]
    pub fn dense_swiglu(&self) -> Option<((&Tensor, Option<&Tensor>), (&Tensor, Option<&Tensor>))> {
        (self.act == Activation::Silu).then_some(())?;
        Some((self.gate_up_proj.dense()?, self.down_proj.dense()?))
    }

    /// `[b, t, hidden] -> [b, t, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.act == Activation::Silu {
            // One row on a GPU: the product and SwiGLU in one launch, [b, t, intermediate].
            if let Some(h) = self.gate_up_proj.forward_swiglu(x)? {
                return self.down_proj.forward(&h);
            }
        }
        let gate_up = self.gate_up_proj.forward(x)?; // [b, t, 2 * intermediate]
        let i = self.intermediate;
        if self.act == Activation::Silu {
            // One launch on a GPU: [b, t, 2 * intermediate] -> [b, t, intermediate]
            if let Some(h) = crate::cuda::swiglu(&gate_up, i)? {
                return self.down_proj.forward(&h);
            }
            // One pass on the CPU, the same values as `silu` then `mul`.
            if let Some(h) = super::fused_cpu::swiglu(&gate_up, i)? {
                return self.down_proj.forward(&h);
            }
        }
        let gate = activate(&gate_up.narrow(D::Minus1, 0, i)?, self.act)?;
        let up = gate_up.narrow(D::Minus1, i, i)?;
        self.down_proj.forward(&(gate * up)?)
    }
}

/// Where a gated MLP's gate and up projections are stored.
#[derive(Debug, Clone, Copy)]
pub enum GateUp<'a> {
    /// `{gate}.weight` and `{up}.weight`, each `[intermediate, hidden]`.
    Separate(&'a str, &'a str),
    /// `{gate_up}.weight` `[2 * intermediate, hidden]`, the gate's rows first.
    Fused(&'a str),
}

/// How a gated MLP splits across tensor-parallel ranks.
#[derive(Debug, Clone)]
pub struct MlpSplit<'a> {
    pub shard: &'a Shard,
    /// The config field of the intermediate size, for errors.
    pub field: &'a str,
    /// Whether `down_proj` sums over the ranks itself.
    pub output: RowOutput,
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
