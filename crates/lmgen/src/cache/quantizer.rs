//! The two quantizers transformers' `QuantizedCache` can use, reproduced on the host in f32:
//! optimum-quanto's `MaxOptimizer` + `quantize_weight` (backend `"quanto"`, 2 or 4 bits) and
//! HQQ's `Quantizer.quantize` with its default proximal optimizer (backend `"hqq"`, 1 to 8 bits).
//!
//! Both are affine and group-wise: a tensor of `numel` values is cut into `numel / q_group_size`
//! groups, each with its own scale and offset, and every value becomes an unsigned code of
//! `nbits` bits. Which values form a group depends on the backend and the axis:
//! - quanto, axis 0: `reshape(-1, q_group_size)`, groups of consecutive values;
//! - quanto, axis -1: `quanto.tensor.grouped.group`: per last-dim feature `j`, runs of
//!   `q_group_size` consecutive rows of the `[numel / d, d]` view;
//! - hqq, axis 1: `reshape(-1, q_group_size)` (consecutive values); axis 0:
//!   `reshape(q_group_size, -1)` and a group per column (values `numel / q_group_size` apart).
//!
//! quanto: `scale = (max - min) / (2^bits - 1)`, `shift = -min`,
//! `code = clamp(round((x + shift) / scale))`, `x' = scale * code - shift`.
//! hqq: `scale = (2^bits - 1) / (max - min)` (1 when `|max - min| <= 1e-4`, at most 2e4),
//! `zero = -min * scale`, then up to 20 half-quadratic steps that move `zero` (the l_0.7 proximal
//! operator, beta 10, stopping when the mean error grows), `code = clamp(round(x * scale +
//! zero))`, `x' = (code - zero) * (1 / scale)`. Rounding is to even, as `torch.round`. Codes are
//! kept bit-packed (`nbits` per value, 8-bit codes one per byte).

use crate::error::{Error, Result};

/// Which library's quantizer (`cache_config["backend"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// optimum-quanto (transformers' default): 2 or 4 bits, axis 0 or -1.
    Quanto,
    /// HQQ: 1, 2, 3, 4 or 8 bits, axis 0 or 1.
    Hqq,
}

/// How values are grouped and coded: the quantizer settings of one key or value tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// Which quantizer.
    pub backend: Backend,
    /// Bits per code.
    pub nbits: u32,
    /// 0 or -1 (quanto), 0 or 1 (hqq).
    pub axis: i64,
    /// Values per group (`q_group_size`).
    pub group_size: usize,
}

/// A quantized tensor: packed codes and one scale and offset per group.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// The original shape.
    pub shape: Vec<usize>,
    /// `nbits` per value, little end first within each byte.
    packed: Vec<u8>,
    /// Per group: quanto's `scale`, hqq's `1 / scale`.
    scale: Vec<f32>,
    /// Per group: quanto's `shift`, hqq's `zero`.
    offset: Vec<f32>,
    scheme: Scheme,
}

impl Quantized {
    /// Bytes held: codes, scales and offsets.
    pub fn bytes(&self) -> usize {
        self.packed.len() + 4 * (self.scale.len() + self.offset.len())
    }
}

/// Flat index of value `i` of group `g`.
fn index(scheme: &Scheme, shape: &[usize], numel: usize, g: usize, i: usize) -> usize {
    let gs = scheme.group_size;
    match (scheme.backend, scheme.axis) {
        (Backend::Quanto, 0) | (Backend::Hqq, 1) => g * gs + i,
        (Backend::Hqq, _) => i * (numel / gs) + g,
        (Backend::Quanto, _) => {
            // Group g = (feature j, run r) with g = j * runs + r; value i is row r * gs + i.
            let d = shape.last().copied().unwrap_or(1);
            let runs = numel / d / gs;
            let (j, r) = (g / runs, g % runs);
            (r * gs + i) * d + j
        }
    }
}

fn check(scheme: &Scheme, shape: &[usize], numel: usize) -> Result<()> {
    let gs = scheme.group_size;
    let (name, axis_numel) = match (scheme.backend, scheme.axis) {
        (Backend::Quanto, 0) => ("quanto", numel / shape.first().copied().unwrap_or(1).max(1)),
        (Backend::Quanto, _) => ("quanto", numel / shape.last().copied().unwrap_or(1).max(1)),
        (Backend::Hqq, _) => ("hqq", numel),
    };
    if gs == 0 || gs > axis_numel || axis_numel % gs != 0 {
        return Err(Error::config(format!(
            "`cache_config.q_group_size` ({gs}) must divide the {axis_numel} values a {name} group \
             is cut from (keys and values of shape {shape:?}); pick a divisor of the head size \
             times the number of key/value heads"
        )));
    }
    Ok(())
}

/// Quantizes `x` (the flat values of a tensor of `shape`).
pub fn quantize(x: &[f32], shape: &[usize], scheme: Scheme) -> Result<Quantized> {
    let numel = x.len();
    check(&scheme, shape, numel)?;
    let gs = scheme.group_size;
    let groups = numel / gs;
    let max_code = ((1u32 << scheme.nbits) - 1) as f32;
    // The values group by group: `grouped[g * gs + i]` is value `i` of group `g`.
    let order = group_order(&scheme, shape, numel);
    let grouped: Vec<f32> = order.iter().map(|&k| x[k]).collect();
    let mut codes_grouped = vec![0u8; numel];
    let (mut scale, mut offset) = (vec![0f32; groups], vec![0f32; groups]);
    let range = |g: &[f32]| {
        g.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    };
    match scheme.backend {
        Backend::Quanto => {
            for (g, (xs, cs)) in grouped
                .chunks(gs)
                .zip(codes_grouped.chunks_mut(gs))
                .enumerate()
            {
                let (min, max) = range(xs);
                let s = (max - min) / max_code;
                let shift = -min;
                for (c, &v) in cs.iter_mut().zip(xs) {
                    let q = ((v + shift) / s).round_ties_even();
                    // 0 / 0 when the group is constant: any code dequantizes to `min`.
                    *c = if q.is_nan() {
                        0
                    } else {
                        q.clamp(0.0, max_code) as u8
                    };
                }
                scale[g] = s;
                offset[g] = shift;
            }
        }
        Backend::Hqq => {
            let mut s = vec![0f32; groups];
            let mut zero = vec![0f32; groups];
            for (g, xs) in grouped.chunks(gs).enumerate() {
                let (min, max) = range(xs);
                let denom = max - min;
                let sc = if denom.abs() <= 1e-4 {
                    1.0
                } else {
                    max_code / denom
                };
                s[g] = sc.min(2e4);
                zero[g] = -min * s[g];
            }
            hqq_optimize(&grouped, &s, &mut zero, max_code, gs);
            for (g, (xs, cs)) in grouped
                .chunks(gs)
                .zip(codes_grouped.chunks_mut(gs))
                .enumerate()
            {
                for (c, &v) in cs.iter_mut().zip(xs) {
                    *c = (v * s[g] + zero[g]).round_ties_even().clamp(0.0, max_code) as u8;
                }
                scale[g] = 1.0 / s[g];
                offset[g] = zero[g];
            }
        }
    }
    let mut codes = vec![0u8; numel];
    for (&k, &c) in order.iter().zip(&codes_grouped) {
        codes[k] = c;
    }
    Ok(Quantized {
        shape: shape.to_vec(),
        packed: pack(&codes, scheme.nbits),
        scale,
        offset,
        scheme,
    })
}

/// Flat indices group by group: entry `g * group_size + i` is value `i` of group `g`.
fn group_order(scheme: &Scheme, shape: &[usize], numel: usize) -> Vec<usize> {
    let gs = scheme.group_size;
    (0..numel / gs)
        .flat_map(|g| (0..gs).map(move |i| index(scheme, shape, numel, g, i)))
        .collect()
}

/// HQQ's `optimize_weights_proximal_legacy` (lp_norm 0.7, beta 10, 20 steps at most) over the
/// values in group order: moves `zero` per group; stops after the first step whose mean absolute
/// error (over the whole tensor) does not improve, keeping that step's `zero`.
fn hqq_optimize(grouped: &[f32], scale: &[f32], zero: &mut [f32], max_code: f32, gs: usize) {
    const BETA: f32 = 10.0;
    const LP_NORM: f32 = 0.7;
    let shrink = |v: f32| {
        let a = v.abs();
        if v == 0.0 {
            return 0.0; // torch.sign(0) = 0
        }
        (a - (1.0 / BETA) * a.powf(LP_NORM - 1.0)).max(0.0) * v.signum()
    };
    let mut best = f32::INFINITY;
    for _ in 0..20 {
        let mut err_sum = 0f64;
        for ((xs, z), &s) in grouped.chunks(gs).zip(zero.iter_mut()).zip(scale) {
            let mut acc = 0f32;
            for &w in xs {
                let q = (w * s + *z).round_ties_even().clamp(0.0, max_code);
                let r = (q - *z) / s;
                err_sum += f64::from((w - r).abs());
                let e = shrink(w - r);
                acc += q - (w - e) * s;
            }
            *z = acc / gs as f32;
        }
        let err = (err_sum / grouped.len() as f64) as f32;
        if err < best {
            best = err;
        } else {
            break;
        }
    }
}

/// The values of `q`, flat, in the original order.
///
/// Runs at every step over a layer's whole quantized cache (as transformers' `QuantizedLayer`
/// dequantizes it), so it walks the output in order, reads each code in place from the packed
/// bytes and finds its group by arithmetic (no index or code vectors), in parallel over rows.
pub fn dequantize(q: &Quantized) -> Vec<f32> {
    use rayon::prelude::*;
    let numel: usize = q.shape.iter().product();
    let gs = q.scheme.group_size;
    let width = bit_width(q.scheme.nbits);
    let per_byte = 8 / width;
    let mask = ((1u16 << width) - 1) as u8;
    let packed = &q.packed;
    let code = move |k: usize| f32::from((packed[k / per_byte] >> ((k % per_byte) * width)) & mask);
    let (scale, offset) = (&q.scale, &q.offset);
    let hqq = q.scheme.backend == Backend::Hqq;
    let value = move |g: usize, c: f32| {
        if hqq {
            (c - offset[g]) * scale[g]
        } else {
            scale[g] * c - offset[g]
        }
    };
    let mut out = vec![0f32; numel];
    // Rows of at least 4096 values per task, whole rows of the layout below.
    let consecutive = matches!(
        (q.scheme.backend, q.scheme.axis),
        (Backend::Quanto, 0) | (Backend::Hqq, 1)
    );
    match (q.scheme.backend, q.scheme.axis) {
        // Consecutive groups of whole bytes with at most 16 codes (transformers' default, quanto
        // int4 on axis 0): a group's values from a table of its 2^nbits dequantized codes.
        _ if consecutive && width <= 4 && (gs * width).is_multiple_of(8) => {
            let group_bytes = gs * width / 8;
            let per_task = gs * 4096usize.div_ceil(gs);
            out.par_chunks_mut(per_task)
                .enumerate()
                .for_each(|(task, vals)| {
                    let first = task * per_task / gs;
                    for (i, group) in vals.chunks_mut(gs).enumerate() {
                        let g = first + i;
                        let table: [f32; 16] = std::array::from_fn(|c| value(g, c as f32));
                        let bytes = &packed[g * group_bytes..][..group_bytes];
                        for (vals, &byte) in group.chunks_mut(per_byte).zip(bytes) {
                            for (j, o) in vals.iter_mut().enumerate() {
                                *o = table[usize::from((byte >> (j * width)) & mask)];
                            }
                        }
                    }
                });
        }
        // Group g is values g * gs .. (g + 1) * gs.
        (Backend::Quanto, 0) | (Backend::Hqq, 1) => {
            let per_task = gs * 4096usize.div_ceil(gs);
            out.par_chunks_mut(per_task)
                .enumerate()
                .for_each(|(task, vals)| {
                    let start = task * per_task;
                    for (i, o) in vals.iter_mut().enumerate() {
                        let k = start + i;
                        *o = value(k / gs, code(k));
                    }
                });
        }
        // `reshape(gs, -1)`: value k is in group (column) k % (numel / gs).
        (Backend::Hqq, _) => {
            let cols = numel / gs;
            out.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
                for (g, o) in row.iter_mut().enumerate() {
                    *o = value(g, code(i * cols + g));
                }
            });
        }
        // Per last-dim feature j, runs of gs consecutive rows: row `row`, feature j is in
        // group j * runs + row / gs.
        (Backend::Quanto, _) => {
            let d = q.shape.last().copied().unwrap_or(1);
            let runs = numel / d / gs;
            out.par_chunks_mut(d).enumerate().for_each(|(row, vals)| {
                let r = row / gs;
                for (j, o) in vals.iter_mut().enumerate() {
                    *o = value(j * runs + r, code(row * d + j));
                }
            });
        }
    }
    out
}

/// `nbits`-bit codes packed into bytes (a code never straddles bytes for 1, 2, 4 and 8 bits;
/// 3-bit codes take one nibble).
fn pack(codes: &[u8], nbits: u32) -> Vec<u8> {
    let width = bit_width(nbits);
    let per_byte = 8 / width;
    codes
        .chunks(per_byte)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |b, (i, &v)| b | (v << (i * width)))
        })
        .collect()
}

#[cfg(test)]
fn unpack(packed: &[u8], nbits: u32, n: usize) -> Vec<u8> {
    let width = bit_width(nbits);
    let mask = ((1u16 << width) - 1) as u8;
    packed
        .iter()
        .flat_map(|&b| (0..8 / width).map(move |i| (b >> (i * width)) & mask))
        .take(n)
        .collect()
}

fn bit_width(nbits: u32) -> usize {
    match nbits {
        1 => 1,
        2 => 2,
        3 | 4 => 4,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(backend: Backend, nbits: u32, axis: i64) -> Scheme {
        Scheme {
            backend,
            nbits,
            axis,
            group_size: 4,
        }
    }

    /// The dequantization by the group order (the definition), for the fast one to match.
    fn dequantize_by_groups(q: &Quantized) -> Vec<f32> {
        let numel: usize = q.shape.iter().product();
        let codes = unpack(&q.packed, q.scheme.nbits, numel);
        let mut out = vec![0f32; numel];
        let order = group_order(&q.scheme, &q.shape, numel);
        for (g, ks) in order.chunks(q.scheme.group_size).enumerate() {
            for &k in ks {
                let c = f32::from(codes[k]);
                out[k] = match q.scheme.backend {
                    Backend::Quanto => q.scale[g] * c - q.offset[g],
                    Backend::Hqq => (c - q.offset[g]) * q.scale[g],
                };
            }
        }
        out
    }

    /// Every backend, bit width and axis, on a cache-shaped tensor with several rows per task:
    /// the in-place walk gives the group order's values to the bit.
    #[test]
    fn dequantize_matches_the_group_order() -> Result<()> {
        let shape = [2usize, 3, 160, 16]; // [b, kv_heads, t, d]
        let numel: usize = shape.iter().product();
        let x: Vec<f32> = (0..numel)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0)
            .collect();
        let cases = [
            (Backend::Quanto, &[2u32, 4][..], &[0i64, -1][..]),
            (Backend::Hqq, &[1, 2, 3, 4, 8], &[0, 1]),
        ];
        for (backend, bits, axes) in cases {
            for &nbits in bits {
                for &axis in axes {
                    for group_size in [16, 32, 64] {
                        let scheme = Scheme {
                            backend,
                            nbits,
                            axis,
                            group_size,
                        };
                        let q = quantize(&x, &shape, scheme)?;
                        let (fast, want) = (dequantize(&q), dequantize_by_groups(&q));
                        let same = fast
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{scheme:?}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn packing_round_trips() {
        for nbits in [1u32, 2, 3, 4, 8] {
            let codes: Vec<u8> = (0..37).map(|i| (i * 7 % (1 << nbits)) as u8).collect();
            assert_eq!(unpack(&pack(&codes, nbits), nbits, 37), codes, "{nbits}");
        }
    }

    /// quanto, 2 bits over groups of 4 consecutive values: scale (max - min) / 3, shift -min.
    #[test]
    fn quanto_codes_by_hand() -> Result<()> {
        let x = [0.0, 1.0, 2.0, 3.0, -1.0, -1.0, -1.0, -1.0];
        let q = quantize(&x, &[1, 1, 2, 4], scheme(Backend::Quanto, 2, 0))?;
        assert_eq!(dequantize(&q), x.to_vec());
        // 1.4 -> code round(1.4) = 1 -> 1.0; 1.5 -> round half to even -> 2 -> 2.0.
        let y = [0.0, 1.4, 1.5, 3.0];
        let q = quantize(&y, &[1, 1, 1, 4], scheme(Backend::Quanto, 2, 0))?;
        assert_eq!(dequantize(&q), vec![0.0, 1.0, 2.0, 3.0]);
        Ok(())
    }

    /// quanto axis -1 groups each last-dim feature's consecutive rows: with d = 2 and groups of
    /// 4, feature 0 is values 0, 2, 4, 6.
    #[test]
    fn quanto_last_axis_groups_features() -> Result<()> {
        let x = [0.0, 100.0, 1.0, 100.0, 2.0, 100.0, 3.0, 100.0];
        let q = quantize(&x, &[1, 4, 2], scheme(Backend::Quanto, 2, -1))?;
        assert_eq!(
            dequantize(&q),
            x.to_vec(),
            "each feature is exact in 2 bits"
        );
        Ok(())
    }

    #[test]
    fn hqq_8_bits_is_close_and_group_size_is_checked() -> Result<()> {
        let x: Vec<f32> = (0..32)
            .map(|i| ((i * 37) % 11) as f32 * 0.3 - 1.0)
            .collect();
        for axis in [0, 1] {
            let q = quantize(&x, &[1, 2, 16], scheme(Backend::Hqq, 8, axis))?;
            let worst = dequantize(&q)
                .iter()
                .zip(&x)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 0.02, "axis {axis}: {worst}");
        }
        let bad = quantize(&x[..6], &[1, 1, 6], scheme(Backend::Quanto, 4, 0));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("`cache_config.q_group_size` (4)"));
        Ok(())
    }
}
