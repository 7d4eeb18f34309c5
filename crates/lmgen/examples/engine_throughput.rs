//! Aggregate decode throughput of the continuous batching engine: `n` concurrent requests with
//! prompts of 16 to 63 tokens (an encoder-decoder model's encoder inputs), each generating exactly
//! `new` tokens, all queued before the engine starts and timed from its start to the last result.
//!
//! `cargo run -p lmgen --example engine_throughput -- [MODEL] [CONCURRENCY,..] [NEW] [RUNS]`
//! MODEL is a checkpoint directory, or a `config.json` (`benches/configs/t5-small.json`) whose
//! random-weight checkpoint is written first (`lmgen init-random`, seed 0). Default: the golden
//! T5, `1,8,32`, 32 tokens, 3 runs; prints the median of the runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lmgen::cache::paged::PagedCacheConfig;
use lmgen::engine::{ContinuousBatchingManager, EngineConfig, Request, RequestStatus};
use lmgen::models::{load_model, CausalLM, DType, LoadOptions};
use lmgen::{load::Checkpoint, Error, GenerationConfig, Result, TokenId};

fn number(s: &str) -> Result<usize> {
    s.parse()
        .map_err(|_| Error::input(format!("`{s}` is not a count")))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let mut dir = PathBuf::from(arg(
        0,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden-seq2seq/models/t5"
        ),
    ));
    if dir.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(&dir).map_err(|e| Error::input(e.to_string()))?;
        let config = serde_json::from_str(&text).map_err(|e| Error::input(e.to_string()))?;
        let out = std::env::temp_dir().join("lmgen-engine-throughput");
        lmgen::init::init_random(&config, DType::F32, &out, 0)?;
        dir = out;
    }
    let (new, runs) = (number(&arg(2, "32"))?, number(&arg(3, "3"))?.max(1));
    let model: Arc<dyn CausalLM> = Arc::from(load_model(
        &Checkpoint::open(&dir)?,
        &LoadOptions::default(),
    )?);
    let mut config = GenerationConfig::from_pretrained(&dir)?;
    config.update(&GenerationConfig {
        max_new_tokens: Some(new),
        min_new_tokens: Some(new), // no early EOS: every request decodes `new` tokens
        do_sample: Some(false),
        ..GenerationConfig::default()
    });
    let vocab = model.config().vocab_size as TokenId;
    for n in arg(1, "1,8,32").split(',').map(number) {
        let n = n?;
        let mut rates = Vec::with_capacity(runs);
        for _ in 0..runs {
            let engine = EngineConfig {
                cache: PagedCacheConfig::from_tokens(n * 2 * (new + 128), 16)?,
                max_running: n,
                max_batch_tokens: 512.max(n),
                ..EngineConfig::default()
            };
            let m = ContinuousBatchingManager::new(model.clone(), engine, model.dtype(), None)?;
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let len = 16 + (i * 29) % 48;
                let prompt = (0..len).map(|j| 3 + ((i * 131 + j * 17) as TokenId % (vocab - 3)));
                ids.push(m.add_request(Request::new(prompt.collect(), config.clone()))?);
            }
            let (start, mut tokens) = (Instant::now(), 0);
            m.start()?;
            for id in &ids {
                match m.get_result(Some(id), Some(Duration::from_secs(3600))) {
                    Some(o) if o.status == RequestStatus::Finished => {
                        tokens += o.generated_tokens.len()
                    }
                    _ => return Err(Error::input(format!("request {id} did not finish"))),
                }
            }
            rates.push(tokens as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!("{n:>3} concurrent x {new} tokens: {median:>8.1} tok/s (runs: {rates:.1?})");
    }
    Ok(())
}
