//! Times candle-transformers' own models on a checkpoint, as `lmgen bench` does:
//! prefill of P tokens (one forward), then decode of N tokens at batch 1 after a 128-token prompt
//! (greedy argmax, EOS ignored). Prints one JSON line.
//!
//! Usage: candle-peer DIR_OR_GGUF DTYPE(f32|f16|bf16|gguf) PREFILL_LEN DECODE_TOKENS REPS
//! Token ids: `(7 + 31 * i) % vocab`, the same ids `lmgen bench` feeds.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama, quantized_qwen2, qwen2};

enum Model {
    Llama(llama::Llama, llama::Config, DType),
    Qwen2(qwen2::ModelForCausalLM),
    QLlama(quantized_llama::ModelWeights),
    QQwen2(quantized_qwen2::ModelWeights),
}

struct Runner {
    model: Model,
    cache: Option<llama::Cache>,
}

impl Runner {
    fn reset(&mut self) -> Result<()> {
        match &mut self.model {
            Model::Llama(_, cfg, dtype) => {
                self.cache = Some(llama::Cache::new(true, *dtype, cfg, &Device::Cpu)?)
            }
            Model::Qwen2(m) => m.clear_kv_cache(),
            // The quantized models reset their cache when called at position 0.
            Model::QLlama(_) | Model::QQwen2(_) => {}
        }
        Ok(())
    }

    /// Logits of the last position, `[vocab]`.
    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Tensor> {
        let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = match &mut self.model {
            Model::Llama(m, _, _) => {
                let cache = self.cache.as_mut().context("cache")?;
                m.forward(&x, pos, cache)?
            }
            Model::Qwen2(m) => m.forward(&x, pos)?,
            Model::QLlama(m) => m.forward(&x, pos)?,
            Model::QQwen2(m) => m.forward(&x, pos)?,
        };
        let logits = logits.to_dtype(DType::F32)?;
        Ok(match logits.rank() {
            3 => logits.i((0, logits.dim(1)? - 1))?,
            2 => logits.i(0)?,
            _ => logits,
        })
    }
}

fn load(path: &str, dtype: &str) -> Result<(Runner, usize)> {
    let dev = Device::Cpu;
    if dtype == "gguf" {
        let mut file = std::fs::File::open(path)?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut file)?;
        let arch = content
            .metadata
            .get("general.architecture")
            .context("general.architecture")?
            .to_string()?
            .clone();
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .context("token_embd.weight")?
            .shape
            .dims()[0];
        let model = match arch.as_str() {
            "llama" => Model::QLlama(quantized_llama::ModelWeights::from_gguf(content, &mut file, &dev)?),
            "qwen2" => Model::QQwen2(quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &dev)?),
            other => bail!("architecture {other}"),
        };
        return Ok((Runner { model, cache: None }, vocab));
    }
    let dtype = match dtype {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("dtype {other}"),
    };
    let dir = std::path::Path::new(path);
    let text = std::fs::read_to_string(dir.join("config.json"))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let files = [dir.join("model.safetensors")];
    #[allow(unsafe_code)]
    // SAFETY: the checkpoint is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, &dev)? };
    let vocab = json["vocab_size"].as_u64().context("vocab_size")? as usize;
    let model = match json["model_type"].as_str() {
        Some("qwen2") => {
            let cfg: qwen2::Config = serde_json::from_str(&text)?;
            Model::Qwen2(qwen2::ModelForCausalLM::new(&cfg, vb)?)
        }
        Some("llama") => {
            let cfg: llama::LlamaConfig = serde_json::from_str(&text)?;
            let cfg = cfg.into_config(false);
            Model::Llama(llama::Llama::load(vb, &cfg)?, cfg, dtype)
        }
        other => bail!("model_type {other:?}"),
    };
    Ok((Runner { model, cache: None }, vocab))
}

fn argmax(x: &Tensor) -> Result<u32> {
    Ok(x.argmax(0)?.to_scalar::<u32>()?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        bail!("usage: candle-peer DIR_OR_GGUF DTYPE PREFILL_LEN DECODE_TOKENS REPS");
    }
    let (prefill, decode, reps): (usize, usize, usize) = (a[3].parse()?, a[4].parse()?, a[5].parse()?);
    let (mut r, vocab) = load(&a[1], &a[2])?;
    let ids = |n: usize| -> Vec<u32> { (0..n).map(|i| ((7 + 31 * i) % vocab) as u32).collect() };
    let (p_ids, d_ids) = (ids(prefill), ids(128));
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for rep in 0..reps + 1 {
        r.reset()?;
        let t = Instant::now();
        argmax(&r.forward(&p_ids, 0)?)?;
        let tp = t.elapsed().as_secs_f64();
        r.reset()?;
        let mut tok = argmax(&r.forward(&d_ids, 0)?)?;
        let t = Instant::now();
        for i in 0..decode {
            tok = argmax(&r.forward(&[tok], 128 + i)?)?;
        }
        let td = t.elapsed().as_secs_f64();
        if rep > 0 {
            // rep 0 is the warm-up
            pre.push(prefill as f64 / tp);
            dec.push(decode as f64 / td);
        }
    }
    println!(
        "{}",
        serde_json::json!({"engine": "candle", "prefill_tok_s": median(pre), "decode_tok_s": median(dec)})
    );
    Ok(())
}
