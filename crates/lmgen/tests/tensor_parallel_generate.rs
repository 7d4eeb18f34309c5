//! Tensor parallelism beyond the logits: what a split model returns besides them (every hidden
//! state, eager attention's weights gathered from the ranks, over a left-padded batch) and
//! `generate()` run on each rank (greedy over a padded batch, beam search, which reorders every
//! rank's cache alike, and seeded sampling, which draws alike on ranks whose logits are the same
//! bits) give what the whole model gives, in float64.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lmgen::cache::DynamicCache;
use lmgen::generation::config::UnknownFields;
use lmgen::generation::{generate_with, GenerateOptions};
use lmgen::load::Checkpoint;
use lmgen::models::{
    load_model, load_model_sharded, AttnImplementation, CausalLM, ForwardInput, LoadOptions,
    LogitsToKeep,
};
use lmgen::{GenerateInput, GenerationConfig};
use serde_json::json;

mod common;

use common::on_ranks;

/// Float64: |got - want| <= TOL_F64 * (1 + |want|).
const TOL_F64: f64 = 1e-10;

fn dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model)
}

/// The checkpoint's folder name.
fn name(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

/// Named, flattened outputs of [`padded_run`].
type Outputs = Vec<(String, Vec<f64>)>;

/// A left-padded batch of two over a prompt with every hidden state and attention weight, then
/// one decode step.
fn padded_run(model: &dyn CausalLM) -> anyhow::Result<Outputs> {
    let cpu = Device::Cpu;
    let mut cache = DynamicCache::new();
    let mut outputs = Vec::new();
    let mut mask: Vec<Vec<u8>> = vec![vec![0, 0, 1, 1, 1, 1], vec![1; 6]];
    // (ids, positions) per step.
    let steps: [[Vec<Vec<u32>>; 2]; 2] = [
        [
            vec![vec![0, 0, 5, 60, 700, 8], vec![9, 100, 11, 412, 13, 799]],
            vec![vec![1, 1, 0, 1, 2, 3], (0..6).collect()],
        ],
        [vec![vec![321], vec![77]], vec![vec![4], vec![6]]],
    ];
    for (i, [ids, positions]) in steps.into_iter().enumerate() {
        if i > 0 {
            mask.iter_mut().for_each(|row| row.push(1));
        }
        let (ids, positions) = (Tensor::new(ids, &cpu)?, Tensor::new(positions, &cpu)?);
        let input = ForwardInput {
            attention_mask: Some(&mask),
            logits_to_keep: LogitsToKeep::All,
            output_hidden_states: true,
            output_attentions: true,
            ..ForwardInput::last(&ids, &positions)
        };
        let out = model.forward(&input, &mut cache)?;
        let flat = |t: &Tensor| -> anyhow::Result<Vec<f64>> {
            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        };
        outputs.push((format!("step {i} logits"), flat(&out.logits)?));
        for (l, h) in out.hidden_states.iter().flatten().enumerate() {
            outputs.push((format!("step {i} hidden state {l}"), flat(h)?));
        }
        for (l, a) in out.attentions.iter().flatten().enumerate() {
            outputs.push((format!("step {i} attention weights {l}"), flat(a)?));
        }
    }
    Ok(outputs)
}

/// A left-padded batch, every hidden state and eager attention's weights (every head's, gathered
/// from the ranks) come out of a split model as out of the whole one, in f64.
#[test]
fn padded_batches_hidden_states_and_attention_weights_match() -> anyhow::Result<()> {
    let options = LoadOptions {
        dtype: Some(DType::F64),
        attn_implementation: AttnImplementation::Eager,
        ..LoadOptions::default()
    };
    let models = [
        "golden/models/gpt2",
        "golden/models/gemma2",
        "golden-arch/models/olmo2",
        "golden-arch/models/gpt_oss",
        "golden-arch/models/qwen3_next",
        "golden-arch/models/lfm2",
    ];
    let mut failed = Vec::new();
    for model in models {
        let checkpoint = Checkpoint::open(&dir(model))?;
        let whole = padded_run(load_model(&checkpoint, &options)?.as_ref())?;
        anyhow::ensure!(
            whole.iter().any(|(n, _)| n.contains("attention weights")),
            "{model}: no attention weights"
        );
        for world_size in [2, 4] {
            let label = format!("{} on {world_size} ranks", name(model));
            let ranks = on_ranks(world_size, |shard| {
                padded_run(load_model_sharded(&checkpoint, &options, &shard)?.as_ref())
            })?;
            if ranks.iter().any(|r| r != &ranks[0]) {
                failed.push(format!("{label}: the ranks' outputs differ"));
            }
            if ranks[0].len() != whole.len() {
                failed.push(format!(
                    "{label}: {} outputs, whole model {}",
                    ranks[0].len(),
                    whole.len()
                ));
                continue;
            }
            for ((what, got), (_, want)) in ranks[0].iter().zip(&whole) {
                let d = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                    .fold(0.0, f64::max);
                if got.len() != want.len() || d > TOL_F64 || d.is_nan() {
                    failed.push(format!(
                        "{label}: {what}: {d:e} ({} vs {} values)",
                        got.len(),
                        want.len()
                    ));
                }
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}

/// `generate()` with each decoding mode on the whole model and on every rank of a split one.
#[test]
fn generate_on_every_rank_gives_the_whole_models_sequences() -> anyhow::Result<()> {
    let options = LoadOptions {
        dtype: Some(DType::F64),
        ..LoadOptions::default()
    };
    let models = [
        "golden/models/gpt2",
        "golden/models/llama",
        "golden-arch/models/gemma3_text",
        "golden-arch/models/qwen3_moe",
        "golden-arch/models/qwen3_5_text",
        "golden-arch/models/lfm2",
    ];
    let modes = [
        json!({"max_new_tokens": 8, "do_sample": false}),
        json!({"max_new_tokens": 6, "do_sample": false, "num_beams": 3}),
        json!({"max_new_tokens": 8, "do_sample": true, "top_k": 50, "temperature": 1.3}),
    ];
    let padded = GenerateInput {
        input_ids: vec![vec![0, 0, 15, 300, 42], vec![7, 99, 512, 3, 250]],
        attention_mask: Some(vec![vec![0, 0, 1, 1, 1], vec![1; 5]]),
    };
    let single = GenerateInput {
        input_ids: vec![vec![7, 99, 512, 3, 250]],
        attention_mask: None,
    };
    let mut failed = Vec::new();
    for model in models {
        let checkpoint = Checkpoint::open(&dir(model))?;
        for mode in &modes {
            let config = GenerationConfig::from_json(mode, UnknownFields::Reject)?;
            // Beams over one prompt; greedy and sampling over the padded batch.
            let input = if mode.get("num_beams").is_some() {
                &single
            } else {
                &padded
            };
            let generate = |m: &dyn CausalLM| -> anyhow::Result<Vec<Vec<u32>>> {
                let seed = GenerateOptions {
                    seed: Some(7),
                    ..GenerateOptions::default()
                };
                Ok(generate_with(m, input, &config, seed)?.sequences)
            };
            let whole = generate(load_model(&checkpoint, &options)?.as_ref())?;
            for world_size in [2, 4] {
                let label = format!("{} on {world_size} ranks, {mode}", name(model));
                let ranks = on_ranks(world_size, |shard| {
                    generate(load_model_sharded(&checkpoint, &options, &shard)?.as_ref())
                })
                .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
                if ranks.iter().any(|r| r != &whole) {
                    failed.push(format!("{label}: {ranks:?}, whole model {whole:?}"));
                }
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}
