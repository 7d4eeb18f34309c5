//! `expf` over slices, 16 lanes at a time with AVX-512 (8 with AVX2), equal to the bit to the
//! C library's `expf` (the one `f32::exp` calls), for the exponentials of the CPU's hot loops:
//! SwiGLU's `silu` over a prompt's MLP rows, and the softmax numerators of prompt and decode
//! attention.
//!
//! Those loops called glibc's scalar `expf` once an element: about 10% of a 512-token f16
//! prefill of the Qwen2.5-0.5B shape on two threads (SwiGLU ~6%, the prompt softmax ~6%, of which
//! `expf` itself ~3.5%). A vectorised exponential with its own polynomial would change the last
//! bit of some results, and with it every bit-for-bit test of these kernels against candle's ops
//! (which call `f32::exp`). So the vector code here is glibc's algorithm (glibc 2.27 and later,
//! `sysdeps/ieee754/flt-32/e_expf.c`, the variant built with FMA that glibc picks on every CPU
//! with FMA, which both vector codes require), operation for operation in double precision:
//! `x·N/ln2 = k + r` rounded with the `0x1.8p52` shift, `2^(k/N)` from a 32-entry table, a cubic
//! in `r`, one rounding to f32. The contractions are those of glibc's own binary (read from its
//! disassembly): the scaling and the shift in one fused multiply-add, `r` as `InvLn2N·x - kd`
//! fused, and the polynomial's three multiply-adds fused. Lanes glibc sends down its special
//! path (`|x| >= 88`, NaN) are 0 where glibc underflows to 0 (below `ln(2^-150)`, -inf included)
//! and otherwise go to the C function one by one (rare: overflow and the gradual-underflow band).
//!
//! Checked against the C library's `expf` on every one of the 2^32 f32 inputs, in every vector
//! code the CPU has (the ignored test `equal_to_the_c_librarys_expf_on_every_input`, ~1-2 min in
//! release) and on a sample of them in the suite. Another C library (musl, glibc before 2.27)
//! rounds a few results differently; these stay within glibc's documented error (0.502 ULP) of
//! the true exponential.
#![allow(unsafe_code)]

extern "C" {
    /// The C library's `expf`, which `f32::exp` lowers to, called by name: LLVM takes its `exp`
    /// intrinsic for free of side effects and hoisted it out of the underflow branch of
    /// [`expf_scalar`], so every masked attention score still took glibc's underflow path (4%
    /// of a 512-token f16 prefill of SmolLM2-135M in `xflowf` alone); a call to the C function
    /// sets `errno` and stays put.
    fn expf(x: f32) -> f32;
}

/// `expf(x)` by the C library, without its underflow path (which sets `errno` and is slow) for
/// the inputs it rounds to +0: everything below `ln(2^-150)` = -103.97 (a masked score's
/// `s - max` is about -3.4e38).
#[inline]
fn expf_scalar(x: f32) -> f32 {
    if x < UNDERFLOW {
        0.0
    } else {
        // SAFETY: the C library's `expf`, a pure function of one float.
        unsafe { expf(x) }
    }
}

/// `-0x1.9fe368p6`, about -103.972: glibc's `expf` is +0 below it.
const UNDERFLOW: f32 = f32::from_bits(0xc2cf_f1b4);

/// glibc's `__exp2f_data.tab` (N = 32): the bits of `2^(i/N)` less `i << 47`, so that adding
/// `k << 47` puts `k / N`'s integer part in the exponent.
#[cfg(target_arch = "x86_64")]
const TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// `N / ln 2` (`0x1.71547652b82fep+5`).
#[cfg(target_arch = "x86_64")]
const INV_LN2_N: u64 = 0x40471547652b82fe;
/// `0x1.8p52`: adding it rounds to an integer, ties to even.
#[cfg(target_arch = "x86_64")]
const SHIFT: u64 = 0x4338000000000000;
/// The cubic's coefficients, scaled for `r` in units of `1/N`.
#[cfg(target_arch = "x86_64")]
const C: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];
/// glibc's special path starts at `top12(88.0f)`: the exponent and top mantissa bits of
/// `|x|`, `(bits >> 20) & 0x7ff`.
#[cfg(target_arch = "x86_64")]
const SPECIAL_TOP12: i32 = 0x42b;

/// Which vector code runs on this CPU: AVX-512F's 16 lanes or AVX2's 8 (with FMA), decided
/// once per process as the product tiles are (`LMGEN_CPU_KERNELS=avx2` stops at AVX2,
/// `portable` keeps the C library's scalar `expf`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lanes {
    Avx512,
    Avx2,
    Scalar,
}

fn lanes_here() -> Lanes {
    if super::gemv_avx512::available() {
        Lanes::Avx512
    } else if super::gemv_avx2::available() {
        Lanes::Avx2
    } else {
        Lanes::Scalar
    }
}

/// `xs[i] = expf(xs[i] - max)`, the subtraction in f32 (softmax's numerators).
pub fn exp_minus_in_place(xs: &mut [f32], max: f32) {
    exp_minus_with(lanes_here(), xs, max);
}

fn exp_minus_with(lanes: Lanes, xs: &mut [f32], max: f32) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = lanes;
    #[cfg(target_arch = "x86_64")]
    match lanes {
        // SAFETY: AVX-512F is available (`lanes_here`, or the tests' own check).
        Lanes::Avx512 => return unsafe { avx512::exp_minus(xs, max) },
        // SAFETY: AVX2 and FMA are available (as above).
        Lanes::Avx2 => return unsafe { avx2::exp_minus(xs, max) },
        Lanes::Scalar => {}
    }
    xs.iter_mut().for_each(|x| *x = expf_scalar(*x - max));
}

/// `out[i] = gate[i] / (1 + expf(-gate[i])) * up[i]`: candle's `silu(gate) * up`, in its order.
///
/// # Panics
/// When the three slices differ in length.
pub fn silu_mul(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert!(
        out.len() == gate.len() && gate.len() == up.len(),
        "silu_mul: {} outputs for {} gates and {} ups",
        out.len(),
        gate.len(),
        up.len()
    );
    silu_mul_with(lanes_here(), out, gate, up);
}

fn silu_mul_with(lanes: Lanes, out: &mut [f32], gate: &[f32], up: &[f32]) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = lanes;
    #[cfg(target_arch = "x86_64")]
    match lanes {
        // SAFETY: AVX-512F is available (`lanes_here`, or the tests' own check); the lengths
        // are equal (asserted by `silu_mul`).
        Lanes::Avx512 => return unsafe { avx512::silu_mul(out, gate, up) },
        // SAFETY: AVX2 and FMA are available (as above); the lengths are equal.
        Lanes::Avx2 => return unsafe { avx2::silu_mul(out, gate, up) },
        Lanes::Scalar => {}
    }
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + expf_scalar(-g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{expf_scalar, C, INV_LN2_N, SHIFT, SPECIAL_TOP12, TAB, UNDERFLOW};

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pd(bits: u64) -> __m512d {
        _mm512_set1_pd(f64::from_bits(bits))
    }

    /// glibc's main path on 8 lanes: `xd` the inputs widened to f64 -> `expf` in f32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp8(xd: __m512d) -> __m256 {
        let (inv, shift) = (pd(INV_LN2_N), pd(SHIFT));
        let table = |i: usize| {
            // SAFETY: TAB holds 32 values; i is 0, 8, 16 or 24.
            unsafe { _mm512_loadu_pd(TAB.as_ptr().add(i).cast()) }
        };
        let kd_shifted = _mm512_fmadd_pd(inv, xd, shift);
        let ki = _mm512_castpd_si512(kd_shifted);
        let kd = _mm512_sub_pd(kd_shifted, shift);
        let r = _mm512_fmsub_pd(inv, xd, kd);
        // T[ki % 32]: two 16-entry permutes, chosen by bit 4 of the index.
        let idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
        let low = _mm512_permutex2var_pd(table(0), idx, table(8));
        let high = _mm512_permutex2var_pd(table(16), idx, table(24));
        let upper = _mm512_test_epi64_mask(idx, _mm512_set1_epi64(16));
        let t = _mm512_castpd_si512(_mm512_mask_blend_pd(upper, low, high));
        let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
        let z = _mm512_fmadd_pd(r, pd(C[0]), pd(C[1]));
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(r, pd(C[2]), _mm512_set1_pd(1.0));
        let y = _mm512_fmadd_pd(z, r2, y);
        _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
    }

    /// `expf` of 16 lanes, equal to the C library's on every input.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp16(x: __m512) -> __m512 {
        let low = _mm512_castps512_ps256(x);
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x)));
        let y_low = _mm256_castps_pd(exp8(_mm512_cvtps_pd(low)));
        let y_high = _mm256_castps_pd(exp8(_mm512_cvtps_pd(high)));
        let y = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(y_low),
            y_high,
        ));
        let top12 = _mm512_and_si512(
            _mm512_srli_epi32::<20>(_mm512_castps_si512(x)),
            _mm512_set1_epi32(0x7ff),
        );
        let special = _mm512_cmpge_epi32_mask(top12, _mm512_set1_epi32(SPECIAL_TOP12));
        if special == 0 {
            return y;
        }
        let zero = _mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(special, x, _mm512_set1_ps(UNDERFLOW));
        let y = _mm512_mask_blend_ps(zero, y, _mm512_setzero_ps());
        let rest = special & !zero;
        if rest == 0 {
            return y;
        }
        let (mut xs, mut ys) = ([0f32; 16], [0f32; 16]);
        // SAFETY: both arrays hold 16 floats.
        unsafe {
            _mm512_storeu_ps(xs.as_mut_ptr(), x);
            _mm512_storeu_ps(ys.as_mut_ptr(), y);
        }
        for lane in (0..16).filter(|lane| rest >> lane & 1 == 1) {
            ys[lane] = expf_scalar(xs[lane]);
        }
        // SAFETY: as above.
        unsafe { _mm512_loadu_ps(ys.as_ptr()) }
    }

    /// The lanes of a block of 16 from `i` that exist in a slice of `n`.
    #[inline]
    fn lanes(i: usize, n: usize) -> u16 {
        let left = n - i;
        if left >= 16 {
            u16::MAX
        } else {
            (1u16 << left) - 1
        }
    }

    /// `xs[i] = expf(xs[i] - max)`.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_minus(xs: &mut [f32], max: f32) {
        let (n, p) = (xs.len(), xs.as_mut_ptr());
        let max = _mm512_set1_ps(max);
        for i in (0..n).step_by(16) {
            let k = lanes(i, n);
            // SAFETY: the lanes in `k` lie inside `xs` (from `i`, at most `n - i` of them).
            unsafe {
                let x = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, p.add(i)), max);
                _mm512_mask_storeu_ps(p.add(i), k, exp16(x));
            }
        }
    }

    /// `out[i] = gate[i] / (1 + expf(-gate[i])) * up[i]`.
    ///
    /// # Safety
    /// AVX-512F must be available and the three slices of one length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu_mul(out: &mut [f32], gate: &[f32], up: &[f32]) {
        let (n, o, g, u) = (out.len(), out.as_mut_ptr(), gate.as_ptr(), up.as_ptr());
        let one = _mm512_set1_ps(1.0);
        let sign = _mm512_set1_epi32(i32::MIN);
        for i in (0..n).step_by(16) {
            let k = lanes(i, n);
            // SAFETY: the lanes in `k` lie inside the three slices, each `n` long (the caller's
            // contract).
            unsafe {
                let gv = _mm512_maskz_loadu_ps(k, g.add(i));
                let uv = _mm512_maskz_loadu_ps(k, u.add(i));
                let neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(gv), sign));
                let silu = _mm512_div_ps(gv, _mm512_add_ps(one, exp16(neg)));
                _mm512_mask_storeu_ps(o.add(i), k, _mm512_mul_ps(silu, uv));
            }
        }
    }
}

/// The same algorithm in AVX2's 4 double lanes (8 floats a step), the table read by gathers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{expf_scalar, C, INV_LN2_N, SHIFT, SPECIAL_TOP12, TAB, UNDERFLOW};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn pd(bits: u64) -> __m256d {
        _mm256_set1_pd(f64::from_bits(bits))
    }

    /// glibc's main path on 4 lanes, as `avx512::exp8`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp4(xd: __m256d) -> __m128 {
        let (inv, shift) = (pd(INV_LN2_N), pd(SHIFT));
        let kd_shifted = _mm256_fmadd_pd(inv, xd, shift);
        let ki = _mm256_castpd_si256(kd_shifted);
        let kd = _mm256_sub_pd(kd_shifted, shift);
        let r = _mm256_fmsub_pd(inv, xd, kd);
        let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
        // SAFETY: every index is below 32, TAB's length.
        let t = unsafe { _mm256_i64gather_epi64::<8>(TAB.as_ptr().cast(), idx) };
        let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
        let z = _mm256_fmadd_pd(r, pd(C[0]), pd(C[1]));
        let r2 = _mm256_mul_pd(r, r);
        let y = _mm256_fmadd_pd(r, pd(C[2]), _mm256_set1_pd(1.0));
        let y = _mm256_fmadd_pd(z, r2, y);
        _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
    }

    /// `expf` of 8 lanes, equal to the C library's on every input.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let y_low = exp4(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        let y_high = exp4(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)));
        let y = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(y_low), y_high);
        let top12 = _mm256_and_si256(
            _mm256_srli_epi32::<20>(_mm256_castps_si256(x)),
            _mm256_set1_epi32(0x7ff),
        );
        let special = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            top12,
            _mm256_set1_epi32(SPECIAL_TOP12 - 1),
        ));
        if _mm256_testz_ps(special, special) == 1 {
            return y;
        }
        // Lanes below ln(2^-150) (a masked score's `s - max`, -inf) are 0 in the vector, as on
        // AVX-512; only the rest (overflow, NaN, the gradual-underflow band) go one by one.
        let zero = _mm256_and_ps(
            special,
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(UNDERFLOW)),
        );
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), zero);
        let rest = _mm256_andnot_ps(zero, special);
        if _mm256_testz_ps(rest, rest) == 1 {
            return y;
        }
        let (mut xs, mut ys, mut flags) = ([0f32; 8], [0f32; 8], [0i32; 8]);
        // SAFETY: each array holds 8 values of 4 bytes.
        unsafe {
            _mm256_storeu_ps(xs.as_mut_ptr(), x);
            _mm256_storeu_ps(ys.as_mut_ptr(), y);
            _mm256_storeu_si256(flags.as_mut_ptr().cast(), _mm256_castps_si256(rest));
        }
        for ((y, &x), _) in ys.iter_mut().zip(&xs).zip(&flags).filter(|(_, &f)| f != 0) {
            *y = expf_scalar(x);
        }
        // SAFETY: as above.
        unsafe { _mm256_loadu_ps(ys.as_ptr()) }
    }

    /// `xs[i] = expf(xs[i] - max)`, 8 at a time, the tail one by one.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_minus(xs: &mut [f32], max: f32) {
        let mut blocks = xs.chunks_exact_mut(8);
        let maxv = _mm256_set1_ps(max);
        for block in &mut blocks {
            // SAFETY: `block` holds 8 floats.
            unsafe {
                let x = _mm256_sub_ps(_mm256_loadu_ps(block.as_ptr()), maxv);
                _mm256_storeu_ps(block.as_mut_ptr(), exp8(x));
            }
        }
        for x in blocks.into_remainder() {
            *x = expf_scalar(*x - max);
        }
    }

    /// `out[i] = gate[i] / (1 + expf(-gate[i])) * up[i]`, 8 at a time, the tail one by one.
    ///
    /// # Safety
    /// AVX2 and FMA must be available and the three slices of one length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(out: &mut [f32], gate: &[f32], up: &[f32]) {
        let n = out.len() / 8 * 8;
        let (o, g, u) = (out.as_mut_ptr(), gate.as_ptr(), up.as_ptr());
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
        for i in (0..n).step_by(8) {
            // SAFETY: `i + 8 <= n`, within the three slices of one length (the caller's
            // contract).
            unsafe {
                let gv = _mm256_loadu_ps(g.add(i));
                let uv = _mm256_loadu_ps(u.add(i));
                let silu = _mm256_div_ps(gv, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign))));
                _mm256_storeu_ps(o.add(i), _mm256_mul_ps(silu, uv));
            }
        }
        for ((o, &g), &u) in out[n..].iter_mut().zip(&gate[n..]).zip(&up[n..]) {
            *o = g / (1.0 + expf_scalar(-g)) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C library's `expf` of each input, by name.
    fn reference(xs: &[f32]) -> Vec<f32> {
        // SAFETY: the C library's `expf`.
        xs.iter().map(|&x| unsafe { expf(x) }).collect()
    }

    fn assert_same(xs: &[f32], got: &[f32], want: &[f32]) {
        for ((x, g), w) in xs.iter().zip(got).zip(want) {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "expf({x:e} = {:#010x}): {g:e} against the C library's {w:e}",
                x.to_bits()
            );
        }
    }

    /// Every input in `bits` (a range of f32 bit patterns, stepped), less 0 (`x - 0 = x` for
    /// every f32, -0 and NaN included), in slices of odd lengths so that every tail length of a
    /// 16-lane block is taken.
    fn check(bits: impl Iterator<Item = u32>) {
        let xs: Vec<f32> = bits.map(f32::from_bits).collect();
        let want = reference(&xs);
        for lanes in available_lanes() {
            let mut got = xs.clone();
            let mut at = 0;
            for len in (1..=33).cycle() {
                if at >= got.len() {
                    break;
                }
                let end = (at + len).min(got.len());
                exp_minus_with(lanes, &mut got[at..end], 0.0);
                at = end;
            }
            assert_same(&xs, &got, &want);
        }
    }

    /// The vector codes this CPU runs (each tested, not only the one `lanes_here` picks), and
    /// the scalar one.
    fn available_lanes() -> Vec<Lanes> {
        let mut out = vec![Lanes::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(Lanes::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                out.push(Lanes::Avx512);
            }
        }
        out
    }

    /// A sample of all 2^32 inputs (every 509th pattern, both signs, NaNs and infinities among
    /// them), every input around the edges of glibc's special path (|x| near 88, the underflow
    /// band near -104, -88..-80) and near 0, and the infinities.
    #[test]
    fn equal_to_the_c_librarys_expf() {
        check((0..=u32::MAX).step_by(509));
        // The bit patterns between two floats of one sign (a negative float's grow with its
        // magnitude).
        let around = |a: f32, b: f32| {
            let (a, b) = (a.to_bits(), b.to_bits());
            a.min(b)..=a.max(b)
        };
        for (lo, hi) in [(87.0f32, 89.5f32), (80.0, 88.5), (1e-7, 0.5)] {
            check(around(lo, hi).step_by(3));
            check(around(-hi, -lo).step_by(3));
        }
        check(around(-105.0, -103.0));
        check(
            [
                0.0f32,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                f32::MIN,
                f32::MAX,
            ]
            .map(f32::to_bits)
            .into_iter(),
        );
    }

    /// Every f32 input (about a minute in release): run by hand after a change here,
    /// `cargo test --release -p lmgen expf -- --ignored`.
    #[test]
    #[ignore = "every 2^32 input; about a minute in release"]
    fn equal_to_the_c_librarys_expf_on_every_input() {
        const CHUNK: u64 = 1 << 24;
        for start in (0..1u64 << 32).step_by(CHUNK as usize) {
            check((start as u32..=(start + CHUNK - 1) as u32).step_by(1));
        }
    }

    /// `exp(x - max)` and `silu(g) * u` in candle's order, every length to 40.
    #[test]
    fn softmax_numerators_and_silu_as_written() {
        let values: Vec<f32> = (0..40)
            .map(|i| (i as f32 * 0.77).sin() * 30.0 - 5.0)
            .collect();
        let ups: Vec<f32> = values.iter().map(|v| v.cos()).collect();
        for (n, lanes) in
            (0..=values.len()).flat_map(|n| available_lanes().into_iter().map(move |l| (n, l)))
        {
            let xs = &values[..n];
            let mut got = xs.to_vec();
            exp_minus_with(lanes, &mut got, 12.5);
            let shifted: Vec<f32> = xs.iter().map(|x| x - 12.5).collect();
            assert_same(xs, &got, &reference(&shifted));
            let mut out = vec![0f32; n];
            silu_mul_with(lanes, &mut out, xs, &ups[..n]);
            let want: Vec<f32> = xs
                .iter()
                .zip(&ups)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            assert_same(xs, &out, &want);
        }
    }
}
