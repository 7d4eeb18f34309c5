//! Layers that keep a fixed-size state per sequence instead of keys and values: gated DeltaNet
//! linear attention (Qwen3.5, Qwen3-Next) and short gated convolutions (LFM2).

/// How a gated DeltaNet layer stores its input projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearAttentionLayout {
    /// `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`, each head-major (Qwen3.5).
    Separate,
    /// `in_proj_qkvz` and `in_proj_ba`, grouped by key head: each key head's query, key, its
    /// value heads and their gates side by side (Qwen3-Next). Regrouped at load into the
    /// [`LinearAttentionLayout::Separate`] order, so both run the same code.
    Grouped,
}

/// A gated DeltaNet layer (HF `Qwen3_5GatedDeltaNet`, `Qwen3NextGatedDeltaNet`): a causal
/// depthwise convolution over the q/k/v projections, then the gated delta rule, whose state is
/// `[value_heads, key_head_dim, value_head_dim]` per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearAttentionConfig {
    /// `linear_num_key_heads`.
    pub num_key_heads: usize,
    /// `linear_num_value_heads` (a multiple of the key heads).
    pub num_value_heads: usize,
    /// `linear_key_head_dim`.
    pub key_head_dim: usize,
    /// `linear_value_head_dim`.
    pub value_head_dim: usize,
    /// `linear_conv_kernel_dim`.
    pub conv_kernel_dim: usize,
    /// How the projections are stored.
    pub layout: LinearAttentionLayout,
}

impl LinearAttentionConfig {
    /// Query and key width, all heads: `num_key_heads * key_head_dim`.
    pub fn key_dim(&self) -> usize {
        self.num_key_heads * self.key_head_dim
    }

    /// Value width, all heads: `num_value_heads * value_head_dim`.
    pub fn value_dim(&self) -> usize {
        self.num_value_heads * self.value_head_dim
    }

    /// Channels of the convolution: query, key and value, `2 * key_dim + value_dim`.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }
}

/// LFM2's short convolution (HF `Lfm2ShortConv`): `out_proj(C * conv(B * x))` with `B`, `C`, `x`
/// from `in_proj`; its state is the last `conv_L_cache - 1` inputs of the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortConvConfig {
    /// `conv_L_cache`: the kernel size.
    pub kernel: usize,
    /// `conv_bias`: biases on `in_proj`, the convolution and `out_proj`.
    pub bias: bool,
}
