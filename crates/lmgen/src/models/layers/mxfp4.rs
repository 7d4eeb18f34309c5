//! MXFP4 expert weights as the published gpt-oss checkpoints store them (OCP microscaling FP4):
//! `{name}_blocks` `[experts, rows, cols / 32, 16]` u8, two 4-bit E2M1 codes per byte (the low
//! nibble first), and `{name}_scales` `[experts, rows, cols / 32]` u8, one power-of-two exponent
//! (biased by 127) per 32 values. Dequantized at load exactly as transformers'
//! `convert_moe_packed_tensors` does (the values are exact in f32), one expert at a time, each
//! kept as stored (`[rows, cols]`, a linear layer's `[out, in]`).

use candle_core::{Device, Tensor};

use super::LoadContext;
use crate::error::{Error, Result};

/// The 16 E2M1 values.
const FP4: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// `2^k` (`torch.ldexp`'s factor), exact for every u8 scale.
fn pow2(k: i32) -> f32 {
    if (-126..=127).contains(&k) {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        2f64.powi(k) as f32
    }
}

/// `blocks` `[experts, rows, groups, 16]` and `scales` `[experts, rows, groups]` -> the f32
/// values `[experts, rows, groups * 32]`.
pub fn dequantize(blocks: &[u8], scales: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() * 2);
    for (group, &scale) in blocks.chunks_exact(16).zip(scales) {
        let f = pow2(scale as i32 - 127);
        for &byte in group {
            out.push(FP4[(byte & 0x0f) as usize] * f);
            out.push(FP4[(byte >> 4) as usize] * f);
        }
    }
    out
}

/// `{name}_blocks` and `{name}_scales` of `experts` matrices of `rows` x `cols` (as stored), one
/// `[rows, cols]` tensor per expert in the weight dtype (the `[out, in]` layout of a linear layer:
/// transformers' dequantized `gate_up_proj` / `down_proj` transposed back).
///
/// Dequantized one expert at a time, so the f32 values of a single expert are the only temporary:
/// a gpt-oss-20b layer's 32 `gate_up_proj` experts are 2.1 GB in f32, one of them 66 MB.
pub fn load_experts(
    ctx: &LoadContext<'_>,
    name: &str,
    [experts, rows, cols]: [usize; 3],
) -> Result<Vec<Tensor>> {
    if cols % 32 != 0 {
        return Err(Error::config(format!(
            "`{name}_blocks`: MXFP4 needs rows of a multiple of 32 values, got {cols}"
        )));
    }
    let groups = cols / 32;
    let stored = |suffix: &str| ctx.names.stored(&format!("{name}{suffix}"));
    let blocks = ctx
        .weights
        .u8s(&stored("_blocks"), &[experts, rows, groups, 16])?;
    let scales = ctx
        .weights
        .u8s(&stored("_scales"), &[experts, rows, groups])?;
    let per_expert = rows * groups;
    blocks
        .chunks_exact(per_expert * 16)
        .zip(scales.chunks_exact(per_expert))
        .map(|(b, s)| {
            Ok(
                Tensor::from_vec(dequantize(b, s), (rows, cols), &Device::Cpu)?
                    .to_dtype(ctx.weight_dtype)?
                    .to_device(ctx.device)?,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_nibble_first_scaled_by_the_exponent() {
        // 0x21: low nibble 1 (0.5), high nibble 2 (1.0); 0xF8: -0.0 then -6.0.
        let mut blocks = vec![0u8; 16];
        blocks[0] = 0x21;
        blocks[1] = 0xf8;
        let got = dequantize(&blocks, &[128]); // x 2
        assert_eq!(&got[..4], &[1.0, 2.0, -0.0, -12.0]);
        assert_eq!(got.len(), 32);
        assert_eq!(dequantize(&blocks, &[127])[0], 0.5);
        assert_eq!(pow2(-127), 2f32.powi(-127));
        assert_eq!(dequantize(&blocks, &[0])[1], 2f32.powi(-127));
    }
}
