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

// Each block of a tile's weight rows prefetches the same block of the next tile's rows into L2
// (`NR` rows on, a tile ahead of the multiply-adds), as the f32/f16 tiles do
// (`super::layers::gemv_avx2`): rows of a few hundred bytes left a prefetch 16 blocks ahead in
// the same row cold at the start of every tile. SmolLM2-135M Q8_0 batch-1 decode on an AMD EPYC
// (Zen 4, 2 threads): see BENCHMARKS.md.

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
    /// Whether one activation row (batch-1 decode) takes the weight rows one at a time (a
    /// `1 x 1` tile, so the band is read as one stream, each block prefetching the next row's)
    /// rather than four side by side. Q4_K and Q6_K do: Qwen3-0.6B's Q4_K decode on the 2-core
    /// Zen 5 machine ran 95-98 tok/s against 69-76. Q8_0 does not: its `1 x 1` tile, one
    /// accumulator a row, ran 37 against 53.
    const ONE_ROW: bool = true;
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
    const ONE_ROW: bool = false;
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
/// activation rows (then 1), the last weight rows one at a time (every row so where
/// [`Tile::ONE_ROW`] and one activation row); `y_t[j * m + i]` gets
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
    // One activation row of a format that streams its rows: every weight row by itself, below.
    let tiled = if m == 1 && T::ONE_ROW {
        0
    } else {
        rows / 4 * 4
    };
    let mut j = 0;
    while j < tiled {
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
    for j in tiled..rows {
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

/// Activations quantized to Q8_0 blocks (`xs` `[32 * ys.len()]`) with AVX-512, equal to candle's
/// `BlockQ8_0::from_float` to the bit: per block `amax = max |x|` (NaNs left out, as `f32::max`
/// leaves them), `d = amax / 127`, `q = round(x / d)` (half away from zero, saturated to i8, NaN to
/// 0) and the scale `d` as f16. Returns false, writing nothing, where the CPU lacks AVX-512 (the
/// caller runs candle's). candle's loop is scalar: one decode row's quantization took about 4% of
/// a SmolLM2-135M Q8_0 step, on one thread.
pub fn quantize_q8_0(xs: &[f32], ys: &mut [BlockQ8_0]) -> bool {
    assert_eq!(std::mem::size_of::<BlockQ8_0>(), BLOCK_BYTES);
    assert_eq!(xs.len(), 32 * ys.len());
    #[cfg(target_arch = "x86_64")]
    if super::layers::gemv_avx512::available() {
        // SAFETY: AVX-512F is present (`available`), and the slices' lengths were checked.
        unsafe { quantize_q8_0_avx512(xs, ys.as_mut_ptr().cast::<u8>(), ys.len()) };
        return true;
    }
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_q8_0_avx512(xs: &[f32], out: *mut u8, blocks: usize) {
    let abs = |v: __m512| _mm512_abs_ps(v);
    for b in 0..blocks {
        let p = xs.as_ptr().add(32 * b);
        let halves = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))];
        // `maxps` returns its second operand where the first is NaN: NaNs never win.
        let m = _mm512_max_ps(
            abs(halves[1]),
            _mm512_max_ps(abs(halves[0]), _mm512_setzero_ps()),
        );
        let amax = _mm512_reduce_max_ps(m);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let block = out.add(b * BLOCK_BYTES);
        std::ptr::write_unaligned(block.cast::<u16>(), half::f16::from_f32(d).to_bits());
        let idv = _mm512_set1_ps(id);
        for (h, &x) in halves.iter().enumerate() {
            let v = _mm512_mul_ps(x, idv);
            // Half away from zero: the truncation, plus the sign where the dropped part is at
            // least a half (both exact in f32).
            let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
            let half_up =
                _mm512_cmp_ps_mask::<_CMP_GE_OQ>(abs(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5));
            let sign = _mm512_castsi512_ps(_mm512_and_si512(
                _mm512_castps_si512(v),
                _mm512_set1_epi32(i32::MIN),
            ));
            let one = _mm512_or_ps(sign, _mm512_set1_ps(1.0));
            let r = _mm512_mask_add_ps(t, half_up, t, one);
            // NaN to 0, then saturated to [-128, 127] as `as i8` does.
            let r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), r);
            let r = _mm512_min_ps(
                _mm512_max_ps(r, _mm512_set1_ps(-128.0)),
                _mm512_set1_ps(127.0),
            );
            let q = _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(r));
            _mm_storeu_si128(block.add(2 + 16 * h).cast::<__m128i>(), q);
        }
    }
}

/// Whether the Q8_0 tiles sum their byte products with AVX-512 VNNI (`vpdpbusd` on 256-bit
/// lanes: one instruction where AVX2 takes `maddubs` then `madd`, the same i32 sums), decided
/// once: AVX-512 VNNI and VL, unless `LMGEN_CPU_KERNELS` stops below AVX-512.
#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        super::layers::gemv_avx512::available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// `out[i][j] = dot(x[i], w[j])` over `blocks` blocks, for `MR` activation rows and `NR` weight
/// rows that follow each other in memory.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn tile<const MR: usize, const NR: usize>(
    x: *const u8,
    w: *const u8,
    blocks: usize,
    out: &mut [[f32; NR]; MR],
) {
    if vnni() {
        tile_vnni::<MR, NR>(x, w, blocks, out)
    } else {
        tile_avx2::<MR, NR>(x, w, blocks, out)
    }
}

/// The Q8_0 tile over `blocks` blocks, with `$sums(aw, sx)` giving the 8 i32 sums of each 4
/// consecutive products of the unsigned `|w|` and the signed `sign(x, w)` bytes: one body for the
/// AVX2 and the VNNI instruction, which give the same sums.
#[cfg(target_arch = "x86_64")]
macro_rules! q8_0_tile {
    ($name:ident, $features:literal, $sums:ident) => {
        #[target_feature(enable = $features)]
        #[allow(clippy::needless_range_loop)] // `i` and `j` index the accumulators and two other arrays
        unsafe fn $name<const MR: usize, const NR: usize>(
            x: *const u8,
            w: *const u8,
            blocks: usize,
            out: &mut [[f32; NR]; MR],
        ) {
            let stride = blocks * BLOCK_BYTES;
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
                    // The next tile's row `j`, this block; a prefetch does not fault, so past
                    // the last row is harmless.
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(NR * stride).cast::<i8>());
                    let wd = f16_at(p);
                    let wq = _mm256_loadu_si256(p.add(2).cast::<__m256i>());
                    let aw = _mm256_sign_epi8(wq, wq);
                    for i in 0..MR {
                        let sx = _mm256_sign_epi8(xq[i], wq);
                        let sums = $sums(aw, sx);
                        let d = _mm256_set1_ps(wd * xd[i]);
                        acc[i][j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums), acc[i][j]);
                    }
                }
            }
            for i in 0..MR {
                for j in 0..NR {
                    out[i][j] = hsum(acc[i][j]);
                }
            }
        }
    };
}

/// `maddubs` (pairs into i16, exact: each product of `|w|` <= 128 and a byte lies in
/// [-2^14, 2^14), so a pair fits) then `madd` with ones (pairs of pairs into i32): candle's
/// (ggml's) AVX2 sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sums_avx2(aw: __m256i, sx: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(aw, sx))
}

/// `vpdpbusd`: each 4 consecutive products summed into i32, exactly, in one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
#[inline]
unsafe fn sums_vnni(aw: __m256i, sx: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx)
}

#[cfg(target_arch = "x86_64")]
q8_0_tile!(tile_avx2, "avx2,fma,f16c", sums_avx2);
#[cfg(target_arch = "x86_64")]
q8_0_tile!(tile_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", sums_vnni);

#[cfg(test)]
mod tests {
    use candle_core::quantized::k_quants::GgmlType;

    use super::*;
    use crate::models::layers::gemv_avx2::available;

    /// The VNNI tile and the AVX2 tile give the same bits, bytes at the extremes (-128, 127)
    /// included.
    #[test]
    fn vnni_sums_equal_avx2_sums() {
        if !(available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl"))
        {
            return;
        }
        let blocks = 5;
        let mut seed = 7u32;
        let mut byte = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            match seed >> 28 {
                0 => -128i8,
                1 => 127,
                2 => -127,
                _ => (seed >> 20) as i8,
            }
        };
        // Rows of blocks: an f16 scale (0.5, 0.25) then 32 bytes.
        let mut rows = |n: usize, scale: u16| -> Vec<u8> {
            let mut v = Vec::new();
            for _ in 0..n * blocks {
                v.extend_from_slice(&scale.to_le_bytes());
                v.extend((0..32).map(|_| byte() as u8));
            }
            v
        };
        let (x, w) = (rows(2, 0x3800), rows(4, 0x3400));
        let (mut a, mut b) = ([[0f32; 4]; 2], [[0f32; 4]; 2]);
        unsafe {
            tile_avx2::<2, 4>(x.as_ptr(), w.as_ptr(), blocks, &mut a);
            tile_vnni::<2, 4>(x.as_ptr(), w.as_ptr(), blocks, &mut b);
        }
        for (ra, rb) in a.iter().zip(&b) {
            for (va, vb) in ra.iter().zip(rb) {
                assert_eq!(va.to_bits(), vb.to_bits(), "{va} vs {vb}");
            }
        }
        assert!(a.iter().flatten().any(|v| *v != 0.0));
    }

    /// The AVX-512 quantizer writes candle's blocks to the bit: random rows, a zero block, NaN
    /// and infinities, halves exactly between two integers, and a subnormal maximum.
    #[test]
    fn quantize_q8_0_equals_candles() {
        if !crate::models::layers::gemv_avx512::available() {
            return;
        }
        let mut seed = 3u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 9) as f32 / (1u32 << 23) as f32 - 0.5
        };
        let mut xs: Vec<f32> = (0..32 * 40).map(|_| next() * 8.0).collect();
        xs[32..64].fill(0.0); // a zero block
        xs[64] = f32::NAN; // NaN in a block
        xs[96] = f32::INFINITY; // infinity: d = inf, every value 0 or NaN
        xs[130] = f32::NEG_INFINITY;
        for (j, x) in xs[160..192].iter_mut().enumerate() {
            *x = (j as f32 - 16.0) + 0.5; // halves: d = 15.5 / 127
        }
        xs[160] = 127.0; // amax 127: d = 1, each half exactly between two integers
        xs[192..224].fill(1e-43); // a subnormal maximum: 1 / d overflows
        xs[200] = -1e-43;
        let blocks = xs.len() / 32;
        let (mut ours, mut theirs) = (
            vec![BlockQ8_0::zeros(); blocks],
            vec![BlockQ8_0::zeros(); blocks],
        );
        assert!(quantize_q8_0(&xs, &mut ours));
        BlockQ8_0::from_float(&xs, &mut theirs);
        let bytes = |b: &[BlockQ8_0]| unsafe {
            std::slice::from_raw_parts(b.as_ptr().cast::<u8>(), b.len() * BLOCK_BYTES).to_vec()
        };
        let (a, b) = (bytes(&ours), bytes(&theirs));
        for (i, (x, y)) in a.chunks(BLOCK_BYTES).zip(b.chunks(BLOCK_BYTES)).enumerate() {
            assert_eq!(x, y, "block {i}");
        }
    }

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
