//! Helpers shared by the integration tests that compare models' logits.

use candle_core::{Device, Tensor};
use lmgen::cache::DynamicCache;
use lmgen::models::{CausalLM, ForwardInput, LogitsToKeep};

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
        num_hidden_layers: None,
    };
    Ok(model
        .forward(&input, &mut DynamicCache::new())?
        .logits
        .squeeze(0)?)
}
