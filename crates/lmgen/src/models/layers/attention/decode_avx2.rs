//! [`super::decode_cpu::attend_one`] with AVX2 and FMA where the CPU has them but not AVX-512
//! ([`super::decode_avx512`] first), for head sizes that are a multiple of 8: four keys' dot
//! products side by side with fused multiply-adds (the portable loop is a multiply and an add per
//! lane, and one key at a time), each query vector loaded once for the four; each value row added
//! into up to 64 output lanes held in registers (a head of 128 or 256 takes two or four passes
//! over the values). Batched decode on an AVX2 CPU spent about a tenth of a 32-sequence engine
//! step (SmolLM2-135M, 32-token prompts) in the portable loop.
//!
//! Unsafe code is allowed here only: the intrinsics and raw row pointers need it. [`attend`]
//! checks the CPU and the shapes before it runs the kernel.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use crate::models::layers::gemv_avx2::hsum;

/// Output vectors of 8 lanes held in registers across a pass over the values.
#[cfg(target_arch = "x86_64")]
const PASS: usize = 8;

/// `softmax(q k^T * scale) v` added into `out` as [`super::decode_cpu::attend_one`], on AVX2 +
/// FMA; `false` (nothing done) where the CPU or the head size does not fit.
pub(crate) fn attend<'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) -> bool {
    let d = q.len();
    let fits = d > 0
        && d.is_multiple_of(8)
        && out.len() == d
        && cfg!(target_arch = "x86_64")
        && crate::models::layers::gemv_avx2::available();
    if !fits {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked AVX2 and FMA; the rows are bounds-checked below.
    unsafe {
        attend_avx2(q, key, value, scale, scores, out);
    }
    true
}

/// A row's start, checked to hold a head of `d` values.
#[cfg(target_arch = "x86_64")]
fn row(r: &[f32], d: usize) -> *const f32 {
    assert!(r.len() >= d, "a key or value row shorter than the head");
    r.as_ptr()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2<'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = q.len();
    let nv = d / 8;
    let qp = q.as_ptr();
    let s = scores.len();
    let mut j = 0;
    while j + 4 <= s {
        let rows = [
            row(key(j), d),
            row(key(j + 1), d),
            row(key(j + 2), d),
            row(key(j + 3), d),
        ];
        let mut acc = [_mm256_setzero_ps(); 4];
        for v in 0..nv {
            let x = _mm256_loadu_ps(qp.add(8 * v));
            for (a, k) in acc.iter_mut().zip(rows) {
                *a = _mm256_fmadd_ps(x, _mm256_loadu_ps(k.add(8 * v)), *a);
            }
        }
        // [a0, a1, a2, a3] summed across their lanes, then scaled.
        let pairs = _mm256_hadd_ps(
            _mm256_hadd_ps(acc[0], acc[1]),
            _mm256_hadd_ps(acc[2], acc[3]),
        );
        let sums = _mm_add_ps(
            _mm256_castps256_ps128(pairs),
            _mm256_extractf128_ps(pairs, 1),
        );
        _mm_storeu_ps(
            scores[j..j + 4].as_mut_ptr(),
            _mm_mul_ps(sums, _mm_set1_ps(scale)),
        );
        j += 4;
    }
    while j < s {
        let k = row(key(j), d);
        let mut a = _mm256_setzero_ps();
        for v in 0..nv {
            a = _mm256_fmadd_ps(
                _mm256_loadu_ps(qp.add(8 * v)),
                _mm256_loadu_ps(k.add(8 * v)),
                a,
            );
        }
        scores[j] = hsum(a) * scale;
        j += 1;
    }
    // The weights `e_j / sum` once, in place of the scores (every pass over the values reads them).
    let sum = super::decode_cpu::exp_from_max(scores);
    for e in scores.iter_mut() {
        *e /= sum;
    }
    let mut first = 0;
    while first < nv {
        let n = (nv - first).min(PASS);
        let (weights, value, out) = (&*scores, &value, &mut *out);
        match n {
            1 => add_values::<1>(weights, value, first, out),
            2 => add_values::<2>(weights, value, first, out),
            3 => add_values::<3>(weights, value, first, out),
            4 => add_values::<4>(weights, value, first, out),
            5 => add_values::<5>(weights, value, first, out),
            6 => add_values::<6>(weights, value, first, out),
            7 => add_values::<7>(weights, value, first, out),
            _ => add_values::<PASS>(weights, value, first, out),
        }
        first += n;
    }
}

/// `out[8 first..8 (first + N)] += sum_j weights_j value(j)[..]` over that slice of every value
/// row, the `N` output vectors in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_values<'a, const N: usize>(
    weights: &[f32],
    value: &impl Fn(usize) -> &'a [f32],
    first: usize,
    out: &mut [f32],
) {
    let end = 8 * (first + N);
    let mut o = [_mm256_setzero_ps(); N];
    for (j, &w) in weights.iter().enumerate() {
        let p = _mm256_set1_ps(w);
        let vr = row(value(j), end).add(8 * first);
        for (v, x) in o.iter_mut().enumerate() {
            *x = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr.add(8 * v)), *x);
        }
    }
    let at = out[8 * first..end].as_mut_ptr();
    for (v, x) in o.iter().enumerate() {
        _mm256_storeu_ps(
            at.add(8 * v),
            _mm256_add_ps(_mm256_loadu_ps(at.add(8 * v)), *x),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the same attention in f64, for head sizes of one to four passes over the values
    /// and key counts around its four-key step; a head size it does not take is left alone.
    #[test]
    fn matches_f64_attention() {
        if !crate::models::layers::gemv_avx2::available() {
            eprintln!("no AVX2 + FMA on this CPU: the kernel is not checked");
            return;
        }
        super::super::decode_cpu::tests::check_against_f64(
            &[8, 24, 64, 72, 128, 256],
            &|q, k, v, scale, scores, out| attend(q, |j| &k[j], |j| &v[j], scale, scores, out),
        );
        let mut scores = vec![0f32; 2];
        let (q, row) = (vec![0f32; 20], vec![0f32; 20]);
        let mut out = vec![0f32; 20];
        assert!(!attend(&q, |_| &row, |_| &row, 1.0, &mut scores, &mut out));
    }
}
