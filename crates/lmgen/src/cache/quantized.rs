//! HF `QuantizedCache` (`cache_implementation="quantized"`, settings in `cache_config`): keys
//! and values quantized to `nbits` per value, the most recent ones kept in full precision
//! (KIVI-style; transformers' `QuantizedLayer`, `cache_utils.py`).
//!
//! Per layer, exactly as transformers' `QuantizedLayer.update`:
//! - the first update (the prompt) quantizes its keys and values and returns them unquantized;
//!   the full-precision residual starts empty;
//! - every later update returns `cat(dequantize(quantized), residual, new)`; then, when the
//!   residual holds tokens and `len(residual) + 1 >= residual_length`, that whole concatenation
//!   is quantized again (already-dequantized values included) and the residual emptied; otherwise
//!   the new tokens join the residual.
//!
//! The quantizers are in [`super::quantizer`] (quanto or HQQ, on the host in f32). Like
//! transformers, only models whose layers are all full attention can use it, and it neither
//! reorders rows nor crops: beam search, contrastive search and assisted decoding refuse it.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::quantizer::{dequantize, quantize, Backend, Quantized, Scheme};
use super::KvCache;
use crate::error::{Error, Result};

/// `cache_config` of the quantized cache, with transformers' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizedCacheConfig {
    /// `backend`: `"quanto"` (default) or `"hqq"`.
    pub backend: Backend,
    /// `nbits`, default 4.
    pub nbits: u32,
    /// `axis_key`, default 0.
    pub axis_key: i64,
    /// `axis_value`, default 0.
    pub axis_value: i64,
    /// `q_group_size`, default 64.
    pub q_group_size: usize,
    /// `residual_length`, default 128.
    pub residual_length: usize,
}

impl Default for QuantizedCacheConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Quanto,
            nbits: 4,
            axis_key: 0,
            axis_value: 0,
            q_group_size: 64,
            residual_length: 128,
        }
    }
}

impl QuantizedCacheConfig {
    /// Parses `cache_config` (unset: the defaults), checking each field as transformers'
    /// `QuantoQuantizedLayer` / `HQQQuantizedLayer` do.
    pub fn from_json(value: Option<&Value>) -> Result<Self> {
        let mut c = Self::default();
        let Some(value) = value else {
            return Ok(c);
        };
        let object = value.as_object().ok_or_else(|| {
            Error::config(format!("`cache_config` must be a JSON object, got {value}"))
        })?;
        let int = |key: &str, v: &Value| {
            v.as_i64().ok_or_else(|| {
                Error::config(format!("`cache_config.{key}` must be an integer, got {v}"))
            })
        };
        for (key, v) in object {
            match key.as_str() {
                "backend" => {
                    c.backend = match v.as_str() {
                        Some("quanto") => Backend::Quanto,
                        Some("hqq") => Backend::Hqq,
                        _ => {
                            return Err(Error::config(format!(
                                "Unknown quantization backend {v} in `cache_config.backend`; use \"quanto\" or \"hqq\""
                            )))
                        }
                    }
                }
                "nbits" => c.nbits = u32::try_from(int(key, v)?).unwrap_or(0),
                "axis_key" => c.axis_key = int(key, v)?,
                "axis_value" => c.axis_value = int(key, v)?,
                "q_group_size" | "residual_length" => {
                    let n = usize::try_from(int(key, v)?).ok().filter(|&n| n > 0).ok_or_else(
                        || Error::config(format!("`cache_config.{key}` must be a positive integer, got {v}")),
                    )?;
                    if key == "q_group_size" {
                        c.q_group_size = n;
                    } else {
                        c.residual_length = n;
                    }
                }
                other => {
                    return Err(Error::config(format!(
                        "`cache_config` has no field `{other}` for the quantized cache; it takes backend, \
                         nbits, axis_key, axis_value, q_group_size, residual_length"
                    )))
                }
            }
        }
        let (name, bits, axes): (&str, &[u32], [i64; 2]) = match c.backend {
            Backend::Quanto => ("quanto", &[2, 4], [0, -1]),
            Backend::Hqq => ("HQQ", &[1, 2, 3, 4, 8], [0, 1]),
        };
        if !bits.contains(&c.nbits) {
            return Err(Error::config(format!(
                "`nbits` for `{name}` backend has to be one of {bits:?} but got {} (`cache_config.nbits`)",
                c.nbits
            )));
        }
        for (field, axis) in [("axis_key", c.axis_key), ("axis_value", c.axis_value)] {
            if !axes.contains(&axis) {
                return Err(Error::config(format!(
                    "`{field}` for `{name}` backend has to be one of {axes:?} but got {axis} (`cache_config.{field}`)"
                )));
            }
        }
        Ok(c)
    }

    fn scheme(&self, axis: i64) -> Scheme {
        Scheme {
            backend: self.backend,
            nbits: self.nbits,
            axis,
            group_size: self.q_group_size,
        }
    }
}

/// One layer: the quantized part and the full-precision residual.
#[derive(Debug, Clone)]
struct Layer {
    keys: Quantized,
    values: Quantized,
    /// `[b, kv_heads, r, d]`, `None` while empty.
    residual: Option<(Tensor, Tensor)>,
    /// Tokens seen (`cumulative_length`).
    len: usize,
}

/// A KV cache storing most tokens quantized (HF `QuantizedCache`).
#[derive(Debug, Clone)]
pub struct QuantizedCache {
    config: QuantizedCacheConfig,
    layers: Vec<Option<Layer>>,
}

impl QuantizedCache {
    /// An empty cache quantizing with `config`.
    pub fn new(config: QuantizedCacheConfig) -> Self {
        Self {
            config,
            layers: Vec::new(),
        }
    }

    /// Bytes held: quantized codes with their scales and offsets, plus the residual.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.layers
            .iter()
            .flatten()
            .map(|l| {
                l.keys.bytes()
                    + l.values.bytes()
                    + l.residual.as_ref().map_or(0, |(k, v)| size(k) + size(v))
            })
            .sum()
    }
}

/// `[b, h, t, d]` -> quantized on the host.
fn quantize_tensor(x: &Tensor, scheme: Scheme) -> Result<Quantized> {
    let values: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    quantize(&values, x.dims(), scheme)
}

fn dequantize_tensor(q: &Quantized, dtype: DType, device: &Device) -> Result<Tensor> {
    let t = Tensor::from_vec(dequantize(q), q.shape.as_slice(), &Device::Cpu)?;
    Ok(t.to_dtype(dtype)?.to_device(device)?)
}

impl KvCache for QuantizedCache {
    fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (kq, vq) = (
            self.config.scheme(self.config.axis_key),
            self.config.scheme(self.config.axis_value),
        );
        let t = k.dim(2)?;
        let Some(mut entry) = self.layers[layer].take() else {
            self.layers[layer] = Some(Layer {
                keys: quantize_tensor(k, kq)?,
                values: quantize_tensor(v, vq)?,
                residual: None,
                len: t,
            });
            return Ok((k.clone(), v.clone()));
        };
        let (dtype, device) = (k.dtype(), k.device());
        let mut ks = vec![dequantize_tensor(&entry.keys, dtype, device)?];
        let mut vs = vec![dequantize_tensor(&entry.values, dtype, device)?];
        if let Some((rk, rv)) = &entry.residual {
            ks.push(rk.clone());
            vs.push(rv.clone());
        }
        ks.push(k.clone());
        vs.push(v.clone());
        let all_k = Tensor::cat(&ks, 2)?.contiguous()?; // [b, h, past + t, d]
        let all_v = Tensor::cat(&vs, 2)?.contiguous()?;
        let residual_len = entry
            .residual
            .as_ref()
            .map(|(rk, _)| rk.dim(2))
            .transpose()?;
        match residual_len {
            Some(r) if r + 1 >= self.config.residual_length => {
                entry.keys = quantize_tensor(&all_k, kq)?;
                entry.values = quantize_tensor(&all_v, vq)?;
                entry.residual = None;
            }
            _ => {
                entry.residual = Some(match entry.residual.take() {
                    Some((rk, rv)) => (Tensor::cat(&[&rk, k], 2)?, Tensor::cat(&[&rv, v], 2)?),
                    None => (k.clone(), v.clone()),
                });
            }
        }
        entry.len += t;
        self.layers[layer] = Some(entry);
        Ok((all_k, all_v))
    }

    fn seq_len(&self) -> usize {
        self.layers.iter().flatten().next().map_or(0, |l| l.len)
    }

    fn reorder(&mut self, _beam_idx: &[usize]) -> Result<()> {
        Err(no_rows())
    }

    fn batch_repeat_interleave(&mut self, _n: usize) -> Result<()> {
        Err(no_rows())
    }
}

fn no_rows() -> Error {
    Error::unsupported(
        "the quantized cache (`cache_implementation=\"quantized\"`) cannot reorder or repeat its rows, \
         which beam search and contrastive search need",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cache_config_is_checked_as_transformers_checks_it() {
        let parse = |v: Value| QuantizedCacheConfig::from_json(Some(&v));
        assert_eq!(
            QuantizedCacheConfig::from_json(None).ok(),
            Some(QuantizedCacheConfig::default())
        );
        let c = parse(json!({"backend": "hqq", "nbits": 8, "axis_key": 1, "residual_length": 4}));
        assert_eq!(
            c.ok().map(|c| (c.nbits, c.axis_key, c.residual_length)),
            Some((8, 1, 4))
        );
        for (bad, field) in [
            (json!({"nbits": 8}), "`nbits` for `quanto` backend"),
            (
                json!({"backend": "hqq", "nbits": 5}),
                "`nbits` for `HQQ` backend",
            ),
            (json!({"axis_key": 1}), "`axis_key` for `quanto` backend"),
            (
                json!({"backend": "hqq", "axis_value": -1}),
                "`axis_value` for `HQQ` backend",
            ),
            (json!({"backend": "HQQ"}), "Unknown quantization backend"),
            (json!({"q_group_size": 0}), "`cache_config.q_group_size`"),
            (json!({"bits": 4}), "no field `bits`"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    /// The residual fills to `residual_length - 1`, then everything is quantized again.
    #[test]
    fn residual_flushes_as_transformers() -> Result<()> {
        let config = QuantizedCacheConfig {
            nbits: 4,
            q_group_size: 4,
            residual_length: 3,
            ..QuantizedCacheConfig::default()
        };
        let mut cache = QuantizedCache::new(config);
        let x = |t: usize, base: f32| {
            let v: Vec<f32> = (0..t * 4).map(|i| base + i as f32 * 0.37).collect();
            Tensor::from_vec(v, (1, 1, t, 4), &Device::Cpu)
        };
        let prompt = x(2, 0.0)?;
        let (k, _) = cache.update(0, &prompt, &prompt)?;
        assert_eq!(
            k.flatten_all()?.to_vec1::<f32>()?,
            prompt.flatten_all()?.to_vec1::<f32>()?,
            "prompt unquantized"
        );
        let residual = |c: &QuantizedCache| {
            c.layers[0]
                .as_ref()
                .and_then(|l| l.residual.as_ref())
                .map(|r| r.0.dim(2).unwrap_or(0))
        };
        for (step, want) in [(1, Some(1)), (2, Some(2)), (3, None), (4, Some(1))] {
            let one = x(1, step as f32)?;
            let (k, _) = cache.update(0, &one, &one)?;
            assert_eq!(k.dim(2)?, 2 + step);
            assert_eq!(residual(&cache), want, "step {step}");
        }
        assert_eq!(cache.seq_len(), 6);
        Ok(())
    }
}
