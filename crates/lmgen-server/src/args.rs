//! `lmgen serve` / `lmgen-server` flags.

use clap::Args;
use lmgen::cache::paged::PagedCacheConfig;
use lmgen::engine::{EngineConfig, SchedulerPolicy};
use lmgen::models::{DType, LoadOptions, ModelConfig};

/// Flags of the server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Checkpoint directory or model id (`org/name`, from the local Hugging Face cache).
    #[arg(long)]
    pub model: String,
    /// The model name clients use (default: `--model` as given).
    #[arg(long)]
    pub served_model_name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// KV-cache budget in GiB.
    #[arg(long, default_value_t = 1.0)]
    pub kv_cache_gb: f64,
    /// KV-cache budget in tokens (overrides `--kv-cache-gb`).
    #[arg(long)]
    pub kv_cache_tokens: Option<usize>,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// New tokens per engine step over all sequences (prefill chunk budget).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Sequences decoding together at most.
    #[arg(long, default_value_t = 64)]
    pub max_running: usize,
    /// Sequences waiting beyond `--max-running` before requests get 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// `fifo` or `prefill_first`.
    #[arg(long, default_value = "fifo")]
    pub scheduler: String,
    /// Turn off sharing of identical prompt prefixes.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Seconds to let running requests finish after SIGTERM before cancelling them.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Compute dtype of the weights and the KV cache: `f32`, `f16` or `bf16`.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Device: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ServeArgs {
    /// `--dtype`.
    pub fn dtype(&self) -> lmgen::Result<DType> {
        match self.dtype.as_str() {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            "bf16" => Ok(DType::BF16),
            other => Err(lmgen::Error::Input(format!(
                "`--dtype {other}` is not a dtype: expected f32, f16 or bf16"
            ))),
        }
    }

    /// How to load the model: `--dtype` on `--device`.
    pub fn load_options(&self) -> lmgen::Result<LoadOptions> {
        Ok(LoadOptions {
            dtype: Some(self.dtype()?),
            device: lmgen::device::parse(&self.device)?,
            ..LoadOptions::default()
        })
    }

    /// The engine configuration these flags describe.
    pub fn engine_config(&self, model: &ModelConfig) -> lmgen::Result<EngineConfig> {
        let cache = match self.kv_cache_tokens {
            Some(tokens) => PagedCacheConfig::from_tokens(tokens, self.block_size)?,
            None => {
                if !(self.kv_cache_gb.is_finite() && self.kv_cache_gb > 0.0) {
                    return Err(lmgen::Error::Input(format!(
                        "`--kv-cache-gb` must be a positive number, got {}",
                        self.kv_cache_gb
                    )));
                }
                let bytes = (self.kv_cache_gb * (1u64 << 30) as f64) as u64;
                PagedCacheConfig::from_memory(bytes, self.block_size, model, self.dtype()?)?
            }
        };
        let config = EngineConfig {
            cache,
            scheduler: SchedulerPolicy::from_name(&self.scheduler)?,
            max_batch_tokens: self.max_batch_tokens,
            max_running: self.max_running,
            prefix_caching: !self.no_prefix_caching,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["serve", "--model", "m"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).serve
    }

    #[test]
    fn dtype_and_device_flags() {
        assert_eq!(args(&[]).load_options().unwrap().dtype, Some(DType::F32));
        assert_eq!(args(&["--dtype", "bf16"]).dtype().unwrap(), DType::BF16);
        let e = args(&["--dtype", "f8"]).dtype().unwrap_err().to_string();
        assert!(e.contains("--dtype f8"), "{e}");
        let e = args(&["--device", "tpu"]).load_options().unwrap_err();
        assert!(e.to_string().contains("tpu"), "{e}");
    }
}
