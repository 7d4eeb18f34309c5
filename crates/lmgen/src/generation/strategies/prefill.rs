//! The prompt's forward (prefill), whole or in chunks: HF `GenerationMixin._prefill`
//! (`generation/utils.py`, transformers 5) with `prefill_chunk_size`.
//!
//! With a chunk size below the prompt length, the prompt runs as `torch.split(input_ids,
//! prefill_chunk_size, dim=-1)`: chunks of that many tokens, the last one shorter, each continuing
//! the cache the one before filled. Chunk `[a, b)` sees the attention mask's first `b` columns and
//! the positions `a..b` (`cumsum(mask) - 1`, as a single pass computes them), so every chunk
//! computes what a single pass computes for those tokens, and the logits of the prompt's last
//! token, which start decoding, are the single pass's (up to float rounding: the sums run over
//! the same terms in another grouping). Peak activation memory is that of one chunk.
//!
//! As in transformers, the step's output is the last chunk's: hidden states and attention
//! weights of the prefill step (`output_hidden_states`, `output_attentions`) cover the last
//! chunk's tokens only. Earlier chunks compute neither.

use super::{forward_step, StepInput};
use crate::cache::KvCache;
use crate::error::Result;
use crate::models::{CausalLM, ModelOutput};
use crate::TokenId;

/// Runs `step` (the whole prompt, `[rows, t]`) through `model`, in chunks of `chunk_size` tokens
/// when that is set and below `t`, appending to `cache`; returns the (last chunk's) output.
pub(crate) fn prefill(
    model: &dyn CausalLM,
    step: StepInput<'_>,
    chunk_size: Option<usize>,
    cache: &mut dyn KvCache,
) -> Result<ModelOutput> {
    let t = step.ids.dim(1)?;
    let Some(size) = chunk_size.filter(|&size| size > 0 && size < t) else {
        return forward_step(model, step, cache);
    };
    let mut start = 0;
    loop {
        let len = size.min(t - start);
        let end = start + len;
        let last = end == t;
        let ids = step.ids.narrow(1, start, len)?; // [rows, t] -> [rows, len]
        let positions: Vec<Vec<u32>> = step
            .positions
            .iter()
            .map(|row| row[start..end].to_vec())
            .collect();
        // Rows hold `past + t` entries: keep those up to this chunk's last token.
        let upto = |row_len: usize| row_len - (t - end);
        let mask: Option<Vec<Vec<u8>>> = step
            .mask
            .map(|rows| rows.iter().map(|r| r[..upto(r.len())].to_vec()).collect());
        let sequences: Option<Vec<Vec<TokenId>>> = step
            .sequences
            .map(|rows| rows.iter().map(|r| r[..upto(r.len())].to_vec()).collect());
        let chunk = StepInput {
            ids: &ids,
            positions: &positions,
            mask: mask.as_deref(),
            sequences: sequences.as_deref(),
            output_hidden_states: step.output_hidden_states && last,
            output_attentions: step.output_attentions && last,
            ..step
        };
        let out = forward_step(model, chunk, cache)?;
        if last {
            return Ok(out);
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::cache::DynamicCache;
    use crate::load::Checkpoint;
    use crate::models::{load_model, LoadOptions};

    /// The last position's logits after a chunked prefill match one pass's, and the cache holds
    /// the whole prompt, for chunk sizes that do and do not divide it, with left padding.
    #[test]
    fn chunks_give_the_logits_of_one_pass() -> Result<()> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/models/mistral"
        );
        let model = load_model(
            &Checkpoint::open(std::path::Path::new(dir))?,
            &LoadOptions::default(),
        )?;
        let rows = vec![vec![0u32, 0, 5, 9, 2, 7, 3], vec![4, 8, 1, 6, 2, 9, 5]];
        let mask = vec![vec![0u8, 0, 1, 1, 1, 1, 1], vec![1; 7]];
        let positions = super::super::sample::position_ids(Some(&mask), 2, 7);
        let ids = Tensor::new(rows.clone(), &Device::Cpu)?;
        let step = StepInput::last(&ids, &positions, Some(&mask)).with_sequences(&rows);
        let whole: Vec<f32> = forward_step(&*model, step, &mut DynamicCache::new())?
            .logits
            .flatten_all()?
            .to_vec1()?;
        for size in [1, 2, 3, 6, 7, 50] {
            let mut cache = DynamicCache::new();
            let got: Vec<f32> = prefill(&*model, step, Some(size), &mut cache)?
                .logits
                .flatten_all()?
                .to_vec1()?;
            let diff = got
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-4, "chunk {size}: max |diff| {diff}");
            assert_eq!(cache.seq_len(), 7, "chunk {size}");
        }
        Ok(())
    }
}
