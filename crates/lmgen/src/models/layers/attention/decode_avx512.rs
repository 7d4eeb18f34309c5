//! [`super::decode_cpu::attend_one`] with AVX-512 where the CPU has it, for head sizes that are
//! a multiple of 16 up to 128 (every architecture this project runs but Gemma's 256): the query
//! and the output stay in registers, four keys' dot products run side by side with fused
//! multiply-adds (the portable loop is a multiply and an add per lane, and one key at a time), and
//! each value row is added with fused multiply-adds. Batched decode at long contexts spends
//! about half its step here on two cores (SmolLM2-135M, batch 32, 512-token prompts).
//!
//! Unsafe code is allowed here only: the intrinsics and raw row pointers need it. [`attend`]
//! checks the CPU and the shapes before it runs the kernel.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The largest head size the kernel keeps in registers.
const MAX_D: usize = 128;

/// `softmax(q k^T * scale) v` added into `out` as [`super::decode_cpu::attend_one`], on AVX-512;
/// `false` (nothing done) where the CPU or the head size does not fit.
pub(crate) fn attend<'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) -> bool {
    let d = q.len();
    let fits = d.is_multiple_of(16)
        && (16..=MAX_D).contains(&d)
        && out.len() == d
        && crate::models::layers::gemv_avx512::available();
    if !fits {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked AVX-512F, AVX2 and FMA; the rows are bounds-checked below.
    unsafe {
        attend_avx512(q, key, value, scale, scores, out);
    }
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn attend_avx512<'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let d = q.len();
    let nv = d / 16;
    let row = |r: &'a [f32]| {
        assert!(r.len() >= d, "a key or value row shorter than the head");
        r.as_ptr()
    };
    let mut qv = [_mm512_setzero_ps(); MAX_D / 16];
    for (v, x) in qv.iter_mut().take(nv).enumerate() {
        *x = _mm512_loadu_ps(q.as_ptr().add(16 * v));
    }
    let s = scores.len();
    let mut j = 0;
    while j + 4 <= s {
        let rows = [
            row(key(j)),
            row(key(j + 1)),
            row(key(j + 2)),
            row(key(j + 3)),
        ];
        let mut acc = [_mm512_setzero_ps(); 4];
        for (a, k) in acc.iter_mut().zip(rows) {
            for (v, x) in qv.iter().take(nv).enumerate() {
                *a = _mm512_fmadd_ps(*x, _mm512_loadu_ps(k.add(16 * v)), *a);
            }
        }
        for (u, a) in acc.iter().enumerate() {
            scores[j + u] = _mm512_reduce_add_ps(*a) * scale;
        }
        j += 4;
    }
    while j < s {
        let k = row(key(j));
        let mut a = _mm512_setzero_ps();
        for (v, x) in qv.iter().take(nv).enumerate() {
            a = _mm512_fmadd_ps(*x, _mm512_loadu_ps(k.add(16 * v)), a);
        }
        scores[j] = _mm512_reduce_add_ps(a) * scale;
        j += 1;
    }
    let sum = super::decode_cpu::exp_from_max(scores);
    let mut o = [_mm512_setzero_ps(); MAX_D / 16];
    for (j, &e) in scores.iter().enumerate() {
        let p = _mm512_set1_ps(e / sum);
        let vr = row(value(j));
        for (v, x) in o.iter_mut().take(nv).enumerate() {
            *x = _mm512_fmadd_ps(p, _mm512_loadu_ps(vr.add(16 * v)), *x);
        }
    }
    for (v, x) in o.iter().take(nv).enumerate() {
        let at = out.as_mut_ptr().add(16 * v);
        _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the same attention in f64, for each head size the kernel takes and key counts
    /// around its four-key step; and the sizes it does not take are left alone.
    #[test]
    fn matches_f64_attention() {
        if !crate::models::layers::gemv_avx512::available() {
            eprintln!("no AVX-512F on this CPU: the kernel is not checked");
            return;
        }
        super::super::decode_cpu::tests::check_against_f64(
            &[16, 64, 80, 128],
            &|q, k, v, scale, scores, out| attend(q, |j| &k[j], |j| &v[j], scale, scores, out),
        );
        let mut scores = vec![0f32; 2];
        let (q, row) = (vec![0f32; 24], vec![0f32; 24]);
        let mut out = vec![0f32; 24];
        assert!(!attend(&q, |_| &row, |_| &row, 1.0, &mut scores, &mut out));
    }
}
