//! What llama.cpp's converter writes for each architecture lmgen reads from GGUF files, as its
//! differences from Llama: one [`GgufArch`] constant per architecture, which that architecture's
//! row in [`crate::models::registry`] names; the tensor names (GGUF <-> HF); and the HF
//! `config.json` a file's metadata stands for (transformers' `GGUF_CONFIG_MAPPING`, with
//! llama.cpp's loader defaults where a key is absent).

use candle_core::quantized::gguf_file::Value as Meta;
use serde_json::{json, Map, Value};

use super::{meta_u64, GgufExperts, GgufWeights};
use crate::error::{Error, Result};

/// How llama.cpp's converter (`convert_hf_to_gguf.py`) writes one architecture, where it differs
/// from Llama.
#[derive(Debug)]
pub struct GgufArch {
    /// `general.architecture`, which also prefixes the architecture's metadata keys.
    pub name: &'static str,
    /// q and k rows permuted into llama.cpp's interleaved rotary layout (`LlamaModel.permute`);
    /// put back in HF order at load.
    pub permuted_qk: bool,
    /// Per-layer tensors named otherwise than Llama's: GGUF `blk.N.{0}` holds HF
    /// `model.layers.N.{1}`. Looked up before Llama's names.
    pub layer_names: &'static [(&'static str, &'static str)],
    /// Norm weights stored as Gemma's `1 + w` (`Gemma3Model.norm_shift`, the same f32 sum as HF's
    /// `Gemma3RMSNorm`): the stored value is the multiplier.
    pub norm_shift: bool,
    /// The MLP activation, which llama.cpp's graph fixes per architecture (HF `hidden_act`).
    pub hidden_act: &'static str,
    /// Optional numbers: `{name}.{0}` becomes `config.json`'s `{1}`. 0 reads as absent, as llama.cpp
    /// treats these keys.
    pub numbers: &'static [(&'static str, &'static str)],
    /// Sliding-window layers, read as llama.cpp's `load_swa_pattern(ml, period)` does, with this
    /// default period; sliding layers rotate with `rope.freq_base_swa`.
    pub swa_period: Option<usize>,
    /// `query_pre_attn_scalar` from llama.cpp's Gemma 3 attention scale: `key_length`, or
    /// `hidden / heads` for the 62-layer 27B (`llama_model_gemma3::load_arch_hparams`).
    pub gemma_query_scale: bool,
    /// Metadata keys llama.cpp honours but lmgen does not implement for this architecture: a
    /// non-zero value is refused (key, what it means).
    pub unsupported: &'static [(&'static str, &'static str)],
    /// A mixture of experts: its experts stacked as llama.cpp writes them (`None`: a dense MLP).
    pub experts: Option<&'static GgufExperts>,
}

/// `llama` (Mistral too: GGUF keeps no sliding window for it).
pub const LLAMA: GgufArch = GgufArch {
    name: "llama",
    permuted_qk: true,
    layer_names: &[],
    norm_shift: false,
    hidden_act: "silu",
    numbers: &[],
    swa_period: None,
    gemma_query_scale: false,
    unsupported: &[],
    experts: None,
};

/// `qwen2`: Llama's tensors, not permuted; q/k/v biases.
pub const QWEN2: GgufArch = GgufArch {
    name: "qwen2",
    permuted_qk: false,
    ..LLAMA
};

/// `qwen3`: Qwen2's, plus the per-head q/k norms.
pub const QWEN3: GgufArch = GgufArch {
    name: "qwen3",
    layer_names: &[
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
    ],
    ..QWEN2
};

/// `gemma3`: four norms per layer (`ffn_norm` is the pre-feedforward one), each stored `1 + w`;
/// GeLU; sliding layers with their own RoPE base; no `output.weight` (tied).
pub const GEMMA3: GgufArch = GgufArch {
    name: "gemma3",
    permuted_qk: false,
    layer_names: &[
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ],
    norm_shift: true,
    hidden_act: "gelu_pytorch_tanh",
    numbers: &[("final_logit_softcapping", "final_logit_softcapping")],
    swa_period: Some(6),
    gemma_query_scale: true,
    unsupported: &[],
    experts: None,
};

/// `qwen3moe` (HF `qwen3_moe`): Qwen3's attention; every layer a mixture of experts, routed as
/// llama.cpp routes it (`build_moe_ffn` with `norm_w`: the top probabilities always renormalised,
/// HF's `norm_topk_prob`, which the Qwen3 MoE checkpoints set).
pub const QWEN3MOE: GgufArch = GgufArch {
    name: "qwen3moe",
    layer_names: &[
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
        ("ffn_gate_inp", "mlp.gate"),
    ],
    unsupported: &[("expert_weights_scale", "scaled expert weights")],
    experts: Some(&GgufExperts {
        experts: "mlp.experts",
        projections: ["gate_proj", "up_proj", "down_proj"],
        count_field: "num_experts",
        width_field: Some("moe_intermediate_size"),
    }),
    ..QWEN3
};

/// Mixtral (HF `mixtral`): written as `llama` (q and k permuted) with `llama.expert_count`
/// experts of `feed_forward_length` (HF `intermediate_size`), `w1` gate, `w3` up, `w2` down.
pub const MIXTRAL: GgufArch = GgufArch {
    layer_names: &[("ffn_gate_inp", "block_sparse_moe.gate")],
    experts: Some(&GgufExperts {
        experts: "block_sparse_moe.experts",
        projections: ["w1", "w3", "w2"],
        count_field: "num_local_experts",
        width_field: None,
    }),
    ..LLAMA
};

/// `phi3`: `attn_qkv` and `ffn_up` (gate rows then up rows) kept fused as HF stores them;
/// `rope.dimension_count` gives the partial rotary factor; a sliding window on every layer, as HF
/// runs it (llama.cpp turns Phi-3's off).
pub const PHI3: GgufArch = GgufArch {
    name: "phi3",
    permuted_qk: false,
    layer_names: &[
        ("attn_qkv", "self_attn.qkv_proj"),
        ("ffn_up", "mlp.gate_up_proj"),
    ],
    numbers: &[("attention.sliding_window", "sliding_window")],
    ..LLAMA
};

/// `olmo2`: norms after attention and the MLP only; q/k norms over the whole projection.
pub const OLMO2: GgufArch = GgufArch {
    name: "olmo2",
    permuted_qk: false,
    layer_names: &[
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ],
    unsupported: &[(
        "attention.sliding_window",
        "OLMo 3's sliding-window layers (written under `olmo2`)",
    )],
    ..LLAMA
};

/// `granite`: Llama's tensors (q/k permuted) and its four multipliers.
pub const GRANITE: GgufArch = GgufArch {
    name: "granite",
    numbers: &[
        ("attention.scale", "attention_multiplier"),
        ("embedding_scale", "embedding_multiplier"),
        ("residual_scale", "residual_multiplier"),
        ("logit_scale", "logits_scaling"),
    ],
    ..LLAMA
};

/// Llama's per-layer tensor names (`blk.N.{gguf}`) and the HF modules they hold
/// (`model.layers.N.{hf}`).
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Top-level tensors: GGUF name, HF name.
const TOP_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

impl GgufArch {
    fn layers(&self) -> impl Iterator<Item = &(&'static str, &'static str)> {
        self.layer_names.iter().chain(LAYER_NAMES.iter())
    }

    /// The GGUF name of an HF tensor name, if it has one.
    pub(crate) fn gguf_name(&self, hf: &str) -> Option<String> {
        if let Some((g, _)) = TOP_NAMES.iter().find(|(_, h)| *h == hf) {
            return Some((*g).to_string());
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let (module, kind) = rest.rsplit_once('.')?;
        let (g, _) = self.layers().find(|(_, h)| *h == module)?;
        Some(format!("blk.{layer}.{g}.{kind}"))
    }

    /// The HF name of a GGUF tensor name, if lmgen's model has one.
    pub(crate) fn hf_name(&self, gguf: &str) -> Option<String> {
        if let Some((_, h)) = TOP_NAMES.iter().find(|(g, _)| *g == gguf) {
            return Some((*h).to_string());
        }
        let rest = gguf.strip_prefix("blk.")?;
        let (layer, rest) = rest.split_once('.')?;
        layer.parse::<usize>().ok()?;
        let (module, kind) = rest.rsplit_once('.')?;
        if kind != "weight" && kind != "bias" {
            return None;
        }
        let (_, h) = self.layers().find(|(g, _)| *g == module)?;
        Some(format!("model.layers.{layer}.{h}.{kind}"))
    }
}

impl GgufWeights {
    /// `{arch}.{key}`.
    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch.name)
    }

    /// The HF `config.json` this file describes.
    pub(crate) fn config_json(&self) -> Result<Value> {
        let arch = self.arch;
        for (key, what) in arch.unsupported {
            if let Some(v) = self.opt_f64(key)?.filter(|v| *v != 0.0) {
                return Err(Error::unsupported(format!(
                    "`{}`: `{}` = {v}: {what} are not implemented",
                    self.path.display(),
                    self.key(key)
                )));
            }
        }
        let hidden = self.required_usize("embedding_length")?;
        let layers = self.required_usize("block_count")?;
        let head_dim = match self.opt_usize("attention.key_length")? {
            Some(d) => d,
            None => hidden / self.n_head,
        };
        if let Some(v) = self.opt_usize("attention.value_length")? {
            if v != head_dim {
                return Err(self.config_err(format!(
                    "GGUF metadata: `attention.value_length` ({v}) differs from \
                     `attention.key_length` ({head_dim}); lmgen's attention needs them equal"
                )));
            }
        }
        let mut config = Map::new();
        if let Some(factor) = self.partial_rotary_factor(head_dim)? {
            config.insert("partial_rotary_factor".into(), json!(factor));
        }
        let embed = self.names.get("model.embed_tokens.weight").ok_or_else(|| {
            super::weights_error(&self.path, "tensor `token_embd.weight` not found".into())
        })?;
        let vocab = self.content.tensor_infos[&embed.gguf].shape.dims()[0];
        config.insert("model_type".into(), json!(self.model_type));
        config.insert("vocab_size".into(), json!(vocab));
        config.insert("hidden_size".into(), json!(hidden));
        let intermediate = match arch.experts {
            Some(x) => self.experts_config(x, &mut config)?,
            None => self.required_usize("feed_forward_length")?,
        };
        config.insert("intermediate_size".into(), json!(intermediate));
        config.insert("num_hidden_layers".into(), json!(layers));
        config.insert("num_attention_heads".into(), json!(self.n_head));
        config.insert("num_key_value_heads".into(), json!(self.n_kv_head));
        config.insert("head_dim".into(), json!(head_dim));
        if let Some(n) = self.opt_usize("context_length")? {
            config.insert("max_position_embeddings".into(), json!(n));
        }
        let eps = self
            .opt_f64("attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| {
                self.config_err(format!(
                    "GGUF metadata key `{}` is missing",
                    self.key("attention.layer_norm_rms_epsilon")
                ))
            })?;
        config.insert("rms_norm_eps".into(), json!(eps));
        config.insert(
            "tie_word_embeddings".into(),
            json!(!self.names.contains_key("lm_head.weight")),
        );
        let bias = self
            .names
            .contains_key("model.layers.0.self_attn.q_proj.bias");
        config.insert("attention_bias".into(), json!(bias));
        config.insert("hidden_act".into(), json!(arch.hidden_act));
        for (key, field) in arch.numbers {
            if let Some(x) = self.opt_f64(key)?.filter(|x| *x != 0.0) {
                config.insert((*field).into(), json!(x));
            }
        }
        let theta = self.opt_f64("rope.freq_base")?.unwrap_or(10_000.0);
        let scaling = self.rope_scaling()?;
        match arch.swa_period {
            None => {
                config.insert("rope_theta".into(), json!(theta));
                if let Some(scaling) = scaling {
                    config.insert("rope_scaling".into(), scaling);
                }
            }
            Some(period) => {
                let mut full = scaling.unwrap_or_else(|| json!({"rope_type": "default"}));
                full["rope_theta"] = json!(theta);
                self.sliding_layers(&mut config, period, layers, full)?;
            }
        }
        if arch.gemma_query_scale {
            let scalar = if layers == 62 {
                hidden / self.n_head
            } else {
                head_dim
            };
            config.insert("query_pre_attn_scalar".into(), json!(scalar));
        }
        for (hf, key) in [
            ("bos_token_id", "bos_token_id"),
            ("eos_token_id", "eos_token_id"),
            ("pad_token_id", "padding_token_id"),
        ] {
            if let Some(id) = self.token_id(key) {
                config.insert(hf.into(), json!(id));
            }
        }
        Ok(Value::Object(config))
    }

    /// `rope.dimension_count / head_dim` when it is not 1 (Phi-4-mini's partial rotary). The
    /// rotated dimensions are the first of each head in HF's layout, which a permuted (Llama)
    /// layout cannot express.
    fn partial_rotary_factor(&self, head_dim: usize) -> Result<Option<f64>> {
        let Some(rot) = self.opt_usize("rope.dimension_count")? else {
            return Ok(None);
        };
        if rot == head_dim {
            return Ok(None);
        }
        let factor = rot as f64 / head_dim as f64;
        if self.arch.permuted_qk || rot == 0 || rot > head_dim || rot % 2 != 0 {
            return Err(Error::unsupported(format!(
                "`{}`: `{}` is {rot} but the head dimension is {head_dim}; partial rotary \
                 embeddings are implemented for an even count below the head dimension, in \
                 architectures whose q/k rows llama.cpp does not permute",
                self.path.display(),
                self.key("rope.dimension_count")
            )));
        }
        if (head_dim as f64 * factor) as usize != rot {
            return Err(Error::unsupported(format!(
                "`{}`: `{}` = {rot} of a head dimension of {head_dim} is not an exact \
                 `partial_rotary_factor`",
                self.path.display(),
                self.key("rope.dimension_count")
            )));
        }
        Ok(Some(factor))
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*` (or the older `rope.scale_linear`).
    fn rope_scaling(&self) -> Result<Option<Value>> {
        let key = self.key("rope.scaling.type");
        let kind = match self.meta(&key) {
            None => None,
            Some(Meta::String(s)) => Some(s.as_str()),
            Some(v) => {
                return Err(self.config_err(format!(
                    "GGUF metadata key `{key}` must be a string, got {v:?}"
                )))
            }
        };
        match kind {
            None | Some("none") => Ok(self
                .opt_f64("rope.scale_linear")?
                .filter(|f| *f != 1.0)
                .map(|factor| json!({"rope_type": "linear", "factor": factor}))),
            Some("linear") => {
                let factor = self.opt_f64("rope.scaling.factor")?.ok_or_else(|| {
                    self.config_err(format!(
                        "GGUF metadata key `{}` is missing for linear rope scaling",
                        self.key("rope.scaling.factor")
                    ))
                })?;
                Ok(Some(json!({"rope_type": "linear", "factor": factor})))
            }
            Some(other) => Err(Error::unsupported(format!(
                "`{}`: `{key}` = \"{other}\" is not implemented for GGUF files (supported: none, \
                 linear)",
                self.path.display()
            ))),
        }
    }

    /// `sliding_window`, `layer_types` and RoPE per layer type (`full` for full layers,
    /// `rope.freq_base_swa`, default 10,000, for sliding ones), as llama.cpp's Gemma 3 loader
    /// reads them: without a positive `attention.sliding_window`, every layer is full.
    fn sliding_layers(
        &self,
        config: &mut Map<String, Value>,
        period: usize,
        layers: usize,
        full: Value,
    ) -> Result<()> {
        let window = self
            .opt_usize("attention.sliding_window")?
            .filter(|&w| w > 0);
        let sliding = match window {
            Some(_) => self.swa_pattern(period, layers)?,
            None => vec![false; layers],
        };
        let types: Vec<&str> = sliding
            .iter()
            .map(|&s| {
                if s {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        let local = self.opt_f64("rope.freq_base_swa")?.unwrap_or(10_000.0);
        config.insert("sliding_window".into(), json!(window));
        config.insert("layer_types".into(), json!(types));
        config.insert(
            "rope_parameters".into(),
            json!({
                "full_attention": full,
                "sliding_attention": {"rope_type": "default", "rope_theta": local},
            }),
        );
        Ok(())
    }

    /// Which layers slide (llama.cpp's `load_swa_pattern`): `attention.sliding_window_pattern`
    /// as one flag per layer (bools, or integers where non-zero slides), else as a period `p`
    /// (layer `i` slides iff `p == 0` or `i % p < p - 1`), else `period`.
    fn swa_pattern(&self, period: usize, layers: usize) -> Result<Vec<bool>> {
        let key = self.key("attention.sliding_window_pattern");
        let p = match self.meta(&key) {
            Some(Meta::Array(values)) => {
                if values.len() != layers {
                    return Err(self.config_err(format!(
                        "GGUF metadata key `{key}` has {} entries but `{}` is {layers}",
                        values.len(),
                        self.key("block_count")
                    )));
                }
                return values
                    .iter()
                    .map(|v| match v {
                        Meta::Bool(b) => Some(*b),
                        other => meta_u64(other).map(|n| n != 0),
                    })
                    .collect::<Option<Vec<bool>>>()
                    .ok_or_else(|| {
                        self.config_err(format!(
                            "GGUF metadata key `{key}` must hold booleans or integers"
                        ))
                    });
            }
            Some(_) => self
                .opt_usize("attention.sliding_window_pattern")?
                .unwrap_or(period),
            None => period,
        };
        Ok((0..layers).map(|i| p == 0 || i % p < p - 1).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::registry::ARCHITECTURES;

    #[test]
    fn names_map_both_ways() {
        let cases: [(&GgufArch, &str, &str); 9] = [
            (&LLAMA, "token_embd.weight", "model.embed_tokens.weight"),
            (&LLAMA, "output.weight", "lm_head.weight"),
            (
                &QWEN2,
                "blk.3.attn_q.bias",
                "model.layers.3.self_attn.q_proj.bias",
            ),
            (
                &LLAMA,
                "blk.0.ffn_down.weight",
                "model.layers.0.mlp.down_proj.weight",
            ),
            (
                &LLAMA,
                "blk.1.ffn_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
            (
                &GEMMA3,
                "blk.1.ffn_norm.weight",
                "model.layers.1.pre_feedforward_layernorm.weight",
            ),
            (
                &GEMMA3,
                "blk.1.post_attention_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
            (
                &PHI3,
                "blk.0.ffn_up.weight",
                "model.layers.0.mlp.gate_up_proj.weight",
            ),
            (
                &QWEN3,
                "blk.2.attn_k_norm.weight",
                "model.layers.2.self_attn.k_norm.weight",
            ),
        ];
        for (arch, g, h) in cases {
            assert_eq!(arch.hf_name(g).as_deref(), Some(h), "{}", arch.name);
            assert_eq!(arch.gguf_name(h).as_deref(), Some(g), "{}", arch.name);
        }
        assert_eq!(LLAMA.hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(LLAMA.hf_name("blk.0.attn_q_norm.weight"), None);
        assert_eq!(
            PHI3.hf_name("blk.0.attn_qkv.weight").as_deref(),
            Some("model.layers.0.self_attn.qkv_proj.weight")
        );
    }

    #[test]
    fn every_gguf_name_names_one_row() {
        // A name is on two rows only as a dense and a mixture-of-experts one (`llama`: Mixtral).
        let names: Vec<(&str, bool)> = ARCHITECTURES
            .iter()
            .filter_map(|e| e.gguf.map(|g| (g.name, g.experts.is_some())))
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(n), "`{n:?}` is on two rows");
        }
        let names: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "llama", "qwen2", "qwen3", "gemma3", "phi3", "olmo2", "granite", "qwen3moe",
                "llama"
            ]
        );
    }
}
