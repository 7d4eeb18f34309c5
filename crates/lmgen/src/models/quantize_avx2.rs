//! AVX2 dot products of Q8_0 weight rows with Q8_0-quantized activations, chosen at run time.
//!
//! candle 0.11.1 runs its own AVX2 kernel on a CPU with AVX2 and FMA (`has_avx2_fma()`, decided
//! at run time, in any build), one weight row by one activation row at a time. These kernels
//! carry their own target features ([`super::layers::gemv_avx2::available`] decides), and work
//! on tiles of `MR` activation rows by `NR` weight rows: each weight block is loaded, and its
//! absolute values and scale computed, once for all the activation rows of a batch.
//!
//! Per block the arithmetic is candle's (`avx::vec_dot_q8_0_q8_0`, from ggml): the signed bytes
//! are multiplied as `|w| * sign(x, w)` with `maddubs`, pairs summed to 8 i32 lanes, converted
//! and multiplied into the accumulator by `d_w * d_x`; the 8 lanes are summed in the same order,
//! so a product equals candle's to the bit.
//!
//! Unsafe code is allowed here only: the intrinsics and raw block pointers need it.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use candle_core::quantized::k_quants::BlockQ8_0;

#[cfg(target_arch = "x86_64")]
use super::layers::gemv_avx2::{hsum, store};

/// Bytes of a Q8_0 block: an f16 scale, then 32 signed bytes.
const BLOCK_BYTES: usize = 34;

/// How far ahead of each weight row's current block to prefetch: 16 blocks, about the latency of
/// a read from the last-level cache at the rate a core consumes blocks. Without it the 4-row tile
/// was slower than candle's one-row loop (SmolLM2-135M Q8_0 batch-1 decode 45 against 49 tokens/s
/// on the development machine); with it, 49-50.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 16 * BLOCK_BYTES;

/// `y_t[(j - first) * m + i] = dot(x[i], w[j])` for the weight rows `first..first + rows` of `w`
/// and the `m` activation rows of `x`, each row `blocks` blocks long.
///
/// # Safety
/// [`super::layers::gemv_avx2::available`] must be true.
pub unsafe fn band(
    x: &[BlockQ8_0],
    m: usize,
    blocks: usize,
    w: &[BlockQ8_0],
    first: usize,
    y_t: &mut [f32],
) {
    assert_eq!(std::mem::size_of::<BlockQ8_0>(), BLOCK_BYTES);
    let rows = y_t.len() / m;
    assert!(x.len() >= m * blocks && w.len() >= (first + rows) * blocks);
    #[cfg(target_arch = "x86_64")]
    {
        let stride = blocks * BLOCK_BYTES;
        let wp = w.as_ptr().add(first * blocks).cast::<u8>();
        sweep::<Q8_0Tiles>(x.as_ptr().cast::<u8>(), stride, wp, stride, blocks, m, y_t);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, first, blocks);
        unreachable!("the AVX2 kernels run only on x86-64");
    }
}

/// A weight block format with AVX2 tiles (Q8_0 here, Q4_K and Q6_K in
/// [`super::quantize_k_avx2`]), for [`sweep`].
pub trait Tile {
    /// `out[i][j] = dot(x[i], w[j])` over `blocks` blocks, for `MR` activation rows and `NR`
    /// weight rows that follow each other in memory.
    ///
    /// # Safety
    /// [`super::layers::gemv_avx2::available`] must be true; `x` must point to `MR` rows and `w`
    /// to `NR` rows of `blocks` blocks each.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const u8,
        w: *const u8,
        blocks: usize,
        out: &mut [[f32; NR]; MR],
    );
}

/// The Q8_0 tiles of this file.
#[cfg(target_arch = "x86_64")]
struct Q8_0Tiles;

#[cfg(target_arch = "x86_64")]
impl Tile for Q8_0Tiles {
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const u8,
        w: *const u8,
        blocks: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        tile::<MR, NR>(x, w, blocks, out)
    }
}

/// Covers `y_t.len() / m` weight rows (from `w`, `w_stride` bytes apart) by the `m` activation
/// rows (from `x`, `x_stride` bytes apart) with `T`'s tiles: weight rows 4 at a time against 2
/// activation rows (then 1), the last weight rows one at a time; `y_t[j * m + i]` gets
/// `dot(x[i], w[j])`.
///
/// # Safety
/// As for [`Tile::tile`], over the whole band.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn sweep<T: Tile>(
    x: *const u8,
    x_stride: usize,
    w: *const u8,
    w_stride: usize,
    blocks: usize,
    m: usize,
    y_t: &mut [f32],
) {
    let rows = y_t.len() / m;
    let mut j = 0;
    while j + 4 <= rows {
        let wj = w.add(j * w_stride);
        let mut i = 0;
        while i < m {
            let xi = x.add(i * x_stride);
            if m - i >= 2 {
                let mut out = [[0f32; 4]; 2];
                T::tile::<2, 4>(xi, wj, blocks, &mut out);
                store(&out, y_t, j, i, m);
                i += 2;
            } else {
                let mut out = [[0f32; 4]; 1];
                T::tile::<1, 4>(xi, wj, blocks, &mut out);
                store(&out, y_t, j, i, m);
                i += 1;
            }
        }
        j += 4;
    }
    for j in j..rows {
        let wj = w.add(j * w_stride);
        for i in 0..m {
            let mut out = [[0f32; 1]; 1];
            T::tile::<1, 1>(x.add(i * x_stride), wj, blocks, &mut out);
            y_t[j * m + i] = out[0][0];
        }
    }
}

/// The f16 at `p` (a block's scale), widened to f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
#[inline]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = std::ptr::read_unaligned(p.cast::<u16>());
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// `out[i][j] = dot(x[i], w[j])` over `blocks` blocks, for `MR` activation rows and `NR` weight
/// rows that follow each other in memory.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // `i` and `j` index the accumulators and two other arrays
unsafe fn tile<const MR: usize, const NR: usize>(
    x: *const u8,
    w: *const u8,
    blocks: usize,
    out: &mut [[f32; NR]; MR],
) {
    let stride = blocks * BLOCK_BYTES;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    for b in 0..blocks {
        let mut xq = [_mm256_setzero_si256(); MR];
        let mut xd = [0f32; MR];
        for i in 0..MR {
            let p = x.add(i * stride + b * BLOCK_BYTES);
            xd[i] = f16_at(p);
            xq[i] = _mm256_loadu_si256(p.add(2).cast::<__m256i>());
        }
        for j in 0..NR {
            let p = w.add(j * stride + b * BLOCK_BYTES);
            // A prefetch does not fault, so past the last row is harmless.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES).cast::<i8>());
            let wd = f16_at(p);
            let wq = _mm256_loadu_si256(p.add(2).cast::<__m256i>());
            let aw = _mm256_sign_epi8(wq, wq);
            for i in 0..MR {
                let sx = _mm256_sign_epi8(xq[i], wq);
                let pairs = _mm256_madd_epi16(ones, _mm256_maddubs_epi16(aw, sx));
                let d = _mm256_set1_ps(wd * xd[i]);
                acc[i][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(pairs), acc[i][j]);
            }
        }
    }
    for i in 0..MR {
        for j in 0..NR {
            out[i][j] = hsum(acc[i][j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::k_quants::GgmlType;

    use super::*;
    use crate::models::layers::gemv_avx2::available;

    /// Equal to candle's own block dot product for every tile shape and remainder.
    #[test]
    fn bands_equal_candles_dot_products() {
        if !available() {
            return;
        }
        let (k, n) = (96, 11);
        let blocks = k / 32;
        let mut seed = 11u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 9) as f32 / (1u32 << 23) as f32 - 0.5
        };
        let wf: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let mut w = vec![BlockQ8_0::zeros(); n * blocks];
        BlockQ8_0::from_float(&wf, &mut w);
        for m in 1..=5 {
            let xf: Vec<f32> = (0..m * k).map(|_| next() * 3.0).collect();
            let mut x = vec![BlockQ8_0::zeros(); m * blocks];
            BlockQ8_0::from_float(&xf, &mut x);
            let first = 2;
            let rows = n - first;
            let mut y = vec![0f32; rows * m];
            unsafe { band(&x, m, blocks, &w, first, &mut y) };
            for j in 0..rows {
                for i in 0..m {
                    let wj = &w[(first + j) * blocks..(first + j + 1) * blocks];
                    let want = BlockQ8_0::vec_dot(k, wj, &x[i * blocks..(i + 1) * blocks]);
                    let got = y[j * m + i];
                    // candle runs its AVX2 kernel on any CPU with AVX2 and FMA, which
                    // `available()` implies.
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "m={m} row {j}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
