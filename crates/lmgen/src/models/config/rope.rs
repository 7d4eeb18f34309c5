//! RoPE parameters from `config.json`: `rope_parameters` (transformers 5, possibly one entry per
//! layer type) or `rope_theta` + `rope_scaling` (transformers 4), resolved into [`RopeConfig`]
//! as transformers' `modeling_rope_utils.py` reads them.

use serde::Deserialize;
use serde_json::Value;

use super::ConfigFile;
use crate::error::Result;

/// RoPE scaling (`rope_type` of `rope_parameters` / `rope_scaling`), transformers'
/// `modeling_rope_utils.py`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `"default"`: no scaling.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// `factor`: what positions are divided by.
        factor: f64,
    },
    /// NTK-aware base growth once the sequence passes `max_position_embeddings`.
    Dynamic {
        /// `factor`: how fast the base grows with the sequence length.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// `factor`: how much the low frequencies are divided by.
        factor: f64,
        /// `low_freq_factor`: wavelengths above `original_max_position_embeddings /
        /// low_freq_factor` are scaled fully.
        low_freq_factor: f64,
        /// `high_freq_factor`: wavelengths below `original_max_position_embeddings /
        /// high_freq_factor` are left as they are.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`: the pretraining context length.
        original_max_position_embeddings: usize,
    },
    /// YaRN (`_compute_yarn_parameters`): frequencies blended between interpolation and
    /// extrapolation over a ramp, cos/sin scaled by `attention_factor`.
    Yarn {
        /// `factor`: the context extension ratio.
        factor: f64,
        /// `beta_fast`: the ramp's fast end, in rotations (default 32).
        beta_fast: f64,
        /// `beta_slow`: the ramp's slow end, in rotations (default 1).
        beta_slow: f64,
        /// `original_max_position_embeddings`: the pretraining context length.
        original_max_position_embeddings: usize,
        /// Resolved from `attention_factor`, or `mscale` / `mscale_all_dim` and `factor`.
        attention_factor: f64,
        /// `truncate`: round the ramp's ends to whole dimensions (default true).
        truncate: bool,
    },
    /// LongRoPE (Phi-3, Phi-4-mini; `_compute_longrope_parameters`): per-frequency factors,
    /// `short_factor` while the forward's largest position is below
    /// `original_max_position_embeddings`, `long_factor` past it; cos/sin scaled by
    /// `attention_factor`.
    LongRope {
        /// `short_factor`: one per rotated frequency (`rotary_dim / 2`).
        short_factor: Vec<f64>,
        /// `long_factor`: one per rotated frequency (`rotary_dim / 2`).
        long_factor: Vec<f64>,
        /// `original_max_position_embeddings`: where the long factors take over.
        original_max_position_embeddings: usize,
        /// Resolved from `attention_factor`, or from the context extension ratio.
        attention_factor: f64,
    },
    /// Gemma 4's `"proportional"` (`_compute_proportional_rope_parameters`): the first
    /// `int(partial_rotary_factor * head_dim // 2)` frequencies are `theta^(-2i / head_dim)`,
    /// the rest of the head's `head_dim / 2` are 0 (not rotated), all divided by `factor`. The
    /// rotation spans the whole head, pairing channel `i` with `i + head_dim / 2`, unlike partial
    /// rotation, which rotates the first channels among themselves.
    Proportional {
        /// `factor` (default 1).
        factor: f64,
    },
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// The base frequency (`rope_theta`).
    pub theta: f64,
    /// The scaling (`rope_type` and its parameters).
    pub scaling: RopeScaling,
    /// The rotated fraction of each head (`partial_rotary_factor`; Phi-4-mini 0.75).
    pub partial_rotary_factor: f64,
}

impl RopeConfig {
    /// Plain RoPE with base `theta` over the whole head.
    pub(crate) fn new(theta: f64) -> Self {
        Self {
            theta,
            scaling: RopeScaling::Default,
            partial_rotary_factor: 1.0,
        }
    }

    /// `int(head_dim * partial_rotary_factor)`, as transformers truncates it; the whole head
    /// for [`RopeScaling::Proportional`], whose unrotated channels have frequency 0.
    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        match self.scaling {
            RopeScaling::Proportional { .. } => head_dim,
            _ => (head_dim as f64 * self.partial_rotary_factor) as usize,
        }
    }

    /// The cos/sin multiplier (`attention_scaling` of HF's rotary embedding).
    pub fn attention_factor(&self) -> f64 {
        match &self.scaling {
            RopeScaling::Yarn {
                attention_factor, ..
            }
            | RopeScaling::LongRope {
                attention_factor, ..
            } => *attention_factor,
            _ => 1.0,
        }
    }

    pub(super) fn check(&self, rotary_dim: usize, file: &ConfigFile<'_>) -> Result<()> {
        if let RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        } = &self.scaling
        {
            for (name, f) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                if f.len() != rotary_dim / 2 {
                    return Err(file.err(format!(
                        "`rope_scaling.{name}` has {} entries but the rotary dimension {rotary_dim} \
                         needs {}",
                        f.len(),
                        rotary_dim / 2
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The RoPE fields at the top of `config.json`.
#[derive(Debug, Default, Deserialize)]
struct TopLevel {
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    partial_rotary_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

/// One `rope_parameters` / `rope_scaling` object.
#[derive(Debug, Default, Deserialize)]
struct Params {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
    beta_fast: Option<f64>,
    beta_slow: Option<f64>,
    mscale: Option<f64>,
    mscale_all_dim: Option<f64>,
    attention_factor: Option<f64>,
    truncate: Option<bool>,
    short_factor: Option<Vec<f64>>,
    long_factor: Option<Vec<f64>>,
    partial_rotary_factor: Option<f64>,
}

/// What an architecture's `configuration_*.py` supplies when the file does not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeDefaults {
    pub theta: f64,
    pub max_position_embeddings: usize,
}

/// The one RoPE of a model whose layers all rotate alike.
pub fn parse(file: &ConfigFile<'_>, defaults: RopeDefaults) -> Result<RopeConfig> {
    let top: TopLevel = file.parse()?;
    let (value, key) = match (&top.rope_parameters, &top.rope_scaling) {
        (Some(p), _) => (Some(p), "rope_parameters"),
        (None, Some(s)) => (Some(s), "rope_scaling"),
        (None, None) => (None, "rope_parameters"),
    };
    resolve(file, &top, value, key, defaults.theta, defaults)
}

/// Gemma 3's RoPE per layer type: `rope_parameters.{full_attention,sliding_attention}`
/// (transformers 5), or `rope_theta` + `rope_scaling` for full layers and
/// `rope_local_base_freq` for sliding ones (transformers 4). Returns (full, sliding).
pub fn parse_per_layer_type(
    file: &ConfigFile<'_>,
    defaults: RopeDefaults,
    local_theta: f64,
) -> Result<(RopeConfig, RopeConfig)> {
    let top: TopLevel = file.parse()?;
    let by_type = top
        .rope_parameters
        .as_ref()
        .filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
    match by_type {
        Some(p) => {
            let full = p.get("full_attention");
            let sliding = p.get("sliding_attention");
            Ok((
                resolve(
                    file,
                    &top,
                    full,
                    "rope_parameters.full_attention",
                    defaults.theta,
                    defaults,
                )?,
                resolve(
                    file,
                    &top,
                    sliding,
                    "rope_parameters.sliding_attention",
                    local_theta,
                    defaults,
                )?,
            ))
        }
        None => {
            let full = parse(file, defaults)?;
            let mut sliding = RopeConfig::new(local_theta);
            sliding.partial_rotary_factor = full.partial_rotary_factor;
            Ok((full, sliding))
        }
    }
}

fn resolve(
    file: &ConfigFile<'_>,
    top: &TopLevel,
    value: Option<&Value>,
    key: &str,
    default_theta: f64,
    defaults: RopeDefaults,
) -> Result<RopeConfig> {
    let p: Params = match value {
        None | Some(Value::Null) => Params::default(),
        Some(v @ Value::Object(_)) => ConfigFile {
            value: v,
            path: file.path,
            prefix: &format!("{}{key}.", file.prefix),
        }
        .parse()?,
        Some(v) => {
            return Err(file.err(format!("`{}{key}` must be an object, got {v}", file.prefix)))
        }
    };
    let field = |name: &str| format!("`{}{key}.{name}`", file.prefix);
    let theta = p.rope_theta.or(top.rope_theta).unwrap_or(default_theta);
    let kind = p
        .rope_type
        .as_deref()
        .or(p.legacy_type.as_deref())
        .unwrap_or("default");
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| {
            file.err(format!(
                "{} is missing for rope_type \"{kind}\"",
                field(name)
            ))
        })
    };
    let original = p
        .original_max_position_embeddings
        .or(top.original_max_position_embeddings);
    let need_original = || {
        original.ok_or_else(|| {
            file.err(format!(
                "{} is missing",
                field("original_max_position_embeddings")
            ))
        })
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: need(p.factor, "factor")?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: need(p.factor, "factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need(p.factor, "factor")?,
            low_freq_factor: need(p.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: need(p.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: need_original()?,
        },
        "yarn" => {
            let original = need_original()?;
            let factor = p
                .factor
                .unwrap_or(defaults.max_position_embeddings as f64 / original as f64);
            // `get_mscale`.
            let mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match (p.attention_factor, p.mscale, p.mscale_all_dim) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    mscale(factor, m) / mscale(factor, all)
                }
                _ => mscale(factor, 1.0),
            };
            RopeScaling::Yarn {
                factor,
                beta_fast: p.beta_fast.filter(|b| *b != 0.0).unwrap_or(32.0),
                beta_slow: p.beta_slow.filter(|b| *b != 0.0).unwrap_or(1.0),
                original_max_position_embeddings: original,
                attention_factor,
                truncate: p.truncate.unwrap_or(true),
            }
        }
        // `su` is LongRoPE's name in the first Phi-3 configs.
        "longrope" | "su" => {
            let original = need_original()?;
            let factor = p
                .factor
                .unwrap_or(defaults.max_position_embeddings as f64 / original as f64);
            let attention_factor = p.attention_factor.unwrap_or(if factor <= 1.0 {
                1.0
            } else {
                (1.0 + factor.ln() / (original as f64).ln()).sqrt()
            });
            let list = |v: Option<Vec<f64>>, name: &str| {
                v.ok_or_else(|| {
                    file.err(format!(
                        "{} is missing for rope_type \"{kind}\"",
                        field(name)
                    ))
                })
            };
            RopeScaling::LongRope {
                short_factor: list(p.short_factor, "short_factor")?,
                long_factor: list(p.long_factor, "long_factor")?,
                original_max_position_embeddings: original,
                attention_factor,
            }
        }
        "proportional" => RopeScaling::Proportional {
            factor: p.factor.unwrap_or(1.0),
        },
        other => {
            return Err(file.err(format!(
                "`{}{key}.rope_type` = \"{other}\" is not supported yet; supported: default, \
                 linear, dynamic, llama3, yarn, longrope, proportional",
                file.prefix
            )))
        }
    };
    Ok(RopeConfig {
        theta,
        scaling,
        partial_rotary_factor: p
            .partial_rotary_factor
            .or(top.partial_rotary_factor)
            .unwrap_or(1.0),
    })
}
