//! What a decode step must read, what the model keeps resident, and the process's memory:
//! the numbers the bandwidth bound and the peak-RSS goal are computed from.
//!
//! Bytes read per step (performance notes, section 2): every linear weight once, the LM head
//! included even when tied (the whole `vocab x hidden` matrix is read), norms and biases; not the
//! input embedding table (a gather of one row per token). Plus the KV cache: per cached token,
//! `2 * layers * kv_heads * head_dim * sizeof(compute dtype)` (f32 for half-precision weights on
//! the CPU, which compute in f32).
//!
//! A mixture-of-experts layer reads only the experts its token is routed to: at batch 1,
//! `num_experts_per_tok` of `num_experts`, so expert weights count with that fraction (the
//! active-parameter bound).

use lmgen::load::Checkpoint;
use lmgen::models::{DType, ModelConfig, Quantization};

/// Embedding tables are gathered, not read whole, at decode.
fn is_embedding(name: &str) -> bool {
    name.ends_with("embed_tokens.weight")
        || name.ends_with("wte.weight")
        || name.ends_with("wpe.weight")
}

/// The sizes a bench run needs.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Weight bytes one decode step reads.
    pub read_per_step: usize,
    /// Weight bytes the loaded model holds.
    pub resident: usize,
    /// KV-cache bytes per cached token and row.
    pub kv_per_token: usize,
}

impl Footprint {
    /// `[dtype, compute]`: the weights' dtype and the dtype activations and the KV cache run in.
    pub fn new(
        checkpoint: &Checkpoint,
        config: &ModelConfig,
        [dtype, compute]: [DType; 2],
        quantize: Option<Quantization>,
    ) -> Self {
        let w = &checkpoint.weights;
        let elem = dtype.size_in_bytes();
        // A GGUF file's Q8_0 / Q4_K / Q6_K weights keep their blocks; the rest follows `quantize`.
        let linear_bytes =
            |name: &str, shape: &[usize]| match (w.quantized_bytes(name), quantize, shape) {
                (Some(bytes), _, _) => bytes,
                (None, Some(q), [rows, cols]) => q.bytes(*rows, *cols),
                _ => shape.iter().product::<usize>() * elem,
            };
        // The share of an expert tensor one token reads.
        let active = |name: &str| match &config.moe {
            Some(moe) if name.contains(".experts.") && moe.num_experts > 0 => {
                moe.num_experts_per_tok as f64 / moe.num_experts as f64
            }
            _ => 1.0,
        };
        let (mut read, mut resident) = (0, 0);
        for name in w.names() {
            let Some(shape) = w.shape(name) else { continue };
            let dense = shape.iter().product::<usize>() * elem;
            if is_embedding(name) {
                // The token table is held in blocks when quantized (GGUF or `quantize`, where its
                // rows split into blocks); GPT-2's position table stays dense.
                let blocks = match (quantize, shape) {
                    (Some(q), [_, cols]) => cols % q.format_for(*cols).block_size() == 0,
                    _ => false,
                };
                let quantized = w.quantized_bytes(name).is_some() || blocks;
                resident += if quantized && !name.ends_with("wpe.weight") {
                    linear_bytes(name, shape)
                } else {
                    dense
                };
            } else {
                read += (linear_bytes(name, shape) as f64 * active(name)).round() as usize;
                resident += linear_bytes(name, shape);
            }
        }
        // A tied LM head reads the whole embedding matrix, which the model holds once.
        let tied = !w.contains("lm_head.weight");
        if tied {
            let embed = w
                .names()
                .find(|n| n.ends_with("embed_tokens.weight") || n.ends_with("wte.weight"));
            if let Some((name, shape)) = embed.and_then(|n| Some((n, w.shape(n)?))) {
                read += linear_bytes(name, shape);
            }
        }
        let kv_per_token = 2
            * config.num_hidden_layers
            * config.num_key_value_heads
            * config.head_dim
            * compute.size_in_bytes();
        Self {
            read_per_step: read,
            resident,
            kv_per_token,
        }
    }
}

/// `VmRSS` and `VmHWM` (peak) of this process in bytes, from `/proc/self/status` (Linux).
pub fn rss() -> (Option<usize>, Option<usize>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
            .map(|kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak (`VmHWM`) to the current RSS (`/proc/self/clear_refs`, value 5). Best effort.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
