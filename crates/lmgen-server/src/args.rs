//! `lmgen serve` / `lmgen-server` flags: the shared [`ModelArgs`] and the server's own.

use clap::Args;
use lmgen::cache::paged::PagedCacheConfig;
use lmgen::engine::{EngineConfig, SchedulerPolicy};
use lmgen::models::{DType, ModelConfig};

use crate::model_args::ModelArgs;
use crate::tool_calls::Family;

/// Flags of the server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    // Which model to load and how, as for every `lmgen` subcommand (`--model` defaults to the
    // shipped `models/tiny-austen`, as there).
    #[command(flatten)]
    pub model: ModelArgs,
    /// The model name clients use (default: `--model` as given, or `tiny-austen`).
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
    /// The tool-call format to read (vLLM's `--tool-call-parser` names), in place of the one the
    /// chat template writes.
    #[arg(long, value_name = "NAME", value_parser = tool_call_parser)]
    pub tool_call_parser: Option<Family>,
    /// Ranks to split the model across (tensor parallelism, Megatron-style): this process is
    /// rank 0 and runs the engine; it starts ranks 1..N as processes on this machine (GPU `r`
    /// after `--device`'s for rank `r`), unless `--tensor-parallel-listen`. Steps go to the ranks
    /// over TCP; activations over TCP on the CPU, through NCCL on GPUs (built with
    /// `--features lmgen/nccl`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub tensor_parallel_size: u16,
    /// Rank 0 listens for the other ranks here (e.g. `0.0.0.0:29500`) and starts none: each is
    /// started by hand, on this host or another, with the same flags plus
    /// `--tensor-parallel-rank` and `--tensor-parallel-addr`.
    #[arg(long, value_name = "HOST:PORT")]
    pub tensor_parallel_listen: Option<std::net::SocketAddr>,
    /// Runs rank R (1..N) of `--tensor-parallel-size N`, joining rank 0 at
    /// `--tensor-parallel-addr` (rank 0 starts these itself unless `--tensor-parallel-listen`).
    #[arg(long, value_name = "R", requires = "tensor_parallel_addr")]
    pub tensor_parallel_rank: Option<u16>,
    /// Rank 0's `--tensor-parallel-listen` address, for `--tensor-parallel-rank`.
    #[arg(long, value_name = "HOST:PORT")]
    pub tensor_parallel_addr: Option<std::net::SocketAddr>,
}

fn tool_call_parser(name: &str) -> Result<Family, String> {
    Family::from_parser_name(name)
        .ok_or_else(|| format!("one of {}, got {name:?}", Family::PARSER_NAMES))
}

impl ServeArgs {
    /// The id `/v1/models` lists: `--served-model-name`, else `--model` as given, else
    /// `tiny-austen` (the default model).
    pub fn model_id(&self) -> String {
        self.served_model_name
            .clone()
            .unwrap_or_else(|| self.model.model_name().to_string())
    }

    /// The engine configuration these flags describe, for a model of `model`'s shape whose keys
    /// and values are `dtype` (the loaded model's compute dtype, [`lmgen::models::CausalLM::dtype`]).
    pub fn engine_config(&self, model: &ModelConfig, dtype: DType) -> lmgen::Result<EngineConfig> {
        let cache = match self.kv_cache_tokens {
            Some(tokens) => PagedCacheConfig::from_tokens(tokens, self.block_size)?,
            None => {
                if !(self.kv_cache_gb.is_finite() && self.kv_cache_gb > 0.0) {
                    return Err(lmgen::Error::input(format!(
                        "`--kv-cache-gb` must be a positive number, got {}",
                        self.kv_cache_gb
                    )));
                }
                let bytes = (self.kv_cache_gb * (1u64 << 30) as f64) as u64;
                PagedCacheConfig::from_memory(bytes, self.block_size, model, dtype)?
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
    use clap::error::ErrorKind;
    use clap::Parser;
    use lmgen::models::{AttnImplementation, Quantization};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).map(|c| c.serve)
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["--model", "m"];
        argv.extend_from_slice(extra);
        parse(&argv).unwrap()
    }

    #[test]
    fn the_model_flags_are_the_shared_ones() {
        let options = args(&[]).model.load_options().unwrap();
        assert_eq!(options.dtype, Some(DType::F32));
        assert!(options.device.is_cpu());
        let serve = args(&[
            "--dtype",
            "bf16",
            "--quantize",
            "q8_0",
            "--gguf-file",
            "m.gguf",
            "--attn-implementation",
            "eager",
        ]);
        let options = serve.model.load_options().unwrap();
        assert_eq!(options.dtype, Some(DType::BF16));
        assert_eq!(options.quantize, Some(Quantization::Q8_0));
        assert_eq!(
            options.gguf_file.as_deref(),
            Some(std::path::Path::new("m.gguf"))
        );
        assert_eq!(options.attn_implementation, AttnImplementation::Eager);
        let e = args(&["--device", "tpu"]).model.load_options().unwrap_err();
        assert!(e.to_string().contains("`--device tpu`"), "{e}");
    }

    #[test]
    fn a_bad_dtype_is_a_clap_error_naming_the_flag() {
        let e = parse(&["--model", "m", "--dtype", "f8"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue, "{e}");
        let message = e.to_string();
        assert!(
            message.contains("--dtype") && message.contains("f8"),
            "{message}"
        );
    }

    #[test]
    fn the_model_id_is_the_served_name_or_the_model_as_given() {
        assert_eq!(args(&[]).model_id(), "m");
        assert_eq!(args(&["--served-model-name", "x"]).model_id(), "x");
        let default = parse(&[]).unwrap();
        assert_eq!(
            default.model.model_or_default(),
            crate::model_args::DEFAULT_MODEL
        );
        assert_eq!(default.model_id(), "tiny-austen");
    }
}
