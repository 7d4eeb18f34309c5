//! Mixtures of experts in GGUF files: llama.cpp stacks each projection of every expert of a layer
//! into one `[n_expert, out, in]` tensor; lmgen's MoE layer (as HF) loads one module per expert,
//! so expert `E` is served under its HF name as the `E`-th slice of the stacked tensor. Also the
//! MoE fields of the config the metadata stands for.

use serde_json::{json, Map, Value};

use super::{GgufArch, GgufWeights};
use crate::error::Result;

/// How llama.cpp writes a mixture of experts: each projection of every expert of layer N stacked
/// into one `[n_expert, out, in]` tensor (`blk.N.ffn_{gate,up,down}_exps`), the router as
/// `blk.N.ffn_gate_inp` (in the architecture's `layer_names`); `{arch}.expert_count` and
/// `{arch}.expert_used_count` in the metadata. HF keeps one module per expert, so expert `E` of a
/// stacked tensor is served as its own HF tensor (a slice of the stacked one).
#[derive(Debug)]
pub struct GgufExperts {
    /// The HF module whose `{experts}.E` is expert `E` (`mlp.experts`).
    pub experts: &'static str,
    /// The HF names of an expert's gate, up and down projections.
    pub projections: [&'static str; 3],
    /// `config.json`'s field for the number of experts (`num_experts`, `num_local_experts`).
    pub count_field: &'static str,
    /// `config.json`'s field for the experts' width: `moe_intermediate_size` (from
    /// `expert_feed_forward_length`), or `None` where the experts are `intermediate_size` wide
    /// (Mixtral).
    pub width_field: Option<&'static str>,
}

/// The stacked expert tensors, in the order of [`GgufExperts::projections`].
const EXPERT_TENSORS: [&str; 3] = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"];

impl GgufArch {
    /// `blk.N.{module}.weight` split, if it is a per-layer tensor.
    fn split_layer(gguf: &str) -> Option<(&str, &str, &str)> {
        let rest = gguf.strip_prefix("blk.")?;
        let (layer, rest) = rest.split_once('.')?;
        layer.parse::<usize>().ok()?;
        let (module, kind) = rest.rsplit_once('.')?;
        Some((layer, module, kind))
    }

    /// Whether `gguf` is a stacked expert tensor of this architecture (`blk.N.ffn_up_exps.weight`).
    pub(crate) fn is_stacked_experts(&self, gguf: &str) -> bool {
        self.experts.is_some()
            && Self::split_layer(gguf)
                .is_some_and(|(_, m, kind)| kind == "weight" && EXPERT_TENSORS.contains(&m))
    }

    /// The HF name of expert `e` of stacked tensor `gguf`.
    pub(crate) fn expert_hf_name(&self, gguf: &str, e: usize) -> Option<String> {
        let x = self.experts?;
        let (layer, module, kind) = Self::split_layer(gguf)?;
        let i = EXPERT_TENSORS.iter().position(|t| *t == module)?;
        (kind == "weight").then(|| {
            format!(
                "model.layers.{layer}.{}.{e}.{}.weight",
                x.experts, x.projections[i]
            )
        })
    }

    /// The stacked GGUF tensor and the expert an HF expert weight is.
    pub(crate) fn expert_gguf_name(&self, hf: &str) -> Option<(String, usize)> {
        let x = self.experts?;
        let rest = hf.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let rest = rest.strip_prefix(x.experts)?.strip_prefix('.')?;
        let (e, rest) = rest.split_once('.')?;
        let (projection, kind) = rest.split_once('.')?;
        let i = x.projections.iter().position(|p| *p == projection)?;
        (kind == "weight").then_some(())?;
        Some((
            format!("blk.{layer}.{}.weight", EXPERT_TENSORS[i]),
            e.parse().ok()?,
        ))
    }
}

impl GgufWeights {
    /// The MoE fields of the config (experts, experts per token, their width, llama.cpp's
    /// renormalised routing); returns `intermediate_size`: `feed_forward_length`, which a MoE
    /// file may leave out when no layer is dense (then the experts' width).
    pub(super) fn experts_config(
        &self,
        x: &GgufExperts,
        config: &mut Map<String, Value>,
    ) -> Result<usize> {
        let count = self.required_usize("expert_count")?;
        let used = self.required_usize("expert_used_count")?;
        config.insert(x.count_field.into(), json!(count));
        config.insert("num_experts_per_tok".into(), json!(used));
        let dense = self.opt_usize("feed_forward_length")?.filter(|&n| n > 0);
        let Some(field) = x.width_field else {
            return dense.ok_or_else(|| {
                self.config_err(format!(
                    "GGUF metadata key `{}` is missing",
                    self.key("feed_forward_length")
                ))
            });
        };
        // llama.cpp: `expert_feed_forward_length`, else the stacked tensors' rows.
        let width = match self
            .opt_usize("expert_feed_forward_length")?
            .filter(|&n| n > 0)
        {
            Some(n) => n,
            None => self.stacked_rows().ok_or_else(|| {
                self.config_err(format!(
                    "GGUF metadata key `{}` is missing and `blk.0.ffn_gate_exps.weight` is \
                     not there to tell the experts' width",
                    self.key("expert_feed_forward_length")
                ))
            })?,
        };
        config.insert(field.into(), json!(width));
        config.insert("norm_topk_prob".into(), json!(true));
        Ok(dense.unwrap_or(width))
    }

    /// The rows of one expert of the first layer's stacked gate (the experts' width).
    fn stacked_rows(&self) -> Option<usize> {
        let info = self
            .content
            .tensor_infos
            .get("blk.0.ffn_gate_exps.weight")?;
        info.shape.dims().get(1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::super::arch::{LLAMA, MIXTRAL, QWEN3, QWEN3MOE};

    #[test]
    fn stacked_experts_are_served_one_expert_at_a_time() {
        let g = "blk.2.ffn_down_exps.weight";
        assert!(QWEN3MOE.is_stacked_experts(g) && !QWEN3.is_stacked_experts(g));
        let hf = "model.layers.2.mlp.experts.5.down_proj.weight";
        assert_eq!(QWEN3MOE.expert_hf_name(g, 5).as_deref(), Some(hf));
        assert_eq!(QWEN3MOE.expert_gguf_name(hf), Some((g.to_string(), 5)));
        let hf = "model.layers.0.block_sparse_moe.experts.1.w3.weight";
        let g = "blk.0.ffn_up_exps.weight";
        assert_eq!(MIXTRAL.expert_hf_name(g, 1).as_deref(), Some(hf));
        assert_eq!(MIXTRAL.expert_gguf_name(hf), Some((g.to_string(), 1)));
        assert_eq!(
            QWEN3MOE.hf_name("blk.1.ffn_gate_inp.weight").as_deref(),
            Some("model.layers.1.mlp.gate.weight")
        );
        assert_eq!(
            MIXTRAL.hf_name("blk.1.ffn_gate_inp.weight").as_deref(),
            Some("model.layers.1.block_sparse_moe.gate.weight")
        );
        assert_eq!(LLAMA.hf_name("blk.1.ffn_gate_inp.weight"), None);
    }
}
