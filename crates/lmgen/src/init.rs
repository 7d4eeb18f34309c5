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
use crate::models::config::ConfigFile;
use crate::models::registry;

/// How a tensor is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Init {
    /// Uniform with the standard deviation `initializer_range`.
    Random,
    /// 1 (a norm's identity).
    Ones,
    /// 0 (a bias, or a `1 + w` norm's identity).
    Zeros,
}

/// One tensor a model reads: its name, stored shape and initialisation.
#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    /// The HF name the model code reads.
    pub name: String,
    /// The stored shape.
    pub shape: Vec<usize>,
    pub init: Init,
}

impl TensorSpec {
    /// A tensor named `name`.
    pub fn new(name: &str, shape: Vec<usize>, init: Init) -> Self {
        Self {
            name: name.to_string(),
            shape,
            init,
        }
    }

    /// A linear layer's `{prefix}.weight` of the stored `shape` (random) and, when it has one,
    /// its `{prefix}.bias` of `bias` values (zeros).
    pub fn linear(prefix: &str, shape: [usize; 2], bias: Option<usize>) -> Vec<Self> {
        let weight = Self::new(&format!("{prefix}.weight"), shape.to_vec(), Init::Random);
        let bias = bias.map(|n| Self::new(&format!("{prefix}.bias"), vec![n], Init::Zeros));
        std::iter::once(weight).chain(bias).collect()
    }
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
    let path = out.join("config.json");
    let resolved = registry::resolve(&ConfigFile::new(config, &path))?;
    let cfg = resolved.parse()?;
    let names = resolved.weight_names(|_| false);
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
    for TensorSpec { name, shape, init } in resolved.tensor_specs(&cfg)? {
        let name = names.stored(&name);
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
    // The token ids transformers' `GenerationConfig.from_model_config` takes from the model
    // config; an encoder-decoder model cannot generate without its `decoder_start_token_id`.
    let mut gen = serde_json::Map::new();
    for key in [
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "forced_bos_token_id",
        "forced_eos_token_id",
    ] {
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
        let arch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-arch/models");
        let old = ["gpt2", "llama", "llama3", "qwen2", "mistral", "gemma2"].map(|n| golden.join(n));
        let new = [
            "qwen3",
            "gemma3_text",
            "phi3",
            "smollm3",
            "olmo2",
            "granite",
            "ministral3",
            "gemma3_mm",
            "mistral3_mm",
            "gemma4_text",
            "qwen3_moe",
            "mixtral",
            "gpt_oss",
            "qwen3_5_text",
            "qwen3_5_mm",
            "qwen3_next",
            "lfm2",
        ]
        .map(|n| arch.join(n));
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let qwen3_5_moe = [fixtures.join("qwen3_5_moe/qwen3_5_moe_text")];
        let variants = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma4-variants");
        let variants = ["shared_kv", "k_eq_v_moe"].map(|n| variants.join(n));
        let seq2seq = fixtures.join("golden-seq2seq/models");
        let seq2seq = ["bart", "mbart", "marian"].map(|n| seq2seq.join(n));
        for golden_dir in old
            .iter()
            .chain(&new)
            .chain(&variants)
            .chain(&qwen3_5_moe)
            .chain(&seq2seq)
        {
            let name = golden_dir.display();
            let text = std::fs::read_to_string(golden_dir.join("config.json")).unwrap();
            let config: Value = serde_json::from_str(&text).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let params = init_random(&config, DType::F16, dir.path(), 7).unwrap();
            assert!(params > 0);
            let gen = std::fs::read_to_string(dir.path().join("generation_config.json")).unwrap();
            let gen: Value = serde_json::from_str(&gen).unwrap();
            for key in ["decoder_start_token_id", "eos_token_id"] {
                if let Some(id) = config.get(key).filter(|v| !v.is_null()) {
                    assert_eq!(gen.get(key), Some(id), "{name}: {key}");
                }
            }
            // Every tensor the model loads is there with the right shape, and nothing else.
            let ckpt = Checkpoint::open(dir.path()).unwrap();
            load_model(&ckpt, &LoadOptions::default()).unwrap();
            let real = Checkpoint::open(golden_dir).unwrap();
            // A vision-language checkpoint also stores its vision tower, which lmgen leaves
            // unread; init writes transformers 5's names (`model.language_model.`).
            let mut want: Vec<String> = real
                .weights
                .names()
                .filter_map(|n| match n.strip_prefix("language_model.") {
                    Some(rest) => Some(match rest.strip_prefix("model.") {
                        Some(r) => format!("model.language_model.{r}"),
                        None => rest.to_string(),
                    }),
                    None if n.contains("vision")
                        || n.starts_with("multi_modal")
                        || n.starts_with("model.visual.") =>
                    {
                        None
                    }
                    None => Some(n.to_string()),
                })
                .collect();
            let mut got: Vec<String> = ckpt.weights.names().map(str::to_string).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{name}");
        }
    }
}
