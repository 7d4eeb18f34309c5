//! Random-weight checkpoints in the Hugging Face layout, for benchmarks and tests of real shapes
//! when no hub is reachable (the analogue of `AutoModelForCausalLM.from_config(config)` followed
//! by `save_pretrained`).
//!
//! Weights are drawn from a seeded generator (same seed, same checkpoint): linear and embedding
//! weights uniform with the standard deviation `initializer_range` (default 0.02), norms at
//! their identity (1, or 0 for Gemma's `1 + w`), biases 0.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::models::config::ModelConfig;
use crate::models::Architecture;

/// How a tensor is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Random,
    Ones,
    Zeros,
}

/// Every tensor the model code loads for `cfg`, with its on-disk shape and initialisation.
fn tensor_specs(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, Init)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (nh, nkv, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let mut t: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, init: Init| t.push((name, shape, init));
    if cfg.architecture == Architecture::Gpt2 {
        add("transformer.wte.weight".into(), vec![v, h], Init::Random);
        add(
            "transformer.wpe.weight".into(),
            vec![cfg.max_position_embeddings, h],
            Init::Random,
        );
        for l in 0..cfg.num_hidden_layers {
            let p = format!("transformer.h.{l}");
            for ln in ["ln_1", "ln_2"] {
                add(format!("{p}.{ln}.weight"), vec![h], Init::Ones);
                add(format!("{p}.{ln}.bias"), vec![h], Init::Zeros);
            }
            for (name, din, dout) in [
                ("attn.c_attn", h, 3 * h),
                ("attn.c_proj", h, h),
                ("mlp.c_fc", h, i),
                ("mlp.c_proj", i, h),
            ] {
                add(format!("{p}.{name}.weight"), vec![din, dout], Init::Random);
                add(format!("{p}.{name}.bias"), vec![dout], Init::Zeros);
            }
        }
        add("transformer.ln_f.weight".into(), vec![h], Init::Ones);
        add("transformer.ln_f.bias".into(), vec![h], Init::Zeros);
        return t;
    }
    let gemma = cfg.architecture == Architecture::Gemma2;
    let norm_init = if gemma { Init::Zeros } else { Init::Ones };
    add("model.embed_tokens.weight".into(), vec![v, h], Init::Random);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, out, inp, bias) in [
            ("self_attn.q_proj", nh * d, h, cfg.qkv_bias),
            ("self_attn.k_proj", nkv * d, h, cfg.qkv_bias),
            ("self_attn.v_proj", nkv * d, h, cfg.qkv_bias),
            ("self_attn.o_proj", h, nh * d, cfg.o_bias),
            ("mlp.gate_proj", i, h, cfg.mlp_bias),
            ("mlp.up_proj", i, h, cfg.mlp_bias),
            ("mlp.down_proj", h, i, cfg.mlp_bias),
        ] {
            add(format!("{p}.{name}.weight"), vec![out, inp], Init::Random);
            if bias {
                add(format!("{p}.{name}.bias"), vec![out], Init::Zeros);
            }
        }
        let mut norms = vec!["input_layernorm", "post_attention_layernorm"];
        if gemma {
            norms.extend(["pre_feedforward_layernorm", "post_feedforward_layernorm"]);
        }
        for n in norms {
            add(format!("{p}.{n}.weight"), vec![h], norm_init);
        }
    }
    add("model.norm.weight".into(), vec![h], norm_init);
    if !cfg.tie_word_embeddings {
        add("lm_head.weight".into(), vec![v, h], Init::Random);
    }
    t
}

/// xorshift64*: a small seeded generator, enough for random weights.
struct Rng(u64);

impl Rng {
    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Writes `config.json`, `generation_config.json` and `model.safetensors` for `config` (a
/// `config.json` value) into `out`, with weights in `dtype`. Returns the number of parameters.
pub fn init_random(config: &Value, dtype: DType, out: &Path, seed: u64) -> Result<usize> {
    let cfg = ModelConfig::from_json(config, &out.join("config.json"))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let std = config
        .get("initializer_range")
        .and_then(Value::as_f64)
        .unwrap_or(0.02) as f32;
    // A uniform [-a, a) has standard deviation a / sqrt(3).
    let scale = std * 3f32.sqrt();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut tensors = HashMap::new();
    let mut params = 0;
    for (name, shape, init) in tensor_specs(&cfg) {
        let n: usize = shape.iter().product();
        params += n;
        let data: Vec<f32> = match init {
            Init::Random => (0..n).map(|_| rng.next_f32() * scale).collect(),
            Init::Ones => vec![1.0; n],
            Init::Zeros => vec![0.0; n],
        };
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?;
        tensors.insert(name, t);
    }
    let weights = out.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)?;
    let mut config = config.clone();
    if let Some(obj) = config.as_object_mut() {
        let name = match dtype {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            _ => "float32",
        };
        obj.remove("dtype");
        obj.insert("torch_dtype".into(), Value::from(name));
    }
    let write = |file: &str, v: &Value| -> Result<()> {
        let path = out.join(file);
        let text = serde_json::to_string_pretty(v).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    };
    write("config.json", &config)?;
    let mut gen = serde_json::Map::new();
    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = config.get(key).filter(|v| !v.is_null()) {
            gen.insert(key.into(), v.clone());
        }
    }
    write("generation_config.json", &Value::Object(gen))?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Checkpoint;
    use crate::models::{load_model, LoadOptions};

    #[test]
    fn every_golden_architecture_round_trips() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models");
        for name in ["gpt2", "llama", "llama3", "qwen2", "mistral", "gemma2"] {
            let text = std::fs::read_to_string(golden.join(name).join("config.json")).unwrap();
            let config: Value = serde_json::from_str(&text).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let params = init_random(&config, DType::F16, dir.path(), 7).unwrap();
            assert!(params > 0);
            // Every tensor the model loads is there with the right shape, and nothing else.
            let ckpt = Checkpoint::open(dir.path()).unwrap();
            load_model(&ckpt, &LoadOptions::default()).unwrap();
            let real = Checkpoint::open(&golden.join(name)).unwrap();
            let mut want: Vec<&str> = real.weights.names().collect();
            let mut got: Vec<&str> = ckpt.weights.names().collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{name}");
        }
    }
}
