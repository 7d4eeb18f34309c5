//! `lmgen init-random --config FILE --dtype f32|f16|bf16 --out DIR`: a random-weight checkpoint
//! of a given shape in the Hugging Face layout (`config.json`, `generation_config.json`,
//! `model.safetensors`), for benchmarks of real shapes when no hub is reachable. The shapes of
//! SmolLM2-135M/360M, Qwen2.5-0.5B and Llama-3.2-1B are in the repository's `benches/configs/`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lmgen::init::init_random;
use lmgen_server::model_args::DTypeArg;

#[derive(Args, Debug)]
pub struct InitRandomArgs {
    /// A `config.json` (e.g. `benches/configs/smollm2-135m.json`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The dtype the weights are stored in.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the weights: the same seed writes the same checkpoint.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: InitRandomArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read `{}`", args.config.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not valid JSON", args.config.display()))?;
    let params = init_random(&config, args.dtype.into(), &args.out, args.seed)?;
    eprintln!(
        "wrote {} ({:.1}M parameters, {:?})",
        args.out.display(),
        params as f64 / 1e6,
        args.dtype
    );
    Ok(())
}
