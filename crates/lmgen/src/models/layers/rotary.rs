//! Rotary position embeddings (HF `LlamaRotaryEmbedding` and `modeling_rope_utils.py`).
//!
//! The angles are computed on the host in f32 exactly as transformers does
//! (`inv_freq` in f32, `freqs = inv_freq * position`, then `cos`/`sin`), so rotated queries and
//! keys match to the last bits; the rotation itself is candle's non-interleaved `rope`
//! (HF `rotate_half`), over the first `rotary_dim` channels of each head when the rotation is
//! partial (`partial_rotary_factor`), the rest passed through.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::models::config::{RopeConfig, RopeScaling};

/// Per-model rotary embedding: inverse frequencies plus the scaling rule.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// `[rotary_dim / 2]`, already scaled for `linear`, `llama3` and `yarn` (LongRoPE's short
    /// factors).
    inv_freq: Vec<f32>,
    config: RopeConfig,
    /// The rotated channels of a head (`head_dim * partial_rotary_factor`).
    rotary_dim: usize,
    max_position_embeddings: usize,
    /// `cos` and `sin` `[positions, rotary_dim / 2]` of every position below
    /// [`RotaryEmbedding::device_table_len`], made on the first [`RotaryEmbedding::cos_sin_at`]
    /// and kept for the model's life (captured decode graphs read it).
    table: std::sync::Arc<std::sync::OnceLock<(Tensor, Tensor)>>,
}

/// The most positions [`RotaryEmbedding::cos_sin_at`]'s table holds (16 MiB a table for a
/// 64-wide bf16 rotation).
const MAX_TABLE_POSITIONS: usize = 1 << 17;

/// `1 / base^(2i / dim)` in f32, as `_compute_default_rope_parameters`.
fn default_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / (base as f32).powf(i as f32 / dim as f32))
        .collect()
}

impl RotaryEmbedding {
    pub fn new(config: &RopeConfig, head_dim: usize, max_position_embeddings: usize) -> Self {
        let dim = config.rotary_dim(head_dim);
        let base = default_inv_freq(config.theta, dim);
        let inv_freq = match config.scaling {
            RopeScaling::Default | RopeScaling::Dynamic { .. } => base,
            RopeScaling::Yarn {
                factor,
                beta_fast,
                beta_slow,
                original_max_position_embeddings,
                truncate,
                ..
            } => yarn_inv_freq(
                dim,
                factor,
                [beta_fast, beta_slow],
                config.theta,
                original_max_position_embeddings,
                truncate,
            ),
            RopeScaling::LongRope {
                ref short_factor, ..
            } => longrope_inv_freq(config.theta, dim, short_factor),
            RopeScaling::Proportional { factor } => {
                proportional_inv_freq(config.theta, head_dim, config.partial_rotary_factor)
                    .into_iter()
                    .map(|f| f / factor as f32)
                    .collect()
            }
            // `_compute_linear_scaling_rope_parameters`: inv_freq / factor.
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
            // `_compute_llama3_parameters`.
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old_len = original_max_position_embeddings as f32;
                let low_freq_wavelen = old_len / low;
                let high_freq_wavelen = old_len / high;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            f
                        };
                        let is_medium = (high_freq_wavelen..=low_freq_wavelen).contains(&wavelen);
                        if is_medium {
                            let smooth = (old_len / wavelen - low) / (high - low);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        };
        Self {
            inv_freq,
            config: config.clone(),
            rotary_dim: dim,
            max_position_embeddings,
            table: Default::default(),
        }
    }

    /// The positions [`RotaryEmbedding::cos_sin_at`] covers: those whose angles do not depend
    /// on the forward's length (below `max_position_embeddings` for dynamic NTK, below the
    /// original context for LongRoPE), at most [`MAX_TABLE_POSITIONS`].
    pub fn device_table_len(&self) -> usize {
        let len = match self.config.scaling {
            RopeScaling::LongRope {
                original_max_position_embeddings,
                ..
            } => original_max_position_embeddings,
            _ => self.max_position_embeddings,
        };
        len.min(MAX_TABLE_POSITIONS)
    }

    /// [`RotaryEmbedding::cos_sin`] for positions held in device memory (`[b, t]` u32 on
    /// `device`, each below [`RotaryEmbedding::device_table_len`]): rows of a table of every
    /// position made once by `cos_sin`, so the values are the same to the bit.
    pub fn cos_sin_at(
        &self,
        positions: &Tensor,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let (cos, sin) = match self.table.get() {
            Some(table) => table,
            None => {
                let n = self.device_table_len() as u32;
                let (cos, sin) = self.cos_sin(&[(0..n).collect()], dtype, device)?;
                let _ = self.table.set((cos.squeeze(0)?, sin.squeeze(0)?));
                self.table.get().expect("set above")
            }
        };
        if cos.dtype() != dtype || !cos.device().same_device(device) {
            return Err(crate::error::Error::unsupported(format!(
                "the rotary table was made for {:?} on {:?}, not {dtype:?} on {device:?}",
                cos.dtype(),
                cos.device()
            )));
        }
        let idx = positions.flatten_all()?;
        let half = cos.dim(1)?;
        Ok((
            cos.index_select(&idx, 0)?.reshape((b, t, half))?,
            sin.index_select(&idx, 0)?.reshape((b, t, half))?,
        ))
    }

    /// Inverse frequencies for a forward whose largest position is `max_pos`
    /// (dynamic NTK grows the base once the sequence passes `max_position_embeddings`).
    fn inv_freq_for(&self, max_pos: usize) -> std::borrow::Cow<'_, [f32]> {
        let seq_len = max_pos + 1;
        match self.config.scaling {
            RopeScaling::Dynamic { factor } if seq_len > self.max_position_embeddings => {
                // `_compute_dynamic_ntk_parameters`.
                let dim = self.rotary_dim as f64;
                let ratio =
                    factor * seq_len as f64 / self.max_position_embeddings as f64 - (factor - 1.0);
                let base = self.config.theta * ratio.powf(dim / (dim - 2.0));
                std::borrow::Cow::Owned(default_inv_freq(base, self.rotary_dim))
            }
            // `longrope_frequency_update`: the long factors once the forward passes the
            // original context.
            RopeScaling::LongRope {
                ref long_factor,
                original_max_position_embeddings,
                ..
            } if seq_len > original_max_position_embeddings => std::borrow::Cow::Owned(
                longrope_inv_freq(self.config.theta, self.rotary_dim, long_factor),
            ),
            _ => std::borrow::Cow::Borrowed(&self.inv_freq),
        }
    }

    /// `cos` and `sin`, each `[b, t, head_dim / 2]` in `dtype`, for `[b, t]` positions.
    pub fn cos_sin(
        &self,
        positions: &[Vec<u32>],
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let b = positions.len();
        let t = positions.first().map_or(0, Vec::len);
        let max_pos = positions.iter().flatten().copied().max().unwrap_or(0) as usize;
        let inv_freq = self.inv_freq_for(max_pos);
        let half = inv_freq.len();
        // `cos = emb.cos() * attention_scaling` (YaRN, LongRoPE; 1 otherwise).
        let scale = self.config.attention_factor() as f32;
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for row in positions {
            for &p in row {
                for &f in inv_freq.iter() {
                    let angle = f * p as f32;
                    if scale == 1.0 {
                        cos.push(angle.cos());
                        sin.push(angle.sin());
                    } else {
                        cos.push(angle.cos() * scale);
                        sin.push(angle.sin() * scale);
                    }
                }
            }
        }
        // Cast on the host, then one copy each: no conversion kernels on a GPU.
        let cpu = &Device::Cpu;
        let cos = Tensor::from_vec(cos, (b, t, half), cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let sin = Tensor::from_vec(sin, (b, t, half), cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        Ok((cos, sin))
    }
}

/// YaRN's frequencies (`_compute_yarn_parameters`), in f32 as transformers computes them; the
/// blend ramp runs over the correction range of `[beta_fast, beta_slow]` rotations.
fn yarn_inv_freq(
    dim: usize,
    factor: f64,
    [beta_fast, beta_slow]: [f64; 2],
    theta: f64,
    original_max_position_embeddings: usize,
    truncate: bool,
) -> Vec<f32> {
    let half = dim / 2;
    let dim = dim as f64;
    let correction_dim = |rotations: f64| {
        (dim * (original_max_position_embeddings as f64 / (rotations * 2.0 * std::f64::consts::PI))
            .ln())
            / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
    if low == high {
        high += 0.001; // `linear_ramp_factor`: no singularity
    }
    (0..half)
        .map(|i| {
            let pos_freq = (theta as f32).powf((2 * i) as f32 / dim as f32);
            let extrapolation = 1.0 / pos_freq;
            let interpolation = 1.0 / (factor as f32 * pos_freq);
            let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect()
}

/// Gemma 4's proportional frequencies (`_compute_proportional_rope_parameters`, before the
/// division by `factor`): `int(partial_rotary_factor * head_dim // 2)` of `theta^(-2i / head_dim)`,
/// then zeros up to `head_dim / 2`.
fn proportional_inv_freq(theta: f64, head_dim: usize, partial_rotary_factor: f64) -> Vec<f32> {
    let rotated = ((partial_rotary_factor * head_dim as f64) / 2.0).floor() as usize;
    let rotated = rotated.min(head_dim / 2);
    (0..head_dim / 2)
        .map(|i| {
            if i < rotated {
                1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)
            } else {
                0.0
            }
        })
        .collect()
}

/// LongRoPE's frequencies: `1 / (factor_i * theta^(2i/dim))` in f32.
fn longrope_inv_freq(theta: f64, dim: usize, factors: &[f64]) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .zip(factors)
        .map(|(i, &f)| 1.0 / (f as f32 * (theta as f32).powf(i as f32 / dim as f32)))
        .collect()
}

/// Rotates `x` `[b, h, t, d]` by the angles of `cos`/`sin` `[b, t, r/2]`: the first `r` channels
/// of each head, the other `d - r` unchanged (HF's partial rotary `apply_rotary_pos_emb`).
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    let r = 2 * cos.dim(candle_core::D::Minus1)?;
    if r == d {
        return Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?);
    }
    let rotated = candle_nn::rotary_emb::rope(&x.narrow(3, 0, r)?.contiguous()?, cos, sin)?;
    Ok(Tensor::cat(&[rotated, x.narrow(3, r, d - r)?], 3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> RotaryEmbedding {
        let cfg = RopeConfig {
            theta: 10000.0,
            scaling,
            partial_rotary_factor: 1.0,
        };
        RotaryEmbedding::new(&cfg, 8, 16)
    }

    #[test]
    fn default_frequencies() {
        let r = rope(RopeScaling::Default);
        let want = [1.0, 0.1, 0.01, 0.001];
        for (g, w) in r.inv_freq.iter().zip(want) {
            assert!((g - w).abs() < 1e-6 * w.max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn linear_divides_every_frequency() {
        let base = rope(RopeScaling::Default);
        let lin = rope(RopeScaling::Linear { factor: 4.0 });
        for (b, l) in base.inv_freq.iter().zip(&lin.inv_freq) {
            assert_eq!(*l, b / 4.0);
        }
    }

    #[test]
    fn dynamic_grows_the_base_only_past_max_positions() {
        let r = rope(RopeScaling::Dynamic { factor: 2.0 });
        assert_eq!(&*r.inv_freq_for(15), &r.inv_freq[..]);
        let grown = r.inv_freq_for(31); // seq_len 32 = 2x max_position_embeddings
                                        // base' = 10000 * (2 * 32 / 16 - 1)^(8 / 6)
        let base = 10000f64 * 3f64.powf(8.0 / 6.0);
        let want = 1.0 / (base as f32).powf(2.0 / 8.0);
        assert!((grown[1] - want).abs() < 1e-7, "{} vs {want}", grown[1]);
        assert_eq!(grown[0], 1.0);
    }

    #[test]
    fn llama3_keeps_high_and_scales_low_frequencies() {
        let r = rope(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        });
        let base = rope(RopeScaling::Default);
        // wavelen 2*pi < 16 (high-frequency band): unchanged.
        assert_eq!(r.inv_freq[0], base.inv_freq[0]);
        // wavelen 2*pi*1000 > 64 (low-frequency band): divided by the factor.
        assert_eq!(r.inv_freq[3], base.inv_freq[3] / 8.0);
    }

    #[test]
    fn proportional_rotates_a_share_of_the_whole_head() {
        let cfg = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Proportional { factor: 2.0 },
            partial_rotary_factor: 0.5,
        };
        let r = RotaryEmbedding::new(&cfg, 8, 16);
        // 2 of 4 frequencies, exponents over the whole head (2i / 8), halved; the rest 0.
        let want = [0.5, 0.05, 0.0, 0.0];
        for (g, w) in r.inv_freq.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{:?}", r.inv_freq);
        }
        assert_eq!(r.rotary_dim, 8);
    }

    #[test]
    fn cos_sin_shape_and_values() {
        let r = rope(RopeScaling::Default);
        let (cos, sin) = r
            .cos_sin(&[vec![0, 1], vec![1, 2]], DType::F32, &Device::Cpu)
            .unwrap();
        assert_eq!(cos.dims(), &[2, 2, 4]);
        let c: Vec<Vec<Vec<f32>>> = cos.to_vec3().unwrap();
        let s: Vec<Vec<Vec<f32>>> = sin.to_vec3().unwrap();
        assert_eq!(c[0][0], vec![1.0; 4]);
        assert!((c[1][1][0] - 2f32.cos()).abs() < 1e-7);
        assert!((s[0][1][1] - 0.1f32.sin()).abs() < 1e-7);
    }

    #[test]
    fn table_rows_are_the_host_angles_to_the_bit() {
        // Dynamic NTK past `max_position_embeddings` (16) would change the angles: the table
        // stops there.
        for scaling in [RopeScaling::Default, RopeScaling::Dynamic { factor: 2.0 }] {
            let r = rope(scaling);
            assert_eq!(r.device_table_len(), 16);
            let rows = vec![vec![3u32], vec![15], vec![0]];
            let at = Tensor::new(rows.clone(), &Device::Cpu).unwrap();
            let (cos, sin) = r.cos_sin(&rows, DType::F32, &Device::Cpu).unwrap();
            let (cos_at, sin_at) = r.cos_sin_at(&at, DType::F32, &Device::Cpu).unwrap();
            assert_eq!(cos_at.dims(), &[3, 1, 4]);
            let bits = |t: &Tensor| -> Vec<u32> {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            assert_eq!(bits(&cos_at), bits(&cos));
            assert_eq!(bits(&sin_at), bits(&sin));
            // The first call fixed the table's dtype.
            assert!(r.cos_sin_at(&at, DType::BF16, &Device::Cpu).is_err());
        }
    }
}
