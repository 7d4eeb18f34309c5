//! Helpers shared by the integration tests that compare models' logits and generate() outputs
//! with transformers'. (Each test binary uses some of them.)
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use lmgen::cache::DynamicCache;
use lmgen::models::{CausalLM, ForwardInput, LogitsToKeep};
use lmgen::GenerateOutput;
use serde_json::Value;

/// `[t, vocab]` logits of every position of `tokens`, one forward from an empty cache.
pub fn all_logits(model: &dyn CausalLM, tokens: &[u32]) -> anyhow::Result<Tensor> {
    let ids = Tensor::new(vec![tokens.to_vec()], &Device::Cpu)?;
    let pos = Tensor::new(
        vec![(0..tokens.len() as u32).collect::<Vec<_>>()],
        &Device::Cpu,
    )?;
    let input = ForwardInput {
        input_ids: &ids,
        position_ids: &pos,
        attention_mask: None,
        logits_to_keep: LogitsToKeep::All,
        output_hidden_states: false,
        output_attentions: false,
        num_hidden_layers: None,
        device_positions: None,
    };
    Ok(model
        .forward(&input, &mut DynamicCache::new())?
        .logits
        .squeeze(0)?)
}

/// A golden float: `null` is -inf.
pub fn float(v: &Value) -> f32 {
    v.as_f64().map_or(f32::NEG_INFINITY, |x| x as f32)
}

/// `got` within `tol` of `want`, relative to `max(|want|, 1)`; -inf only equals -inf.
pub fn close(got: f32, want: f32, tol: f32) -> bool {
    if want == f32::NEG_INFINITY {
        return got == want;
    }
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// `out` against a golden case's `expected`: the sequences token for token, then
/// `sequences_scores` (relative 1e-3) where the case has them. What differs is pushed onto
/// `failures` under `label`; returns whether the sequences matched.
pub fn check_sequences(
    label: &str,
    out: &GenerateOutput,
    expected: &Value,
    failures: &mut Vec<String>,
) -> anyhow::Result<bool> {
    let want: Vec<Vec<u32>> = serde_json::from_value(expected["sequences"].clone())?;
    if out.sequences != want {
        failures.push(format!(
            "{label}: sequences\n  got  {:?}\n  want {want:?}",
            out.sequences
        ));
        return Ok(false);
    }
    if let Some(want) = expected.get("sequences_scores").and_then(Value::as_array) {
        let got = out.sequences_scores.clone().unwrap_or_default();
        let ok =
            got.len() == want.len() && got.iter().zip(want).all(|(&g, w)| close(g, float(w), 1e-3));
        if !ok {
            failures.push(format!("{label}: sequences_scores {got:?} != {want:?}"));
        }
    }
    Ok(true)
}

/// The largest `|a - b|` over two `[t, vocab]` logit tables.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// At how many positions two `[t, vocab]` logit tables pick the same argmax (the first maximum).
pub fn argmax_agreement(a: &[Vec<f32>], b: &[Vec<f32>]) -> usize {
    let argmax = |r: &Vec<f32>| {
        r.iter()
            .enumerate()
            .fold(0, |best, (i, &x)| if x > r[best] { i } else { best })
    };
    a.iter()
        .zip(b)
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count()
}

/// `f` on each rank of an in-process group of `world_size` (tensor parallelism), each in its own
/// thread; the results by rank.
pub fn on_ranks<T: Send>(
    world_size: usize,
    f: impl Fn(lmgen::parallel::Shard) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    use lmgen::parallel::{LocalCommunicator, Shard};
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalCommunicator::group(world_size)?
            .into_iter()
            .map(|comm| s.spawn(move || f(Shard::new(std::sync::Arc::new(comm)))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a rank panicked"))?)
            .collect()
    })
}
