//! Sparse mixture-of-experts settings: which layers route each token to `num_experts_per_tok` of
//! `num_experts` gated MLPs, and how the router's weights are normalised.

use serde::Deserialize;

use super::ConfigFile;
use crate::error::Result;

/// How a checkpoint names its experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoeLayout {
    /// `mlp.gate` (router) and `mlp.experts.{e}.{gate,up,down}_proj` (Qwen3-MoE, Qwen2-MoE).
    Qwen,
    /// `block_sparse_moe.gate` and `block_sparse_moe.experts.{e}.{w1,w3,w2}` (Mixtral: w1 is the
    /// gate, w3 the up and w2 the down projection).
    Mixtral,
    /// gpt-oss: `mlp.router` (with a bias) and every expert stacked in `mlp.experts.gate_up_proj`
    /// `[experts, hidden, 2 * intermediate]` (gate and up columns interleaved) and
    /// `mlp.experts.down_proj` `[experts, intermediate, hidden]`, with biases; the experts' SwiGLU
    /// is clamped; the router takes the top-k logits, then their softmax.
    GptOss,
}

/// A sparse MoE MLP (HF `Qwen3MoeSparseMoeBlock`, `MixtralSparseMoeBlock`).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// `num_experts` (`num_local_experts`).
    pub num_experts: usize,
    /// `num_experts_per_tok`: experts each token is routed to.
    pub num_experts_per_tok: usize,
    /// `moe_intermediate_size` (Mixtral: `intermediate_size`).
    pub moe_intermediate_size: usize,
    /// `norm_topk_prob`: the top-k routing probabilities are divided by their sum.
    pub norm_topk_prob: bool,
    /// One entry per layer: whether its MLP is sparse (`mlp_only_layers`, `decoder_sparse_step`);
    /// the others keep the dense MLP of `intermediate_size`.
    pub sparse_layers: Vec<bool>,
    /// How the checkpoint names the experts' tensors.
    pub layout: MoeLayout,
    /// A shared expert every token goes through, of this width, scaled by the sigmoid of
    /// `shared_expert_gate` (`shared_expert_intermediate_size`; Qwen3-Next, Qwen2-MoE).
    pub shared_expert_intermediate_size: Option<usize>,
}

/// Qwen3-MoE's MoE fields of `config.json`.
#[derive(Debug, Deserialize)]
pub struct QwenMoeFields {
    #[serde(alias = "num_local_experts")]
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    moe_intermediate_size: Option<usize>,
    norm_topk_prob: Option<bool>,
    decoder_sparse_step: Option<usize>,
    #[serde(default)]
    mlp_only_layers: Option<Vec<usize>>,
    shared_expert_intermediate_size: Option<usize>,
}

/// An architecture's defaults for absent MoE fields.
#[derive(Debug, Clone, Copy)]
pub struct MoeDefaults {
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub norm_topk_prob: bool,
    /// `None`: the architecture has no shared expert (the field is not read).
    pub shared_expert_intermediate_size: Option<usize>,
}

/// `Qwen3MoeConfig`'s: 128 experts, 8 per token, 768 wide, no normalisation, no shared expert.
pub const QWEN3_MOE: MoeDefaults = MoeDefaults {
    num_experts: 128,
    num_experts_per_tok: 8,
    moe_intermediate_size: 768,
    norm_topk_prob: false,
    shared_expert_intermediate_size: None,
};

impl QwenMoeFields {
    /// With `Qwen3MoeConfig`'s defaults ([`QWEN3_MOE`]; every layer sparse).
    pub fn lower(self, num_hidden_layers: usize, file: &ConfigFile<'_>) -> Result<MoeConfig> {
        self.lower_with(num_hidden_layers, file, &QWEN3_MOE)
    }

    /// With an architecture's own defaults.
    pub fn lower_with(
        self,
        num_hidden_layers: usize,
        file: &ConfigFile<'_>,
        defaults: &MoeDefaults,
    ) -> Result<MoeConfig> {
        let step = self.decoder_sparse_step.unwrap_or(1);
        if step == 0 {
            return Err(file.err(format!(
                "`{}decoder_sparse_step` must be at least 1",
                file.prefix
            )));
        }
        let num_experts = self.num_experts.unwrap_or(defaults.num_experts);
        let dense = self.mlp_only_layers.unwrap_or_default();
        Ok(MoeConfig {
            num_experts,
            num_experts_per_tok: self
                .num_experts_per_tok
                .unwrap_or(defaults.num_experts_per_tok),
            moe_intermediate_size: self
                .moe_intermediate_size
                .unwrap_or(defaults.moe_intermediate_size),
            norm_topk_prob: self.norm_topk_prob.unwrap_or(defaults.norm_topk_prob),
            sparse_layers: (0..num_hidden_layers)
                .map(|i| !dense.contains(&i) && num_experts > 0 && (i + 1) % step == 0)
                .collect(),
            layout: MoeLayout::Qwen,
            shared_expert_intermediate_size: defaults
                .shared_expert_intermediate_size
                .map(|d| self.shared_expert_intermediate_size.unwrap_or(d))
                .filter(|&n| n > 0),
        })
    }
}

impl MoeConfig {
    /// Routing needs at least one expert and no more experts per token than experts.
    pub(crate) fn check(&self, num_hidden_layers: usize, file: &ConfigFile<'_>) -> Result<()> {
        let p = file.prefix;
        if self.sparse_layers.iter().any(|&s| s) && self.num_experts == 0 {
            return Err(file.err(format!("`{p}num_experts` must be greater than 0")));
        }
        if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.num_experts {
            return Err(file.err(format!(
                "`{p}num_experts_per_tok` must be in [1, num_experts = {}], got {}",
                self.num_experts, self.num_experts_per_tok
            )));
        }
        if self.moe_intermediate_size == 0 {
            return Err(file.err(format!("`{p}moe_intermediate_size` must be greater than 0")));
        }
        if self.sparse_layers.len() != num_hidden_layers {
            return Err(file.err(format!(
                "{} MoE layer flags for {num_hidden_layers} layers",
                self.sparse_layers.len()
            )));
        }
        Ok(())
    }
}
