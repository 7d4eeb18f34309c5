//! HF `BayesianDetectorModel` (`src/transformers/generation/watermarking.py`; the paper's Bayesian
//! score): P(watermarked | g-values) by Bayes' rule, with a learned likelihood of the g-values of
//! watermarked text and Bernoulli(0.5) for unwatermarked text.
//!
//! Likelihood of watermarked text (`BayesianDetectorWatermarkedLikelihood`), per n-gram and layer
//! `l`: `psi = sigmoid(sum_{j<l} delta[l, j] * g_j + beta[l])` (the chance of two distinct tokens in
//! the layer's match), `P(g_l | w) = 0.5 * ((g_l + 0.5) * psi + (1 - psi))`. The posterior is
//! `sigmoid(log(prior / (1 - prior)) + sum over scored n-grams and layers of log(P(g|w) / 0.5))`,
//! in float32.
//!
//! Deliberate difference: transformers `squeeze()`s the logits, which with a depth of 1 broadcasts
//! them against the wrong axes; lmgen computes the formula above for every depth.

use std::path::Path;

use serde_json::Value;

use super::invalid_arg;
use crate::error::{Error, Result};

/// HF `BayesianDetectorModel` with its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct BayesianDetectorModel {
    /// `[depth]`: `likelihood_model_watermarked.beta` (stored `[1, 1, depth]`).
    beta: Vec<f32>,
    /// `[depth, depth]` row-major: `likelihood_model_watermarked.delta` (stored `[1, 1, depth, depth]`).
    delta: Vec<f32>,
    /// P(watermarked) before seeing the text: the `prior` parameter.
    prior: f32,
    /// The `watermarking_config` the detector was trained for (`config.json`), when saved with it.
    pub watermarking_config: Option<Value>,
}

impl BayesianDetectorModel {
    /// A detector from its parameters: `beta` `[depth]`, `delta` `[depth, depth]` row-major, `prior`.
    pub fn new(beta: Vec<f32>, delta: Vec<f32>, prior: f32) -> Result<Self> {
        let depth = beta.len();
        if depth == 0 || delta.len() != depth * depth {
            return Err(invalid_arg(format!(
                "a Bayesian detector needs `beta` of [depth] and `delta` of [depth, depth] values, got {} and {}",
                beta.len(),
                delta.len()
            )));
        }
        Ok(Self {
            beta,
            delta,
            prior,
            watermarking_config: None,
        })
    }

    /// Loads `BayesianDetectorModel.save_pretrained(dir)`: `config.json` (`watermarking_depth`,
    /// `watermarking_config`) and `model.safetensors` (`likelihood_model_watermarked.beta`,
    /// `likelihood_model_watermarked.delta`, `prior`).
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let json_err = |message: String| Error::Json {
            path: config_path.clone(),
            message,
        };
        let config: Value = serde_json::from_str(&text).map_err(|e| json_err(e.to_string()))?;
        let depth = config["watermarking_depth"]
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|&d| d > 0)
            .ok_or_else(|| json_err("`watermarking_depth` must be a positive integer".into()))?;
        let weights_path = dir.join("model.safetensors");
        let weights_err = |message: String| Error::Weights {
            path: weights_path.clone(),
            message,
        };
        let tensors = candle_core::safetensors::load(&weights_path, &candle_core::Device::Cpu)
            .map_err(|e| weights_err(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = tensors
                .get(name)
                .ok_or_else(|| weights_err(format!("no tensor `{name}`")))?;
            if t.dims() != shape {
                return Err(weights_err(format!(
                    "`{name}` has shape {:?}, expected {shape:?} (watermarking_depth {depth})",
                    t.dims()
                )));
            }
            t.to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| weights_err(format!("`{name}`: {e}")))
        };
        let beta = read("likelihood_model_watermarked.beta", &[1, 1, depth])?;
        let delta = read("likelihood_model_watermarked.delta", &[1, 1, depth, depth])?;
        let prior = read("prior", &[1])?[0];
        let mut model = Self::new(beta, delta, prior)?;
        model.watermarking_config =
            Some(config["watermarking_config"].clone()).filter(|v: &Value| v.is_object());
        Ok(model)
    }

    /// The number of tournament layers the detector models.
    pub fn watermarking_depth(&self) -> usize {
        self.beta.len()
    }

    /// HF `forward(g_values, mask)`: P(watermarked | g-values) of each row.
    /// `g_values`: `[b, t, depth]` of 0/1; `mask`: `[b, t]` (n-grams to count) -> `[b]`.
    pub fn forward(&self, g_values: &[Vec<Vec<u8>>], mask: &[Vec<bool>]) -> Result<Vec<f32>> {
        let depth = self.watermarking_depth();
        if g_values.len() != mask.len() {
            return Err(invalid_arg(format!(
                "the Bayesian detector got g-values of {} rows and a mask of {}",
                g_values.len(),
                mask.len()
            )));
        }
        let prior = self.prior.clamp(1e-5, 1.0 - 1e-5);
        let relative_surprisal_prior = prior.ln() - (1.0 - prior).ln();
        let log_unwatermarked = 0.5f32.ln();
        g_values
            .iter()
            .zip(mask)
            .map(|(rows, m)| {
                if rows.len() != m.len() || rows.iter().any(|g| g.len() != depth) {
                    return Err(invalid_arg(format!(
                        "the Bayesian detector needs g-values of [t, {depth}] and a mask of [t]; got {} n-grams and {} mask values",
                        rows.len(),
                        m.len()
                    )));
                }
                let mut sum = 0f32;
                for (g, &keep) in rows.iter().zip(m) {
                    for l in 0..depth {
                        let logit: f32 = (0..l)
                            .map(|j| self.delta[l * depth + j] * f32::from(g[j]))
                            .sum::<f32>()
                            + self.beta[l];
                        let p_two = 1.0 / (1.0 + (-logit).exp());
                        let p_one = 1.0 - p_two;
                        let likelihood = 0.5 * ((f32::from(g[l]) + 0.5) * p_two + p_one);
                        let log_odds = likelihood.max(1e-30).ln() - log_unwatermarked;
                        sum += log_odds * f32::from(u8::from(keep));
                    }
                }
                Ok(1.0 / (1.0 + (-(relative_surprisal_prior + sum)).exp()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No n-gram scored: the posterior is the prior.
    #[test]
    fn nothing_scored_gives_the_prior() {
        let m =
            BayesianDetectorModel::new(vec![-2.5, -2.0], vec![0.0, 0.0, 1.0, 0.0], 0.3).unwrap();
        let p = m.forward(&[vec![vec![1, 0]]], &[vec![false]]).unwrap();
        assert!((p[0] - 0.3).abs() < 1e-6, "{p:?}");
        // More g = 1 values make watermarking more likely.
        let ones = m.forward(&[vec![vec![1, 1]; 4]], &[vec![true; 4]]).unwrap()[0];
        let zeros = m.forward(&[vec![vec![0, 0]; 4]], &[vec![true; 4]]).unwrap()[0];
        assert!(ones > 0.3 && zeros < 0.3, "{ones} {zeros}");
        assert!(m.forward(&[vec![vec![1]]], &[vec![true]]).is_err());
        assert!(BayesianDetectorModel::new(vec![1.0], vec![], 0.5).is_err());
    }
}
