//! [`ModelConfig`]: the concrete description of a model that the shared decoder runs, lowered once
//! from `config.json` by the architecture's own file (`models/<arch>.rs`), and `ConfigFile`, the
//! serde reader those files parse their `Config` with.
//!
//! Every field is concrete: defaults, the transformers 4 and 5 layouts (`rope_theta` +
//! `rope_scaling` or `rope_parameters`, `torch_dtype` or `dtype`) and per-layer rules are resolved
//! by the architecture before the model is built; the decoder only reads.

pub(crate) mod moe;
pub(crate) mod recurrent;
pub(crate) mod rope;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Architecture;
use crate::error::{Error, Result};

pub use super::gemma4::{Gemma4Spec, LayerSpec, MoeSpec, PerLayerInput};
pub use super::whisper::WhisperSpec;
pub use moe::{MoeConfig, MoeLayout};
pub use recurrent::{LinearAttentionConfig, LinearAttentionLayout, ShortConvConfig};
pub use rope::{RopeConfig, RopeScaling};

/// The activation of the MLP (`hidden_act` / `hidden_activation` / `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`.
    Silu,
    /// `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `gelu`: the exact erf form.
    Gelu,
    /// `relu` (T5 v1.0's feed-forward).
    Relu,
}

impl Activation {
    /// Parses an HF activation name; `key` is the config field, for the error.
    pub(crate) fn from_hf(name: &str, key: &str, file: &ConfigFile<'_>) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(file.err(format!(
                "`{key}` = \"{other}\" is not supported; supported: silu, swish, gelu, gelu_new, gelu_fast, gelu_pytorch_tanh, relu"
            ))),
        }
    }
}

/// Whether a layer attends to everything before it or to a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// `"full_attention"`: every earlier token.
    FullAttention,
    /// `"sliding_attention"`: the last `sliding_window` tokens.
    SlidingAttention,
    /// `"linear_attention"`: a gated DeltaNet layer with a recurrent state, no keys and values
    /// ([`ModelConfig::linear_attention`]).
    LinearAttention,
    /// `"conv"`: LFM2's short convolution with a convolution state ([`ModelConfig::short_conv`]).
    Conv,
}

impl LayerType {
    /// Whether the layer keeps keys and values in the cache.
    pub fn is_attention(self) -> bool {
        matches!(self, LayerType::FullAttention | LayerType::SlidingAttention)
    }
}

/// The normalisation layers' formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x / rms(x) * w` (HF `LlamaRMSNorm`).
    Rms,
    /// `x / rms(x) * (1 + w)`, the scale computed in f32 (HF `Gemma2RMSNorm`, `Gemma3RMSNorm`).
    RmsUnitOffset,
}

/// Where a decoder layer's norms sit around attention and the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `x + attn(norm(x))`, `x + mlp(norm(x))`: `input_layernorm`, `post_attention_layernorm`
    /// (Llama).
    Pre,
    /// `x + norm(attn(norm(x)))`, `x + norm(mlp(norm(x)))`: `input_layernorm`,
    /// `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`
    /// (Gemma 2 and 3).
    Sandwich,
    /// `x + norm(attn(x))`, `x + norm(mlp(x))`: `post_attention_layernorm`,
    /// `post_feedforward_layernorm`, no input norms (OLMo 2).
    Post,
}

/// RMSNorm on queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// `q_norm` / `k_norm` of `[head_dim]`, applied to each head (Qwen3, Gemma 3).
    PerHead,
    /// `q_norm` `[heads * head_dim]`, `k_norm` `[kv_heads * head_dim]`, applied to the whole
    /// projection before it is split into heads (OLMo 2).
    Projection,
}

/// How the attention and MLP projections are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionLayout {
    /// `q_proj`, `k_proj`, `v_proj`; `gate_proj`, `up_proj` (fused at load).
    Separate,
    /// `qkv_proj` and `gate_up_proj` as stored (Phi-3).
    Fused,
}

/// What multiplies the token embeddings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EmbeddingScale {
    /// `sqrt(hidden_size)`, rounded to the compute dtype first (Gemma's `normalizer`).
    SqrtHiddenSize,
    /// A configured multiplier (Granite's `embedding_multiplier`).
    Multiplier(f64),
}

/// Position-dependent query scaling `1 + beta * ln(1 + floor(pos / original_max))` (Llama 4's
/// attention temperature, as Ministral 3 uses it: `llama_4_scaling_beta`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryScaling {
    /// `llama_4_scaling_beta`.
    pub beta: f64,
    /// `original_max_position_embeddings` of the RoPE parameters: the block length `original_max`.
    pub original_max_position_embeddings: usize,
}

impl QueryScaling {
    /// The factor for position `pos`, in f32 as transformers computes it.
    pub fn factor(&self, pos: u32) -> f32 {
        let blocks = (pos as f32 / self.original_max_position_embeddings as f32).floor();
        1.0 + self.beta as f32 * (1.0 + blocks).ln()
    }
}

/// Everything the model code needs from `config.json`, under HF names where one exists: the
/// decoder description an architecture's `Config` lowers into.
#[doc(alias = "DecoderSpec")]
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The architecture (`model_type`) the config was lowered by.
    pub architecture: Architecture,
    /// Rows of the embedding table and of the logits (`vocab_size`).
    pub vocab_size: usize,
    /// Width of the residual stream (`hidden_size`, GPT-2's `n_embd`).
    pub hidden_size: usize,
    /// Width of the dense MLP's hidden layer (`intermediate_size`; GPT-2: `n_inner`, default
    /// `4 * n_embd`).
    pub intermediate_size: usize,
    /// Decoder layers (`num_hidden_layers`, GPT-2's `n_layer`).
    pub num_hidden_layers: usize,
    /// Query heads (`num_attention_heads`, GPT-2's `n_head`).
    pub num_attention_heads: usize,
    /// Key/value heads (`num_key_value_heads`; `num_attention_heads` when unset, i.e. no GQA).
    pub num_key_value_heads: usize,
    /// Width of one head (`head_dim`; `hidden_size / num_attention_heads` when unset).
    pub head_dim: usize,
    /// The longest sequence the model was trained for (`max_position_embeddings`, GPT-2's
    /// `n_positions`); caps the default generation length.
    pub max_position_embeddings: usize,
    /// `rms_norm_eps` or `layer_norm_epsilon`.
    pub norm_eps: f64,
    /// The norms' formula.
    pub norm: NormKind,
    /// Where a layer's norms sit.
    pub norm_placement: NormPlacement,
    /// RMSNorm on queries and keys before RoPE, `None` for none.
    pub qk_norm: Option<QkNorm>,
    /// RoPE of full-attention layers (of every layer when `rope_local` is `None`); `None` for
    /// learned absolute positions (GPT-2).
    pub rope: Option<RopeConfig>,
    /// RoPE of sliding-window layers when it differs (Gemma 3's local base frequency).
    pub rope_local: Option<RopeConfig>,
    /// The LM head reuses the token embedding table (`tie_word_embeddings`).
    pub tie_word_embeddings: bool,
    /// Bias on q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections (`mlp_bias`).
    pub mlp_bias: bool,
    /// How the attention and MLP projections are stored.
    pub projections: ProjectionLayout,
    /// The MLP's activation (`hidden_act`, `hidden_activation` or `activation_function`).
    pub hidden_act: Activation,
    /// Tokens a sliding-window layer attends to (`sliding_window`); `None` for no window.
    pub sliding_window: Option<usize>,
    /// One entry per layer.
    pub layer_types: Vec<LayerType>,
    /// One entry per layer: `false` for layers without rotary embeddings (SmolLM3's NoPE layers,
    /// HF `no_rope_layers[i] == 0`).
    pub rope_layers: Vec<bool>,
    /// What multiplies the token embeddings, `None` for nothing.
    pub embedding_scale: Option<EmbeddingScale>,
    /// Granite: `x + residual_multiplier * f(x)`.
    pub residual_multiplier: Option<f64>,
    /// The multiplier on `q k^T` (HF `self.scaling`): `head_dim^-0.5`,
    /// `query_pre_attn_scalar^-0.5` (Gemma) or `attention_multiplier` (Granite).
    pub attention_scaling: f64,
    /// Ministral 3: position-dependent query scaling.
    pub query_scaling: Option<QueryScaling>,
    /// Granite: logits divided by `logits_scaling`.
    pub logits_scaling: Option<f64>,
    /// Phi-3 with LongRoPE: when a decoding step takes the sequence past this many tokens while
    /// the cache holds no more than that, generation drops the cache and runs the whole sequence
    /// again, so every position is rotated with the long factors (HF
    /// `Phi3ForCausalLM.prepare_inputs_for_generation`).
    pub recompute_cache_at: Option<usize>,
    /// Gemma 2: `tanh(x / cap) * cap` on attention scores.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2: `tanh(x / cap) * cap` on the final logits.
    pub final_logit_softcapping: Option<f64>,
    /// `bos_token_id` of `config.json` (the first one of a list).
    pub bos_token_id: Option<u32>,
    /// `pad_token_id` of `config.json` (the first one of a list).
    pub pad_token_id: Option<u32>,
    /// The dtype the checkpoint was saved in (`dtype` or `torch_dtype`), if given.
    pub torch_dtype: Option<String>,
    /// Sparse mixture-of-experts MLPs (Qwen3-MoE, Mixtral, gpt-oss), `None` for dense models.
    pub moe: Option<MoeConfig>,
    /// gpt-oss: each head has a learned "sink" logit (`self_attn.sinks`) that joins the softmax
    /// over the keys and is then dropped, so a head may attend to nothing.
    pub attention_sinks: bool,
    /// Qwen3.5 / Qwen3-Next: `q_proj` also yields a per-head gate, and the attention output is
    /// multiplied by its sigmoid before `o_proj`.
    pub attn_output_gate: bool,
    /// The gated DeltaNet layers' shape (`layer_types` entries `"linear_attention"`).
    pub linear_attention: Option<LinearAttentionConfig>,
    /// LFM2's short convolutions (`layer_types` entries `"conv"`).
    pub short_conv: Option<ShortConvConfig>,
    /// Module names the checkpoint uses in place of the decoder's (Llama's) names: `(ours,
    /// stored)` pairs of name segments, e.g. LFM2's `("mlp.gate_proj", "feed_forward.w1")`.
    pub weight_renames: &'static [(&'static str, &'static str)],
    /// Gemma 4's per-layer attention shapes, per-layer input embeddings, shared KV layers and
    /// MoE blocks (`None` for every other architecture), read by `models/gemma4.rs`.
    pub gemma4: Option<Box<Gemma4Spec>>,
    /// Whisper's encoder (`None` for every other architecture), read by `models/whisper/`.
    pub whisper: Option<Box<WhisperSpec>>,
}

impl ModelConfig {
    /// The RoPE of layer `i`, or `None` for a layer without rotary embeddings.
    pub fn rope_for_layer(&self, i: usize) -> Option<&RopeConfig> {
        if !self.rope_layers.get(i).copied().unwrap_or(true) {
            return None;
        }
        match (self.layer_types.get(i), &self.rope_local) {
            (Some(LayerType::SlidingAttention), Some(local)) => Some(local),
            _ => self.rope.as_ref(),
        }
    }

    /// The key/value heads and head size of layer `i`'s cache entries (Gemma 4's layers differ;
    /// the model-wide `num_key_value_heads` and `head_dim` otherwise; no heads for a recurrent
    /// layer, which keeps no keys and values).
    pub fn kv_shape(&self, i: usize) -> (usize, usize) {
        if self.layer_types.get(i).is_some_and(|l| !l.is_attention()) {
            return (0, self.head_dim);
        }
        match self.gemma4.as_deref().and_then(|g| g.layers.get(i)) {
            Some(l) => (l.num_key_value_heads, l.head_dim),
            None => (self.num_key_value_heads, self.head_dim),
        }
    }

    /// Bytes of one sequence's recurrent state over all layers, whatever its length: a gated
    /// DeltaNet layer keeps its convolution window and its delta-rule state in f32, a short
    /// convolution its window in the compute dtype (`dtype_bytes`). 0 for attention-only models.
    pub fn state_bytes_per_sequence(&self, dtype_bytes: usize) -> usize {
        self.layer_types
            .iter()
            .map(|t| match (t, &self.linear_attention, &self.short_conv) {
                (LayerType::LinearAttention, Some(la), _) => {
                    4 * ((la.conv_kernel_dim - 1) * la.conv_dim()
                        + la.num_value_heads * la.key_head_dim * la.value_head_dim)
                }
                (LayerType::Conv, _, Some(sc)) => (sc.kernel - 1) * self.hidden_size * dtype_bytes,
                _ => 0,
            })
            .sum()
    }

    /// Key and value elements one token adds to the cache over all layers.
    pub fn kv_elements_per_token(&self) -> usize {
        (0..self.num_hidden_layers)
            .map(|i| {
                let (kv, d) = self.kv_shape(i);
                2 * kv * d
            })
            .sum()
    }

    /// The checks every architecture shares, once lowered.
    pub(crate) fn check(&self, file: &ConfigFile<'_>) -> Result<()> {
        for (name, n) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if n == 0 {
                return Err(file.err(format!("`{name}` must be greater than 0")));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(file.err(format!(
                "`num_attention_heads` ({}) must be a multiple of `num_key_value_heads` ({})",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        for rope in [&self.rope, &self.rope_local].into_iter().flatten() {
            let dim = rope.rotary_dim(self.head_dim);
            if dim % 2 != 0 || dim == 0 || dim > self.head_dim {
                return Err(file.err(format!(
                    "the rotary dimension must be even and in (0, head_dim = {}], got {dim} \
                     (`head_dim` {} x `partial_rotary_factor` {})",
                    self.head_dim, self.head_dim, rope.partial_rotary_factor
                )));
            }
            rope.check(dim, file)?;
        }
        if let Some(moe) = &self.moe {
            moe.check(self.num_hidden_layers, file)?;
        }
        for (name, len) in [
            ("layer_types", self.layer_types.len()),
            ("no_rope_layers", self.rope_layers.len()),
        ] {
            if len != self.num_hidden_layers {
                return Err(file.err(format!(
                    "`{name}` has {len} entries but `num_hidden_layers` is {}",
                    self.num_hidden_layers
                )));
            }
        }
        if self.layer_types.contains(&LayerType::LinearAttention) && self.linear_attention.is_none()
        {
            return Err(file.err(
                "`layer_types` has \"linear_attention\" layers but the `linear_*` fields are missing"
                    .into(),
            ));
        }
        if let Some(la) = &self.linear_attention {
            for (name, n) in [
                ("linear_num_key_heads", la.num_key_heads),
                ("linear_num_value_heads", la.num_value_heads),
                ("linear_key_head_dim", la.key_head_dim),
                ("linear_value_head_dim", la.value_head_dim),
                ("linear_conv_kernel_dim", la.conv_kernel_dim),
            ] {
                if n == 0 {
                    return Err(file.err(format!("`{}{name}` must be greater than 0", file.prefix)));
                }
            }
            if la.num_value_heads % la.num_key_heads != 0 {
                return Err(file.err(format!(
                    "`{p}linear_num_value_heads` ({}) must be a multiple of `{p}linear_num_key_heads` ({})",
                    la.num_value_heads,
                    la.num_key_heads,
                    p = file.prefix
                )));
            }
        }
        if let Some(sc) = &self.short_conv {
            if sc.kernel == 0 {
                return Err(file.err(format!("`{}conv_L_cache` must be at least 1", file.prefix)));
            }
        }
        if self.layer_types.contains(&LayerType::Conv) && self.short_conv.is_none() {
            return Err(
                file.err("`layer_types` has \"conv\" layers but no convolution settings".into())
            );
        }
        if self.layer_types.contains(&LayerType::SlidingAttention) && self.sliding_window.is_none()
        {
            return Err(
                file.err("`layer_types` has sliding layers but `sliding_window` is not set".into())
            );
        }
        Ok(())
    }
}

/// A `config.json` (or the `text_config` inside one) with the file it came from, for errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfigFile<'a> {
    pub value: &'a Value,
    pub path: &'a Path,
    /// Where `value` sits in the file: `""`, or `"text_config."` for a nested text model.
    pub prefix: &'a str,
}

impl<'a> ConfigFile<'a> {
    /// The whole file.
    pub fn new(value: &'a Value, path: &'a Path) -> Self {
        Self {
            value,
            path,
            prefix: "",
        }
    }

    /// An error about this file.
    pub fn err(&self, message: String) -> Error {
        Error::ModelConfig {
            path: self.path.to_path_buf(),
            message,
        }
    }

    /// The fields of `T` (an architecture's serde `Config`; fields it does not name are ignored),
    /// with an error that names the field and what it must be.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        if !self.value.is_object() {
            return Err(self.err("expected a JSON object".into()));
        }
        // Counts that size allocations before any tensor is read (per-layer tables, expert
        // lists): bounded here, so that a corrupt file is an error, not a multi-gigabyte
        // allocation (found by the `gguf` fuzz target: `block_count` 4294967295).
        for (key, max) in SIZE_LIMITS {
            if let Some(n) = self.value.get(*key).and_then(Value::as_u64) {
                if n > *max {
                    return Err(self.err(format!(
                        "`{}{key}` is {n}; lmgen reads at most {max} (the largest checkpoints \
                         have a few hundred)",
                        self.prefix
                    )));
                }
            }
        }
        serde_path_to_error::deserialize(self.value).map_err(|e| {
            let path = e.path().to_string();
            self.err(describe(self.prefix, &path, &e.into_inner().to_string()))
        })
    }

    /// The string field `key`, if present.
    pub fn str_field(&self, key: &str) -> Result<Option<&'a str>> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(format!("`{}{key}` must be a string, got {v}", self.prefix))),
        }
    }
}

/// The largest layer and expert counts a config may declare ([`ConfigFile::parse`]).
const SIZE_LIMITS: &[(&str, u64)] = &[
    ("num_hidden_layers", 4096),
    ("n_layer", 4096),
    ("num_local_experts", 65536),
    ("num_experts", 65536),
    ("n_routed_experts", 65536),
];

/// serde's message for a bad field, in lmgen's words: "`field` must be a number, got \"x\"",
/// "`field` is missing".
pub(crate) fn describe(prefix: &str, path: &str, serde_msg: &str) -> String {
    let field = |name: &str| {
        let at = if path == "." || path.is_empty() {
            String::new()
        } else {
            format!("{path}.")
        };
        format!("`{prefix}{at}{name}`")
    };
    if let Some(rest) = serde_msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return format!("{} is missing", field(name));
    }
    let here = format!("`{prefix}{path}`");
    let body = serde_msg
        .strip_prefix("invalid type: ")
        .or_else(|| serde_msg.strip_prefix("invalid value: "));
    let Some(body) = body else {
        return format!("{here}: {serde_msg}");
    };
    let body = body.split(" at line ").next().unwrap_or(body);
    let Some((got, expected)) = body.rsplit_once(", expected ") else {
        return format!("{here}: {serde_msg}");
    };
    let expected = match expected {
        "usize" | "u32" | "u64" => "a non-negative integer",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "a map" | "struct" => "an object",
        other => other,
    };
    let got = match got.split_once(' ') {
        Some(("string", s)) => s.to_string(),
        Some((_, v)) if v.starts_with('`') => v.trim_matches('`').to_string(),
        _ => match got {
            "map" => "an object".into(),
            "sequence" => "a list".into(),
            other => other.to_string(),
        },
    };
    format!("{here} must be {expected}, got {got}")
}

/// A token id field: transformers also allows a list (the first entry is the id that matters
/// here).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum TokenIdField {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIdField {
    /// The id.
    pub fn first(&self) -> Option<u32> {
        match self {
            TokenIdField::One(id) => Some(*id),
            TokenIdField::Many(ids) => ids.first().copied(),
        }
    }
}

/// `dtype` (transformers 5) or `torch_dtype` (transformers 4).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct SavedDtype {
    dtype: Option<String>,
    torch_dtype: Option<String>,
}

impl SavedDtype {
    pub(crate) fn into_name(self) -> Option<String> {
        self.dtype.or(self.torch_dtype)
    }
}

/// Parses `config.json` into the description the model code runs (through the architecture
/// registry, `models/registry.rs`).
impl ModelConfig {
    /// Parses the checkpoint's `config.json` (for a GGUF file, the config its metadata implies).
    pub fn from_checkpoint(checkpoint: &crate::load::Checkpoint) -> Result<Self> {
        Self::from_json(&checkpoint.config, &checkpoint.config_path())
    }

    /// Parses a `config.json` value; `path` is only used in error messages.
    pub fn from_json(config: &Value, path: &Path) -> Result<Self> {
        let path: PathBuf = path.to_path_buf();
        super::registry::resolve(&ConfigFile::new(config, &path))?.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn serde_messages_in_lmgen_words() {
        assert_eq!(
            describe(
                "",
                "hidden_size",
                "invalid type: string \"big\", expected usize"
            ),
            "`hidden_size` must be a non-negative integer, got \"big\""
        );
        assert_eq!(
            describe("", "n_layer", "invalid value: integer `-2`, expected usize"),
            "`n_layer` must be a non-negative integer, got -2"
        );
        assert_eq!(
            describe("text_config.", ".", "missing field `hidden_size`"),
            "`text_config.hidden_size` is missing"
        );
        assert_eq!(
            describe("", "rope_scaling", "missing field `factor`"),
            "`rope_scaling.factor` is missing"
        );
        assert_eq!(
            describe(
                "",
                "rms_norm_eps",
                "invalid type: boolean `true`, expected f64"
            ),
            "`rms_norm_eps` must be a number, got true"
        );
    }
}
