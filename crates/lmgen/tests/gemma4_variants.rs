//! Gemma 4 features the golden `gemma4_text` checkpoint does not use, against transformers 5.17
//! (`tests/fixtures/gemma4-variants`, made by its `make.py`): shared KV layers with double-wide
//! MLPs (`shared_kv`), and values = keys, a MoE block and soft-capping in the published config
//! layout (`k_eq_v_moe`). For each: a batch's full-prompt logits within 1e-4, then a greedy
//! decode through the KV cache, one token a step, with every step's logits within 1e-4 and the
//! same tokens.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lmgen::cache::DynamicCache;
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, ForwardInput, LoadOptions, LogitsToKeep};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemma4-variants")
        .join(name)
}

fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// `[b, t]` ids at positions `start..start + t` -> `[b, t, vocab]` logits.
fn step(
    model: &dyn CausalLM,
    ids: &[Vec<u32>],
    start: u32,
    cache: &mut DynamicCache,
) -> anyhow::Result<Tensor> {
    let t = ids[0].len() as u32;
    let input_ids = Tensor::new(ids.to_vec(), &Device::Cpu)?;
    let positions: Vec<Vec<u32>> = ids.iter().map(|_| (start..start + t).collect()).collect();
    let position_ids = Tensor::new(positions, &Device::Cpu)?;
    let input = ForwardInput {
        input_ids: &input_ids,
        position_ids: &position_ids,
        attention_mask: None,
        logits_to_keep: LogitsToKeep::All,
        output_hidden_states: false,
        output_attentions: false,
        num_hidden_layers: None,
        device_positions: None,
    };
    Ok(model.forward(&input, cache)?.logits)
}

fn check(name: &str) -> anyhow::Result<()> {
    let dir = fixture(name);
    let want = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)?;
    let get = |k: &str| {
        want.get(k)
            .ok_or_else(|| anyhow::anyhow!("{name}: expected.safetensors has no `{k}`"))
    };
    let model = load_model(&Checkpoint::open(&dir)?, &LoadOptions::default())?;

    let ids: Vec<Vec<u32>> = get("input_ids")?.to_dtype(DType::U32)?.to_vec2()?;
    let logits = step(model.as_ref(), &ids, 0, &mut DynamicCache::new())?;
    let diff = max_diff(&logits, get("logits")?)?;
    assert!(diff <= 1e-4, "{name}: full-prompt logits differ by {diff}");

    let prompt: Vec<Vec<u32>> = get("prompt")?.to_dtype(DType::U32)?.to_vec2()?;
    let generated: Vec<u32> = get("generated")?
        .to_dtype(DType::U32)?
        .squeeze(0)?
        .to_vec1()?;
    let scores = get("scores")?; // [steps, vocab]
    let mut cache = DynamicCache::new();
    let mut input = prompt.clone();
    let mut pos = 0;
    let mut tokens = Vec::new();
    for (i, &expected) in generated.iter().enumerate() {
        let logits = step(model.as_ref(), &input, pos, &mut cache)?; // [1, t, vocab]
        let last = logits.get(0)?.get(input[0].len() - 1)?; // [vocab]
        let diff = max_diff(&last, &scores.get(i)?)?;
        assert!(diff <= 1e-4, "{name}: step {i} logits differ by {diff}");
        let next = last.argmax(0)?.to_scalar::<u32>()?;
        tokens.push(next);
        pos += input[0].len() as u32;
        input = vec![vec![expected]];
    }
    assert_eq!(tokens, generated, "{name}: greedy tokens");
    Ok(())
}

#[test]
fn shared_kv_layers_match_transformers() -> anyhow::Result<()> {
    check("shared_kv")
}

#[test]
fn values_equal_keys_and_moe_match_transformers() -> anyhow::Result<()> {
    check("k_eq_v_moe")
}
