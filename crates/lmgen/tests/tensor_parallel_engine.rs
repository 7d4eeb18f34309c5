//! The continuous-batching engine over a model split across ranks: rank 0's engine
//! ([`ContinuousBatchingManager::with_ranks`]) broadcasts each step and the other ranks run it
//! ([`lmgen::engine::follow`]), in-process ranks here. Concurrent greedy requests, with prompt
//! chunks (a small step budget), shared prefixes (prefix caching) and decode steps of several
//! sequences, give the whole model's engine tokens, on 2 ranks (key/value heads split) and 4
//! (key/value heads replicated), for architectures that differ in their attention (sliding
//! windows, softcapping, sinks, q/k norms), feed-forward (mixtures of experts) and recurrent
//! layers (short convolutions, gated DeltaNet: each rank keeps its part of every sequence's
//! state).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lmgen::cache::paged::PagedCacheConfig;
use lmgen::engine::{
    generate_batch, BatchOptions, ContinuousBatchingManager, EngineConfig, Request,
};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, load_model_sharded, CausalLM, DType, LoadOptions};
use lmgen::parallel::{Communicator, Shard};
use lmgen::GenerationConfig;

mod common;

use common::on_ranks;

fn dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model)
}

/// Blocks of 4 tokens and 8 new tokens a step: prompts arrive in chunks, several sequences
/// share each step.
fn engine() -> EngineConfig {
    EngineConfig {
        cache: PagedCacheConfig {
            block_size: 4,
            num_blocks: 96,
        },
        max_batch_tokens: 8,
        ..EngineConfig::default()
    }
}

/// Five prompts; the first two share their first 8 tokens (two full blocks).
fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 15, 27, 33, 5, 60, 70, 8, 91, 12],
        vec![1, 15, 27, 33, 5, 60, 70, 8, 44],
        vec![3, 9],
        vec![7, 100, 11, 41, 13, 99, 2, 17, 18, 19, 20, 21, 22],
        vec![250],
    ]
}

fn greedy() -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: Some(6),
        do_sample: Some(false),
        ..GenerationConfig::default()
    }
}

/// Each request's generated tokens through the whole model's engine.
fn whole(model: &str) -> anyhow::Result<Vec<Vec<u32>>> {
    let checkpoint = Checkpoint::open(&dir(model))?;
    let model: Arc<dyn CausalLM> = Arc::from(load_model(&checkpoint, &LoadOptions::default())?);
    let options = BatchOptions {
        engine: engine(),
        dtype: Some(DType::F32),
        tokenizer: None,
        progress_bar: false,
        seed: None,
    };
    let outs = generate_batch(model, &prompts(), &greedy(), options)?;
    Ok(outs.into_iter().map(|o| o.generated_tokens).collect())
}

/// This rank's part of the model, and its group.
fn rank_model(
    checkpoint: &Checkpoint,
    shard: &Shard,
) -> anyhow::Result<(Arc<dyn CausalLM>, Arc<dyn Communicator>)> {
    let model = load_model_sharded(checkpoint, &LoadOptions::default(), shard)?;
    Ok((Arc::from(model), shard.comm().clone()))
}

/// The same through the engine on rank 0 of `world` ranks, the others following.
fn split(model: &str, world: usize) -> anyhow::Result<Vec<Vec<u32>>> {
    let checkpoint = Checkpoint::open(&dir(model))?;
    let ranks = on_ranks(world, |shard| {
        let (model, comm) = rank_model(&checkpoint, &shard)?;
        if shard.rank() > 0 {
            lmgen::engine::follow(model, &engine(), DType::F32, comm)?;
            return Ok(Vec::new());
        }
        let manager =
            ContinuousBatchingManager::new(model, engine(), DType::F32, None)?.with_ranks(comm)?;
        manager.start()?;
        let ids = prompts()
            .into_iter()
            .map(|p| manager.add_request(Request::new(p, greedy())))
            .collect::<lmgen::Result<Vec<_>>>()?;
        let mut outs = Vec::new();
        for id in &ids {
            let out = manager
                .get_result(Some(id), Some(Duration::from_secs(120)))
                .ok_or_else(|| anyhow::anyhow!("request {id}: no result"))?;
            outs.push(out.generated_tokens);
        }
        manager.stop(true, Some(Duration::from_secs(10)));
        Ok(outs)
    })?;
    Ok(ranks.into_iter().next().unwrap_or_default())
}

#[test]
fn split_engine_gives_the_whole_models_tokens() -> anyhow::Result<()> {
    for model in [
        "golden/models/llama",
        "golden/models/qwen2",
        "golden/models/gemma2",
        "golden-arch/models/qwen3",
        "golden-arch/models/gemma3_text",
        "golden-arch/models/olmo2",
        "golden-arch/models/qwen3_moe",
        "golden-arch/models/gpt_oss",
        "golden-arch/models/gemma4_text",
        "golden-arch/models/lfm2",
        "golden-arch/models/qwen3_5_text",
        "golden-arch/models/qwen3_next",
    ] {
        let want = whole(model)?;
        assert!(
            want.iter().all(|t| t.len() == 6),
            "{model}: a request ended early: {want:?}"
        );
        for world in [2, 4] {
            let got = split(model, world)?;
            assert_eq!(got, want, "{model} on {world} ranks");
        }
    }
    Ok(())
}

/// An encoder-decoder model is refused by rank 0's engine and by the following ranks, naming
/// what it lacks.
#[test]
fn split_engine_refuses_encoder_decoder_models() -> anyhow::Result<()> {
    let checkpoint = Checkpoint::open(&dir("golden-seq2seq/models/t5"))?;
    let errors = on_ranks(2, |shard| {
        let (model, comm) = rank_model(&checkpoint, &shard)?;
        let err = if shard.rank() > 0 {
            lmgen::engine::follow(model, &engine(), DType::F32, comm).err()
        } else {
            let manager = ContinuousBatchingManager::new(model, engine(), DType::F32, None)?
                .with_ranks(comm)?;
            manager.start().err()
        };
        Ok(err.map(|e| e.to_string()))
    })?;
    for err in errors {
        let err = err.ok_or_else(|| anyhow::anyhow!("an encoder-decoder model was not refused"))?;
        assert!(err.contains("decoder-only models"), "{err}");
    }
    Ok(())
}

/// A following rank given a step whose slot counts do not add up to its header's (not what rank
/// 0 sends: another build, or not rank 0 at all) returns an error naming it, never panics.
#[test]
fn follower_refuses_a_malformed_step() -> anyhow::Result<()> {
    use candle_core::{Device, Tensor};
    let checkpoint = Checkpoint::open(&dir("golden/models/llama"))?;
    let errors = on_ranks(2, |shard| {
        let (model, comm) = rank_model(&checkpoint, &shard)?;
        if shard.rank() > 0 {
            return Ok(lmgen::engine::follow(model, &engine(), DType::F32, comm)
                .err()
                .map(|e| e.to_string()));
        }
        // One token, one sequence, 1 slot in the header; the body claims 5 slots for it.
        let header = [1u32, 1, 1, 1, 0];
        comm.broadcast(&Tensor::new(&header[..], &Device::Cpu)?, 0)?;
        let body = [7u32, 0, 0, 1, 5, 0, 0, 0];
        comm.broadcast(&Tensor::new(&body[..], &Device::Cpu)?, 0)?;
        Ok(None)
    })?;
    let err = errors[1]
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("a malformed step was not refused"))?;
    assert!(err.contains("slot counts do not add to 1"), "{err}");
    Ok(())
}
