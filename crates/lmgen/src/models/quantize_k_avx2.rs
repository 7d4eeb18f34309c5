//! AVX2 dot products of Q4_K and Q6_K weight rows with Q8_K-quantized activations, chosen at
//! run time.
//!
//! candle 0.11.1 runs its own AVX2 kernels for these formats whenever the CPU has AVX2 and FMA
//! (`has_avx2_fma()` in `k_quants.rs`, decided at run time), but one weight row by one
//! activation row at a time: for a batch of `m` rows every weight block is unpacked (nibbles,
//! 6-bit scales and mins) `m` times, and a decode row runs one dependent accumulator chain. These
//! kernels work on tiles of `MR` activation rows by `NR` weight rows: a weight block is unpacked
//! once for the `MR` activation rows, and the `NR` rows give independent accumulators.
//! [`super::layers::gemv_avx2::available`] decides whether they run.
//!
//! Per block the arithmetic is candle's (`avx::vec_dot_q4k_q8k` / `avx::vec_dot_q6k_q8k`, from
//! ggml): the same integer products summed in the same 8 i32 lanes, converted and multiplied into
//! the same f32 lanes in block order, and the lanes summed in the same order, so a product equals
//! candle's to the bit.
//!
//! Unsafe code is allowed here only: the intrinsics and raw block pointers need it. The block
//! fields of candle's structs are crate-private, so blocks are read through pointers at the
//! offsets of their `#[repr(C)]` layouts (ggml's), whose sizes `band` asserts on entry.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K, BlockQ8K, GgmlType};

#[cfg(target_arch = "x86_64")]
use super::layers::gemv_avx2::hsum;
use super::quantize_avx2::Tile;
#[cfg(target_arch = "x86_64")]
use super::quantize_avx2::{f16_at, sweep};

/// Weights per super-block of every K format.
const QK_K: usize = 256;

/// Bytes of a Q8_K block: `d: f32` at 0, `qs: [i8; 256]` at 4, `bsums: [i16; 16]` at 260 (the
/// sums of each 16 `qs`).
const Q8K_BYTES: usize = 292;
/// Offset of a Q8_K block's `qs`.
#[cfg(target_arch = "x86_64")]
const Q8K_QS: usize = 4;
/// Offset of a Q8_K block's `bsums`.
#[cfg(target_arch = "x86_64")]
const Q8K_BSUMS: usize = 260;

/// Bytes of a Q4_K block: `d: f16` at 0, `dmin: f16` at 2, `scales: [u8; 12]` at 4 (eight 6-bit
/// scales and eight 6-bit mins, packed), `qs: [u8; 128]` at 16 (nibbles: byte `32 * k + l`
/// holds weight `64 * k + l` low and `64 * k + 32 + l` high).
const Q4K_BYTES: usize = 144;
/// Offset of a Q4_K block's packed scales and mins.
#[cfg(target_arch = "x86_64")]
const Q4K_SCALES: usize = 4;
/// Offset of a Q4_K block's nibbles.
#[cfg(target_arch = "x86_64")]
const Q4K_QS: usize = 16;

/// Bytes of a Q6_K block: `ql: [u8; 128]` at 0 (low nibbles), `qh: [u8; 64]` at 128 (high 2-bit
/// pairs), `scales: [i8; 16]` at 192 (one per 16 weights), `d: f16` at 208. Weights `128 * h +
/// 32 * k + l` (`k < 4`, `l < 32`) take nibble `k / 2` of `ql[64 * h + 32 * (k % 2) + l]` and
/// bits `2k..2k+2` of `qh[32 * h + l]`, minus 32.
const Q6K_BYTES: usize = 210;
/// Offset of a Q6_K block's high bits.
#[cfg(target_arch = "x86_64")]
const Q6K_QH: usize = 128;
/// Offset of a Q6_K block's scales.
#[cfg(target_arch = "x86_64")]
const Q6K_SCALES: usize = 192;
/// Offset of a Q6_K block's `d`.
#[cfg(target_arch = "x86_64")]
const Q6K_D: usize = 208;

/// A K-quant weight block format that has AVX2 tiles here; its dot-product blocks are Q8_K.
pub trait KBlock: GgmlType<VecDotType = BlockQ8K> + Tile {
    /// Bytes of one block (ggml's layout).
    const BYTES: usize;
}

impl KBlock for BlockQ4K {
    const BYTES: usize = Q4K_BYTES;
}

impl Tile for BlockQ4K {
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const u8,
        w: *const u8,
        blocks: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        q4k_tile::<MR, NR>(x, w, blocks, out)
    }
}

impl KBlock for BlockQ6K {
    const BYTES: usize = Q6K_BYTES;
}

impl Tile for BlockQ6K {
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const MR: usize, const NR: usize>(
        x: *const u8,
        w: *const u8,
        blocks: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        q6k_tile::<MR, NR>(x, w, blocks, out)
    }
}

/// `y_t[(j - first) * m + i] = dot(x[i], w[j])` for the weight rows `first..first + rows` of `w`
/// and the `m` activation rows of `x` (`[m, blocks]` Q8_K blocks), each row `blocks` blocks long
/// (`rows = y_t.len() / m`).
///
/// # Safety
/// [`super::layers::gemv_avx2::available`] must be true.
pub unsafe fn band<T: KBlock>(
    x: &[BlockQ8K],
    m: usize,
    blocks: usize,
    w: &[T],
    first: usize,
    y_t: &mut [f32],
) {
    assert_eq!(std::mem::size_of::<BlockQ8K>(), Q8K_BYTES);
    assert_eq!(std::mem::size_of::<T>(), T::BYTES);
    assert_eq!(T::BLCK_SIZE, QK_K);
    let rows = y_t.len() / m;
    assert!(x.len() >= m * blocks && w.len() >= (first + rows) * blocks);
    #[cfg(target_arch = "x86_64")]
    {
        let wp = w.as_ptr().add(first * blocks).cast::<u8>();
        let (x_stride, w_stride) = (blocks * Q8K_BYTES, blocks * T::BYTES);
        sweep::<T>(
            x.as_ptr().cast::<u8>(),
            x_stride,
            wp,
            w_stride,
            blocks,
            m,
            y_t,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, first, blocks);
        unreachable!("the AVX2 kernels run only on x86-64");
    }
}

/// Prefetches the block of `BYTES` bytes at `p` into L2, a line every 64 bytes. The tiles call it
/// with the same block of the next tile's rows (`NR` rows on), so the weights stream a tile ahead
/// of the multiply-adds, as in [`super::quantize_avx2`]'s Q8_0 tiles. A prefetch does not fault,
/// so past the last row is harmless.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_block<const BYTES: usize>(p: *const u8) {
    let mut offset = 0;
    while offset < BYTES {
        // SAFETY: a prefetch reads nothing and does not fault at any address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(offset).cast::<i8>()) };
        offset += 64;
    }
}

/// The little-endian u32 at `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn u32_at(p: *const u8) -> u32 {
    u32::from_le_bytes(std::ptr::read_unaligned(p.cast::<[u8; 4]>()))
}

/// The sum of the 4 lanes of `s`: `(s0 + s2) + (s1 + s3)` (the end of candle's `hsum_float_8`,
/// as candle sums Q4_K's min accumulator).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum4(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// A Q4_K block's packed 6-bit scales and mins at `p` (12 bytes): the eight sub-block scales
/// (sub-block `s` covers weights `32 * s..32 * s + 32`) and the eight mins as i16 lanes.
///
/// Bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; bytes 8-11 hold scales 4-7
/// in their low nibbles and mins 4-7 in their high nibbles, whose top 2 bits are the top 2 bits
/// of bytes 0-3 (scales) and 4-7 (mins).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q4k_scales_mins(p: *const u8) -> ([i16; 8], __m128i) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let (a, b, c) = (u32_at(p), u32_at(p.add(4)), u32_at(p.add(8)));
    let scales_lo = a & LOW6;
    let scales_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
    let mins_lo = b & LOW6;
    let mins_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
    let (lo, hi) = (scales_lo.to_le_bytes(), scales_hi.to_le_bytes());
    let scales = std::array::from_fn(|s| i16::from(if s < 4 { lo[s] } else { hi[s - 4] }));
    let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, mins_hi as i32, mins_lo as i32));
    (scales, mins)
}

/// Q4_K tile: `out[i][j] = dot(x[i], w[j])`.
///
/// Per block: `d * sum_s scale_s * (q4 . x)_s - dmin * sum_s min_s * sum(x_s)`, with `d = d_x *
/// d_w` and `dmin = d_x * dmin_w`. The first sum gathers in 8 i32 lanes (nibbles times bytes with
/// `maddubs`, pairs times the sub-block's scale with `madd`) and goes into an 8-lane f32
/// accumulator; the second comes from the activation's `bsums` (pairs added: one sum per
/// 32-weight sub-block) times the mins, in 4 i32 lanes, into a 4-lane accumulator. The result is
/// the sum of the first accumulator's lanes plus the sum of the second's.
// The indices pick a tile row in memory and its accumulators together.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_tile<const MR: usize, const NR: usize>(
    x: *const u8,
    w: *const u8,
    blocks: usize,
    out: &mut [[f32; NR]; MR],
) {
    let (x_stride, w_stride) = (blocks * Q8K_BYTES, blocks * Q4K_BYTES);
    let low4 = _mm256_set1_epi8(0xF);
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    let mut acc_min = [[_mm_setzero_ps(); NR]; MR];
    for b in 0..blocks {
        let mut xd = [0f32; MR];
        let mut xq = [x; MR];
        let mut xsums = [_mm_setzero_si128(); MR]; // sums of the 8 sub-blocks of 32, as i16
        for i in 0..MR {
            let p = x.add(i * x_stride + b * Q8K_BYTES);
            xd[i] = std::ptr::read_unaligned(p.cast::<f32>());
            xq[i] = p.add(Q8K_QS);
            let bsums = p.add(Q8K_BSUMS).cast::<__m128i>();
            xsums[i] = _mm_hadd_epi16(_mm_loadu_si128(bsums), _mm_loadu_si128(bsums.add(1)));
        }
        for j in 0..NR {
            let p = w.add(j * w_stride + b * Q4K_BYTES);
            prefetch_block::<Q4K_BYTES>(p.wrapping_add(NR * w_stride));
            let (wd, wmin) = (f16_at(p), f16_at(p.add(2)));
            let (scales, mins) = q4k_scales_mins(p.add(Q4K_SCALES));
            let mut sumi = [_mm256_setzero_si256(); MR];
            for k in 0..QK_K / 64 {
                let bits = _mm256_loadu_si256(p.add(Q4K_QS + 32 * k).cast::<__m256i>());
                let lo = _mm256_and_si256(bits, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
                let scale_lo = _mm256_set1_epi16(scales[2 * k]);
                let scale_hi = _mm256_set1_epi16(scales[2 * k + 1]);
                for i in 0..MR {
                    let q = xq[i].add(64 * k).cast::<__m256i>();
                    let p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(q));
                    sumi[i] = _mm256_add_epi32(sumi[i], _mm256_madd_epi16(scale_lo, p_lo));
                    let p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(q.add(1)));
                    sumi[i] = _mm256_add_epi32(sumi[i], _mm256_madd_epi16(scale_hi, p_hi));
                }
            }
            for i in 0..MR {
                let dmin = -xd[i] * wmin;
                let prod = _mm_cvtepi32_ps(_mm_madd_epi16(mins, xsums[i]));
                acc_min[i][j] = _mm_fmadd_ps(_mm_set1_ps(dmin), prod, acc_min[i][j]);
                let d = _mm256_set1_ps(xd[i] * wd);
                acc[i][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[i]), acc[i][j]);
            }
        }
    }
    for i in 0..MR {
        for j in 0..NR {
            out[i][j] = hsum(acc[i][j]) + hsum4(acc_min[i][j]);
        }
    }
}

/// Q6_K tile: `out[i][j] = dot(x[i], w[j])`.
///
/// Per block: `d_x * d_w * sum_s scale_s * ((q6 . x)_s - 32 * sum(x_s))` over the 16 sub-blocks
/// of 16 weights, with the 6-bit values `q6` in 0..64 (`maddubs` takes them unsigned; the offset
/// 32 is taken off as `maddubs(32, x)`), gathered in 8 i32 lanes and multiplied into an 8-lane f32
/// accumulator.
// The indices pick a tile row in memory and its accumulators together.
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_tile<const MR: usize, const NR: usize>(
    x: *const u8,
    w: *const u8,
    blocks: usize,
    out: &mut [[f32; NR]; MR],
) {
    let (x_stride, w_stride) = (blocks * Q8K_BYTES, blocks * Q6K_BYTES);
    let low4 = _mm256_set1_epi8(0xF);
    let low2 = _mm256_set1_epi8(3);
    let offset = _mm256_set1_epi8(32);
    let mut acc = [[_mm256_setzero_ps(); NR]; MR];
    for b in 0..blocks {
        let mut xd = [0f32; MR];
        let mut xq = [x; MR];
        for i in 0..MR {
            let p = x.add(i * x_stride + b * Q8K_BYTES);
            xd[i] = std::ptr::read_unaligned(p.cast::<f32>());
            xq[i] = p.add(Q8K_QS);
        }
        for j in 0..NR {
            let p = w.add(j * w_stride + b * Q6K_BYTES);
            prefetch_block::<Q6K_BYTES>(p.wrapping_add(NR * w_stride));
            let wd = f16_at(p.add(Q6K_D));
            let scales = std::ptr::read_unaligned(p.add(Q6K_SCALES).cast::<[i8; 16]>());
            let mut sumi = [_mm256_setzero_si256(); MR];
            for h in 0..QK_K / 128 {
                let ql0 = _mm256_loadu_si256(p.add(64 * h).cast::<__m256i>());
                let ql1 = _mm256_loadu_si256(p.add(64 * h + 32).cast::<__m256i>());
                let qh = _mm256_loadu_si256(p.add(Q6K_QH + 32 * h).cast::<__m256i>());
                // The high bits of group k (bits 2k..2k+2 of qh) moved to bits 4-5.
                let high = [
                    _mm256_slli_epi16(_mm256_and_si256(qh, low2), 4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), low2), 4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), low2), 4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), low2), 4),
                ];
                // The 4 groups of 32 weights `128 * h + 32 * k..`, as bytes in 0..64.
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql0, low4), high[0]),
                    _mm256_or_si256(_mm256_and_si256(ql1, low4), high[1]),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high[2]),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high[3]),
                ];
                // Group k's two sub-block scales: the first for its low 16 weights (the low
                // 128-bit lane), the second for its high 16.
                let mut scale = [_mm256_setzero_si256(); 4];
                for (k, s) in scale.iter_mut().enumerate() {
                    let sub = 8 * h + 2 * k;
                    *s = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(scales[sub + 1])),
                        _mm_set1_epi16(i16::from(scales[sub])),
                    );
                }
                for i in 0..MR {
                    let mut p32 = [_mm256_setzero_si256(); 4];
                    for k in 0..4 {
                        let xk = _mm256_loadu_si256(xq[i].add(128 * h + 32 * k).cast::<__m256i>());
                        let p16 = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(q[k], xk),
                            _mm256_maddubs_epi16(offset, xk),
                        );
                        p32[k] = _mm256_madd_epi16(scale[k], p16);
                    }
                    sumi[i] = _mm256_add_epi32(sumi[i], _mm256_add_epi32(p32[0], p32[1]));
                    sumi[i] = _mm256_add_epi32(sumi[i], _mm256_add_epi32(p32[2], p32[3]));
                }
            }
            for i in 0..MR {
                let d = _mm256_set1_ps(xd[i] * wd);
                acc[i][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[i]), acc[i][j]);
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
    use super::*;
    use crate::models::layers::gemv_avx2::available;

    /// A deterministic stream of values in `[-0.5, 0.5)`.
    fn stream(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 9) as f32 / (1u32 << 23) as f32 - 0.5
        }
    }

    /// The dot product of the dequantized rows in f64, and the sum of its terms' magnitudes.
    fn reference<T: KBlock>(w: &[T], x: &[BlockQ8K]) -> (f64, f64) {
        let mut wf = vec![0f32; w.len() * QK_K];
        let mut xf = vec![0f32; x.len() * QK_K];
        T::to_float(w, &mut wf);
        BlockQ8K::to_float(x, &mut xf);
        wf.iter()
            .zip(&xf)
            .fold((0.0, 0.0), |(dot, size), (&a, &b)| {
                let t = f64::from(a) * f64::from(b);
                (dot + t, size + t.abs())
            })
    }

    /// [`band`] against candle's block dot products for every tile shape and remainder: equal
    /// to candle's `vec_dot` to the bit (candle runs its AVX2 kernel on any CPU that has AVX2
    /// and FMA, which [`available`] implies, whatever the build's target features), and close
    /// to the f64 product of the dequantized rows (an accuracy check that does not go through
    /// candle's kernels).
    fn check<T: KBlock>(seed: u32) {
        if !available() {
            return;
        }
        let blocks = 3;
        let k = blocks * QK_K;
        let mut next = stream(seed);
        for n in [1, 4, 7, 11] {
            // Rows of varied size, one of them all zeros.
            let wf: Vec<f32> = (0..n * k)
                .map(|e| next() * [1.0, 0.01, 4.0, 0.0][(e / k) % 4])
                .collect();
            let mut w = vec![T::zeros(); n * blocks];
            T::from_float(&wf, &mut w);
            for m in 1..=5 {
                let xf: Vec<f32> = (0..m * k).map(|_| next() * 3.0).collect();
                let mut x = vec![BlockQ8K::zeros(); m * blocks];
                BlockQ8K::from_float(&xf, &mut x);
                for first in [0, n / 2] {
                    let rows = n - first;
                    let mut y = vec![f32::NAN; rows * m];
                    unsafe { band(&x, m, blocks, &w, first, &mut y) };
                    for j in 0..rows {
                        let wj = &w[(first + j) * blocks..(first + j + 1) * blocks];
                        for i in 0..m {
                            let xi = &x[i * blocks..(i + 1) * blocks];
                            let got = y[j * m + i];
                            let want = T::vec_dot(k, wj, xi);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{:?} n={n} m={m} first={first} row {j}, x {i}: {got} vs {want}",
                                T::DTYPE
                            );
                            let (exact, size) = reference(wj, xi);
                            assert!(
                                (f64::from(got) - exact).abs() <= 1e-5 * size,
                                "{:?}: {got} vs {exact} (sum of |terms| {size})",
                                T::DTYPE
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q4_k_bands_equal_candles_dot_products() {
        check::<BlockQ4K>(24);
    }

    #[test]
    fn q6_k_bands_equal_candles_dot_products() {
        check::<BlockQ6K>(42);
    }
}
