//! Rotary position embeddings (HF `LlamaRotaryEmbedding` and `modeling_rope_utils.py`).
//!
//! The angles are computed on the host in f32 exactly as transformers does
//! (`inv_freq` in f32, `freqs = inv_freq * position`, then `cos`/`sin`), so rotated queries and
//! keys match to the last bits; the rotation itself is candle's non-interleaved `rope`
//! (HF `rotate_half`).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::models::config::{RopeConfig, RopeScaling};

/// Per-model rotary embedding: inverse frequencies plus the scaling rule.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// `[head_dim / 2]`, already scaled for `linear` and `llama3`.
    inv_freq: Vec<f32>,
    config: RopeConfig,
    head_dim: usize,
    max_position_embeddings: usize,
}

/// `1 / base^(2i / dim)` in f32, as `_compute_default_rope_parameters`.
fn default_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / (base as f32).powf(i as f32 / dim as f32))
        .collect()
}

impl RotaryEmbedding {
    pub fn new(config: &RopeConfig, head_dim: usize, max_position_embeddings: usize) -> Self {
        let base = default_inv_freq(config.theta, head_dim);
        let inv_freq = match config.scaling {
            RopeScaling::Default | RopeScaling::Dynamic { .. } => base,
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
            head_dim,
            max_position_embeddings,
        }
    }

    /// Inverse frequencies for a forward whose largest position is `max_pos`
    /// (dynamic NTK grows the base once the sequence passes `max_position_embeddings`).
    fn inv_freq_for(&self, max_pos: usize) -> std::borrow::Cow<'_, [f32]> {
        if let RopeScaling::Dynamic { factor } = self.config.scaling {
            let seq_len = max_pos + 1;
            if seq_len > self.max_position_embeddings {
                // `_compute_dynamic_ntk_parameters`.
                let dim = self.head_dim as f64;
                let ratio =
                    factor * seq_len as f64 / self.max_position_embeddings as f64 - (factor - 1.0);
                let base = self.config.theta * ratio.powf(dim / (dim - 2.0));
                return std::borrow::Cow::Owned(default_inv_freq(base, self.head_dim));
            }
        }
        std::borrow::Cow::Borrowed(&self.inv_freq)
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
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for row in positions {
            for &p in row {
                for &f in inv_freq.iter() {
                    let angle = f * p as f32;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
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

/// Rotates `x` `[b, h, t, d]` by the angles of `cos`/`sin` `[b, t, d/2]`.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> RotaryEmbedding {
        let cfg = RopeConfig {
            theta: 10000.0,
            scaling,
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
}
