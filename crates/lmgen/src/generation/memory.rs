//! A request's peak device memory, estimated before anything runs, so a request too large for
//! the GPU is refused with [`Error::OutOfMemory`] instead of failing half-way through its prefill.
//!
//! The estimate follows what the eager forward materialises (`models/layers/attention.rs`): for
//! the prefill of `rows` sequences of `t` tokens, the attention scores of one layer
//! (`rows * heads * t * t`, in the compute dtype, scaled into a second copy, then an f32 copy and
//! its f32 softmax) and the additive mask(s), or the MLP's three `intermediate`-wide activations,
//! whichever is larger; the residual stream; and the KV cache of every layer up to `max_length`.
//! Where the GPU's flash kernel runs the prefill's attention (unpadded prompts of a decoder-only
//! model, no attention weights returned: [`crate::cuda::flash_applies`]), no scores or masks are
//! counted, as none are made; on the CPU such a prompt's attention runs in blocks of queries
//! (`models/layers/attention/causal_cpu.rs`), so one block's scores are. It is an estimate of
//! the peak, not a bound on every allocation: allocator rounding and the cuBLAS workspace are
//! not counted.
//!
//! A long prompt whose one-pass prefill would not fit is prefilled in chunks instead
//! ([`plan_prefill`]), as if `prefill_chunk_size` had been set: each chunk's queries attend over
//! the keys so far, so the scores of a layer take `chunk * t` instead of `t * t`. The logits are
//! the one pass's up to float rounding (see `strategies/prefill.rs`). On the GPU the chunk is the
//! largest that fits the free memory; on the CPU, whose memory is not ours to measure, the one
//! that keeps a layer's prefill activations under [`CPU_PREFILL_BUDGET`].

use crate::device;
use crate::error::{Error, Result};
use crate::generation::{Mode, ResolvedGeneration};
use crate::models::{CausalLM, ModelConfig};

const GIB: f64 = (1u64 << 30) as f64;

/// The parts of the estimate, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakMemory {
    /// Rows the model runs on (prompts times beams, returned sequences or contrastive candidates).
    pub rows: usize,
    /// One prefill layer's largest activation (attention scores and mask, or the MLP).
    pub prefill: f64,
    /// The KV cache of every layer, `rows * max_length` tokens, and the recurrent layers' state
    /// of every row.
    pub kv_cache: f64,
    /// Residual stream and the last position's logits.
    pub other: f64,
}

impl PeakMemory {
    /// Everything together.
    pub fn total(&self) -> f64 {
        self.prefill + self.kv_cache + self.other
    }
}

/// The largest activations of a CPU prefill layer before the prompt is prefilled in chunks: 4 GiB
/// (a 4096-token prompt of a 14-head model in f32 still runs in one pass).
pub const CPU_PREFILL_BUDGET: f64 = 4.0 * GIB;

/// Chunk sizes tried, largest first, when a prompt's one-pass prefill does not fit.
const CHUNKS: [usize; 7] = [8192, 4096, 2048, 1024, 512, 256, 128];

/// The estimate for `rows` prompts of `t` tokens decoded to `max_length`, in `dtype_bytes`,
/// prefilled in one pass.
#[cfg(test)]
pub fn estimate(
    cfg: &ModelConfig,
    dtype_bytes: usize,
    prefill_rows: usize,
    kv_rows: usize,
    t: usize,
    max_length: usize,
) -> PeakMemory {
    estimate_chunked(cfg, dtype_bytes, prefill_rows, kv_rows, t, t, max_length)
}

/// [`estimate`] for a prefill in chunks of `chunk` tokens: the last chunk's `chunk` queries
/// attend over all `t` keys.
#[cfg(test)]
pub fn estimate_chunked(
    cfg: &ModelConfig,
    dtype_bytes: usize,
    prefill_rows: usize,
    kv_rows: usize,
    t: usize,
    chunk: usize,
    max_length: usize,
) -> PeakMemory {
    let scores = Scores::Materialised;
    estimate_with(
        cfg,
        dtype_bytes,
        prefill_rows,
        kv_rows,
        t,
        chunk,
        max_length,
        scores,
    )
}

/// How a prefill's attention treats its scores.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scores {
    /// The eager ops: `[rows, heads, chunk, t]` scores and the additive masks.
    Materialised,
    /// The GPU's flash kernel ([`crate::cuda::flash_attention`]): scores in on-chip memory, no
    /// mask built.
    OnChip,
    /// The CPU's blocks of queries ([`crate::models::layers::attention::CAUSAL_BLOCK_ROWS`] rows
    /// each, over the keys they see): at most one block's scores and mask at a time, counted
    /// as the eager ops' (the fused blocks keep less: a thread's rows of scores).
    Blocked,
}

/// [`estimate_chunked`] with the prefill attention's `scores` as the request runs them.
#[allow(clippy::too_many_arguments)]
fn estimate_with(
    cfg: &ModelConfig,
    dtype_bytes: usize,
    prefill_rows: usize,
    kv_rows: usize,
    t: usize,
    chunk: usize,
    max_length: usize,
    scores: Scores,
) -> PeakMemory {
    let d = dtype_bytes as f64;
    let chunk = chunk.min(t);
    let (rows, tt) = (prefill_rows as f64, (chunk * t) as f64);
    let t = chunk as f64;
    let heads = cfg.num_attention_heads as f64;
    let masks = if cfg.sliding_window.is_some() {
        2.0
    } else {
        1.0
    };
    // scores, scaled scores (dtype), f32 copy and f32 softmax; the masks in the dtype.
    let block = crate::models::layers::attention::CAUSAL_BLOCK_ROWS;
    let tt = match scores {
        // A chunk of fewer than two blocks runs whole.
        Scores::Blocked if chunk >= 2 * block => tt / chunk as f64 * block as f64,
        _ => tt,
    };
    let attention = match scores {
        Scores::Materialised | Scores::Blocked => {
            rows * heads * tt * (2.0 * d + 8.0) + masks * rows * tt * d
        }
        Scores::OnChip => 0.0,
    };
    let mlp = 3.0 * rows * t * cfg.intermediate_size as f64 * d;
    let kv_per_token = cfg.kv_elements_per_token() as f64;
    PeakMemory {
        rows: kv_rows,
        prefill: attention.max(mlp),
        kv_cache: kv_rows as f64
            * (max_length as f64 * kv_per_token * d
                + cfg.state_bytes_per_sequence(dtype_bytes) as f64),
        other: 4.0 * rows * t * cfg.hidden_size as f64 * d + 8.0 * rows * cfg.vocab_size as f64,
    }
}

/// What a request's prompt looks like to the estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Prompt {
    /// Rows without padding, of a decoder-only model: its attention masks by position only.
    Unpadded,
    /// Padding among the rows, or an encoder-decoder model's decoder: additive masks.
    Masked,
}

/// `g`'s peak with its prefill in chunks of `chunk` tokens.
fn peak_of(
    model: &dyn CausalLM,
    g: &ResolvedGeneration,
    prompt: Prompt,
    chunk: usize,
) -> PeakMemory {
    let rows = g.rows();
    let candidates = match g.mode {
        Mode::Contrastive(c) => c.top_k.max(1),
        _ => 1,
    };
    let cfg = model.config();
    // Every attention layer's head size must fit the kernel (Gemma 4's full layers have larger
    // heads than its sliding ones).
    let head_dims: std::collections::BTreeSet<usize> = (0..cfg.num_hidden_layers)
        .filter_map(|i| match cfg.kv_shape(i) {
            (0, _) => None, // a recurrent layer
            (_, d) => Some(d),
        })
        .collect();
    let flash = prompt == Prompt::Unpadded
        && !g.output_attentions
        && head_dims
            .iter()
            .all(|&d| crate::cuda::flash_applies(model.device(), model.dtype(), d));
    let scores = if flash {
        Scores::OnChip
    } else if prompt == Prompt::Unpadded && !g.output_attentions && model.device().is_cpu() {
        Scores::Blocked
    } else {
        Scores::Materialised
    };
    estimate_with(
        cfg,
        model.dtype().size_in_bytes(),
        rows,
        rows * candidates,
        g.prompt_len,
        chunk,
        g.lengths.max_length,
        scores,
    )
}

/// Sets `g.prefill_chunk_size` when the caller left it unset and the prompt's one-pass prefill
/// would not fit: on the GPU the largest chunk whose whole request fits the free memory, on the
/// CPU the largest whose prefill activations stay under [`CPU_PREFILL_BUDGET`]. Leaves it unset
/// when the one pass fits, or when no chunk would (the memory check then refuses the request).
pub(crate) fn plan_prefill(model: &dyn CausalLM, g: &mut ResolvedGeneration, prompt: Prompt) {
    if g.prefill_chunk_size.is_some() {
        return;
    }
    let t = g.prompt_len;
    let free = device::memory_info(model.device()).map(|(free, _)| free as f64);
    let fits = |chunk: usize| {
        let peak = peak_of(model, g, prompt, chunk);
        match free {
            Some(free) => peak.total() <= free,
            None => peak.prefill <= CPU_PREFILL_BUDGET,
        }
    };
    if let Some(chunk) = choose_chunk(t, fits) {
        tracing::info!(
            prompt_tokens = t,
            chunk,
            "the prompt's one-pass prefill does not fit; prefilling it in chunks"
        );
        g.prefill_chunk_size = Some(chunk);
    }
}

/// The prefill chunk for a `t`-token prompt: none when the one pass `fits`, else the largest of
/// [`CHUNKS`] below `t` that fits (none if none does).
fn choose_chunk(t: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    if fits(t) {
        return None;
    }
    CHUNKS.iter().copied().find(|&c| c < t && fits(c))
}

/// Refuses a request whose estimated peak exceeds the free memory of the model's GPU. Does
/// nothing on the CPU (the operating system's memory is not ours to budget).
pub(crate) fn check_fits(
    model: &dyn CausalLM,
    g: &ResolvedGeneration,
    prompt: Prompt,
) -> Result<()> {
    let Some((free, _total)) = device::memory_info(model.device()) else {
        return Ok(());
    };
    let t = g.prompt_len;
    let rows = g.rows();
    let peak = peak_of(model, g, prompt, g.prefill_chunk_size.unwrap_or(t));
    if peak.total() <= free as f64 {
        return Ok(());
    }
    Err(Error::OutOfMemory {
        message: format!(
            "this request needs about {:.1} GiB on {} and {:.1} GiB are free ({rows} rows: one layer of \
             the {t}-token prefill takes {:.1} GiB (in chunks of the smallest size tried, 128 \
             tokens, when it is long), the KV cache up to max_length {} and the recurrent state \
             take {:.1} GiB); nothing was run",
            peak.total() / GIB,
            device::name(model.device()),
            free as f64 / GIB,
            peak.prefill / GIB,
            g.lengths.max_length,
            peak.kv_cache / GIB,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::config::ModelConfig;

    fn qwen_05b() -> ModelConfig {
        let json = serde_json::json!({
            "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": true
        });
        ModelConfig::from_json(&json, std::path::Path::new("config.json")).unwrap()
    }

    #[test]
    fn a_long_prompt_is_dominated_by_attention_scores() {
        let cfg = qwen_05b();
        let peak = estimate(&cfg, 2, 1, 1, 32768, 32772);
        // 14 heads x 32768^2 x (2 + 2 + 4 + 4) bytes, plus the mask.
        let scores = 14.0 * 32768f64.powi(2) * 12.0 + 32768f64.powi(2) * 2.0;
        assert_eq!(peak.prefill, scores);
        assert!(peak.total() / GIB > 160.0, "{peak:?}");
        // KV: 24 layers x 2 x 2 heads x 64 x 2 bytes = 12 KiB a token.
        assert_eq!(peak.kv_cache, 32772.0 * 12288.0);
    }

    #[test]
    fn chunks_bound_the_scores_of_a_long_prompt() {
        let cfg = qwen_05b();
        let whole = estimate(&cfg, 2, 1, 1, 32768, 32772);
        let chunked = estimate_chunked(&cfg, 2, 1, 1, 32768, 2048, 32772);
        // 2048 queries over 32768 keys: a sixteenth of the one pass's scores.
        assert_eq!(chunked.prefill, whole.prefill / 16.0);
        assert_eq!(chunked.kv_cache, whole.kv_cache);
        assert!(chunked.prefill / GIB < 11.0, "{chunked:?}");
        // A chunk as long as the prompt is the one pass.
        assert_eq!(
            estimate_chunked(&cfg, 2, 1, 1, 512, 4096, 600),
            estimate(&cfg, 2, 1, 1, 512, 600)
        );
    }

    #[test]
    fn scores_on_chip_leave_the_mlp_as_the_prefill_peak() {
        let cfg = qwen_05b();
        let t = 32768;
        let on_chip = estimate_with(&cfg, 2, 1, 1, t, t, t + 4, Scores::OnChip);
        // gate, up and their product: 3 x 32768 x 4864 bf16 values.
        assert_eq!(on_chip.prefill, 3.0 * t as f64 * 4864.0 * 2.0);
        assert!(on_chip.total() / GIB < 2.0, "{on_chip:?}");
        let eager = estimate(&cfg, 2, 1, 1, t, t + 4);
        assert_eq!(on_chip.kv_cache, eager.kv_cache);
        assert_eq!(on_chip.other, eager.other);
    }

    #[test]
    fn blocks_of_queries_bound_the_scores_on_the_cpu() {
        let cfg = qwen_05b();
        let t = 32768;
        let whole = estimate(&cfg, 4, 1, 1, t, t + 4);
        let blocked = estimate_with(&cfg, 4, 1, 1, t, t, t + 4, Scores::Blocked);
        let block = crate::models::layers::attention::CAUSAL_BLOCK_ROWS as f64;
        // One block of queries over every key: 14 heads x 64 x 32768 x (4 + 4 + 4 + 4) bytes
        // and the block's mask; below the MLP's activations here.
        let scores = 14.0 * block * t as f64 * 16.0 + block * t as f64 * 4.0;
        assert_eq!(blocked.prefill, scores.max(3.0 * t as f64 * 4864.0 * 4.0));
        assert!(blocked.prefill < whole.prefill / 100.0, "{blocked:?}");
        // A prompt of fewer than two blocks runs whole.
        assert_eq!(
            estimate_with(&cfg, 4, 1, 1, 100, 100, 104, Scores::Blocked),
            estimate(&cfg, 4, 1, 1, 100, 104)
        );
    }

    #[test]
    fn the_largest_chunk_that_fits_is_chosen() {
        let cfg = qwen_05b();
        // The CPU rule in f32: a 4096-token prompt runs in one pass, a 32768-token one in chunks
        // whose scores stay under the budget.
        let cfg = &cfg;
        let cpu = |t: usize| {
            move |c: usize| {
                estimate_chunked(cfg, 4, 1, 1, t, c, t + 4).prefill <= CPU_PREFILL_BUDGET
            }
        };
        assert_eq!(choose_chunk(4096, cpu(4096)), None);
        assert_eq!(choose_chunk(32768, cpu(32768)), Some(512));
        assert_eq!(choose_chunk(8192, cpu(8192)), Some(2048));
        // Nothing fits: left to the memory check to refuse.
        assert_eq!(choose_chunk(32768, |_| false), None);
        // Only chunks shorter than the prompt.
        assert_eq!(choose_chunk(3000, |c| c < 3000), Some(2048));
    }

    #[test]
    fn a_short_batch_is_dominated_by_the_mlp_and_the_cache() {
        let cfg = qwen_05b();
        let peak = estimate(&cfg, 2, 64, 64, 128, 256);
        assert_eq!(peak.prefill, 3.0 * 64.0 * 128.0 * 4864.0 * 2.0);
        assert_eq!(peak.kv_cache, 64.0 * 256.0 * 12288.0);
        assert!(peak.total() / GIB < 1.0, "{peak:?}");
    }
}
