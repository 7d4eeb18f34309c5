//! The AVX-512 tiles of [`super::gemv`] for batches (more than one input row), chosen at run time
//! where the CPU has AVX-512F.
//!
//! The same products as [`super::gemv_avx2`]'s tiles, `y_t[j][i] = dot(x[i], w[j])`, with 16
//! lanes a register and 32 registers: a tile takes 4 input rows by 6 weight rows (24
//! accumulators, 4 inputs and the weight vector), so each weight vector loaded (and for f16/bf16
//! widened in registers) feeds 4 fused multiply-adds of 16 lanes, against 3 of 8 lanes in the
//! AVX2 tile. One input row (batch-1 decode) stays on the AVX2 kernel: it is bound by reading the
//! weights, not by the arithmetic.
//!
//! With 16 input rows or more, f32 weights take outer-product tiles instead
//! ([`Columns`], [`Columns::band`]): the input rows, transposed once a call into chunks of 32 (or
//! 16) rows, are the vector lanes, and each weight element is broadcast against a chunk's
//! k-step: 12 weight rows by 32 inputs are 24 accumulators of 16 outputs each, with no
//! horizontal sums at the end and half the input traffic of the dot tiles (one 32-row load per
//! k-step for 12 weight rows, against four 16-wide loads for 6). Standalone at SmolLM2-135M's
//! shapes (one thread, 32 rows): 150-158 GFLOP/s against 108-133 for the dot tiles, and on the
//! LM head, whose weights come from memory, 137 against 103.
//!
//! Unsafe code is allowed here only: the intrinsics and raw row pointers need it. Every caller
//! checks [`available`] once, and the bounds are checked on entry to [`Avx512Elem::band_avx512`].
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::{bf16, f16};

use super::columns::Columns;

#[cfg(target_arch = "x86_64")]
use super::gemv_avx2::{self, store_rows, Out};

/// Whether this CPU runs these tiles: AVX-512F and the AVX2 kernels' features, decided once per
/// process. `LMGEN_CPU_KERNELS=avx2` stops at the AVX2 kernels (`portable` turns off both).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let capped = std::env::var("LMGEN_CPU_KERNELS").is_ok_and(|v| v == "avx2");
            !capped && gemv_avx2::available() && is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A weight element type the AVX-512 tiles read.
pub trait Avx512Elem: Copy + Sync {
    /// `out[i][j - first] = dot(x[i], w[j])`, as [`gemv_avx2::WeightElem::band`].
    ///
    /// # Safety
    /// [`available`] must be true, `w` must hold rows `first..first + rows` of `k` elements,
    /// `x` must hold `m * k` values and `out` take `m` rows of `rows` values.
    unsafe fn band_avx512(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[Self],
        first: usize,
        rows: usize,
        out: Out,
    );

    /// One outer-product tile of [`Columns::band`]: `out[i0 + i][j] = dot(x[i0 + i], w[j])`
    /// for the `16 * V` rows of a [`Columns`] chunk (`xt`, `[k, 16 * V]`) and `NW` weight rows
    /// (`w`, stride `k`). Each output is one lane summed over `k` in order.
    ///
    /// # Safety
    /// [`available`] must be true; `xt` must hold the chunk (64-byte aligned) and `w` the rows.
    unsafe fn outer_tile<const NW: usize, const V: usize>(
        xt: *const f32,
        k: usize,
        w: *const Self,
        out: Out,
        i0: usize,
    );
}

macro_rules! kernels {
    ($elem:ty, $tile:ident, $outer:ident, $load:ident, $scalar:expr) => {
        /// One tile: `out[i][j] = dot(x[i], w[j])` for `MR` rows of `x` and `NR` rows of `w`
        /// (both of stride `k`).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn $tile<const MR: usize, const NR: usize>(
            x: *const f32,
            w: *const $elem,
            k: usize,
            out: &mut [[f32; NR]; MR],
        ) {
            let mut acc = [[_mm512_setzero_ps(); NR]; MR];
            let k16 = k / 16 * 16;
            let mut p = 0;
            while p < k16 {
                let mut xv = [_mm512_setzero_ps(); MR];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(x.add(i * k + p));
                }
                for j in 0..NR {
                    // The next block of weight rows, while the input rows pass over this one
                    // (a prefetch does not fault, so past the last row is harmless).
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((NR + j) * k + p).cast::<i8>());
                    let wv = $load!(w.add(j * k + p));
                    for i in 0..MR {
                        acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
                    }
                }
                p += 16;
            }
            for i in 0..MR {
                for j in 0..NR {
                    let mut s = _mm512_reduce_add_ps(acc[i][j]);
                    for q in k16..k {
                        let wq: $elem = *w.add(j * k + q);
                        s += *x.add(i * k + q) * $scalar(wq);
                    }
                    out[i][j] = s;
                }
            }
        }

        /// [`Avx512Elem::outer_tile`]: every 16 k-steps, the `NW` weight rows' next 16
        /// elements are widened to f32 into a buffer on the stack, from which each k-step
        /// broadcasts its weights (fixed offsets, no per-row address arithmetic in the loop).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma,f16c")]
        unsafe fn $outer<const NW: usize, const V: usize>(
            xt: *const f32,
            k: usize,
            w: *const $elem,
            out: Out,
            i0: usize,
        ) {
            #[repr(align(64))]
            struct Widened<const N: usize>([[f32; 16]; N]);
            let width = 16 * V;
            let mut acc = [[_mm512_setzero_ps(); V]; NW];
            let mut wb = Widened::<NW>([[0f32; 16]; NW]);
            // One k-step: the chunk's inputs at `p` against each weight row's `$wj(j)`.
            macro_rules! step {
                ($p:expr, $wj:expr) => {{
                    let mut xv = [_mm512_setzero_ps(); V];
                    for (v, x) in xv.iter_mut().enumerate() {
                        *x = _mm512_load_ps(xt.add($p * width + 16 * v));
                    }
                    for (j, row) in acc.iter_mut().enumerate() {
                        let b = _mm512_set1_ps($wj(j));
                        for (a, x) in row.iter_mut().zip(&xv) {
                            *a = _mm512_fmadd_ps(*x, b, *a);
                        }
                    }
                }};
            }
            let k16 = k / 16 * 16;
            let mut p0 = 0;
            while p0 < k16 {
                for (j, row) in wb.0.iter_mut().enumerate() {
                    // The weight block after next into L2, a cache line a row per 16 k-steps
                    // (a prefetch does not fault, so past the last row is harmless): decode at
                    // 32 rows streams the weights from memory, and prefetching the next block
                    // into L1 instead held that stream back (SmolLM2-135M f32, batch 32-64: 5%).
                    _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add((2 * NW + j) * k + p0).cast::<i8>());
                    _mm512_store_ps(row.as_mut_ptr(), $load!(w.add(j * k + p0)));
                }
                for q in 0..16 {
                    step!(p0 + q, |j: usize| wb.0[j][q]);
                }
                p0 += 16;
            }
            for p in k16..k {
                step!(p, |j: usize| $scalar(*w.add(j * k + p)));
            }
            let mut buf = [[0f32; 32]; NW];
            for (b, row) in buf.iter_mut().zip(&acc) {
                for (v, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(b.as_mut_ptr().add(16 * v), *a);
                }
            }
            for i in 0..width {
                for (j, b) in buf.iter().enumerate() {
                    out.set(i0 + i, j, b[i]);
                }
            }
        }

        impl Avx512Elem for $elem {
            unsafe fn outer_tile<const NW: usize, const V: usize>(
                xt: *const f32,
                k: usize,
                w: *const Self,
                out: Out,
                i0: usize,
            ) {
                #[cfg(target_arch = "x86_64")]
                $outer::<NW, V>(xt, k, w, out, i0);
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (xt, k, w, out, i0);
                    unreachable!("the AVX-512 kernels run only on x86-64");
                }
            }

            unsafe fn band_avx512(
                x: &[f32],
                m: usize,
                k: usize,
                w: &[Self],
                first: usize,
                rows: usize,
                y: Out,
            ) {
                #[cfg(target_arch = "x86_64")]
                {
                    assert!(x.len() >= m * k && w.len() >= (first + rows) * k);
                    let (x, w) = (x.as_ptr(), w.as_ptr().add(first * k));
                    // Weight rows 6 at a time against input rows 4, 2 or 1 at a time, then the
                    // weight rows left one at a time.
                    macro_rules! rows_against_inputs {
                        ($nr:literal, $j:expr) => {{
                            let wj = w.add($j * k);
                            let mut i = 0;
                            while i < m {
                                let xi = x.add(i * k);
                                let left = m - i;
                                i += if left >= 4 {
                                    let mut out = [[0f32; $nr]; 4];
                                    $tile::<4, $nr>(xi, wj, k, &mut out);
                                    store_rows(&out, y, $j, i);
                                    4
                                } else if left >= 2 {
                                    let mut out = [[0f32; $nr]; 2];
                                    $tile::<2, $nr>(xi, wj, k, &mut out);
                                    store_rows(&out, y, $j, i);
                                    2
                                } else {
                                    let mut out = [[0f32; $nr]; 1];
                                    $tile::<1, $nr>(xi, wj, k, &mut out);
                                    store_rows(&out, y, $j, i);
                                    1
                                };
                            }
                        }};
                    }
                    let mut j = 0;
                    while j + 6 <= rows {
                        rows_against_inputs!(6, j);
                        j += 6;
                    }
                    while j < rows {
                        rows_against_inputs!(1, j);
                        j += 1;
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (x, m, k, w, first, rows, y);
                    unreachable!("the AVX-512 kernels run only on x86-64");
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! load_f32 {
    ($p:expr) => {
        _mm512_loadu_ps($p)
    };
}

/// 16 f16 values widened to f32 in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! load_f16 {
    ($p:expr) => {
        _mm512_cvtph_ps(_mm256_loadu_si256($p as *const __m256i))
    };
}

/// 16 bf16 values widened to f32 in registers: the 16 bits become the high half of each lane.
#[cfg(target_arch = "x86_64")]
macro_rules! load_bf16 {
    ($p:expr) => {
        _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256($p as *const __m256i)),
            16,
        ))
    };
}

kernels!(f32, tile_f32, outer_f32, load_f32, |v: f32| v);

impl Columns {
    /// `out[i][j - first] = dot(x[i], w[j])` for the weight rows `first..first + rows`, as
    /// [`Avx512Elem::band_avx512`], with the rows this covers on outer-product tiles and the
    /// rest (fewer than 16) on the dot tiles, weight block by weight block so each block is read
    /// from memory once.
    ///
    /// # Safety
    /// As [`Avx512Elem::band_avx512`]; `x` must be the rows this was made of.
    pub unsafe fn band<W: Avx512Elem>(
        &self,
        x: &[f32],
        w: &[W],
        first: usize,
        rows: usize,
        out: Out,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let (cols, m, k) = (self, self.m, self.k);
            assert!(x.len() >= m * k && w.len() >= (first + rows) * k);
            assert!(cols.covered <= m && cols.data.len() >= cols.start + cols.covered * k);
            let wp = w.as_ptr();
            macro_rules! block {
                ($nw:literal, $j:expr) => {{
                    let wj = wp.add((first + $j) * k);
                    let o = out.at_column($j);
                    let mut at = cols.data.as_ptr().add(cols.start);
                    for &(i0, width) in &cols.chunks {
                        if width == 32 {
                            W::outer_tile::<$nw, 2>(at, k, wj, o, i0);
                        } else {
                            W::outer_tile::<$nw, 1>(at, k, wj, o, i0);
                        }
                        at = at.add(k * width);
                    }
                    if cols.covered < m {
                        let c = cols.covered;
                        W::band_avx512(&x[c * k..], m - c, k, w, first + $j, $nw, o.at_row(c));
                    }
                }};
            }
            let mut j = 0;
            while j + 12 <= rows {
                block!(12, j);
                j += 12;
            }
            while j + 4 <= rows {
                block!(4, j);
                j += 4;
            }
            while j < rows {
                block!(1, j);
                j += 1;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, w, first, rows, out);
            unreachable!("the AVX-512 kernels run only on x86-64");
        }
    }
}
kernels!(f16, tile_f16, outer_f16, load_f16, |v: f16| v.to_f32());
kernels!(bf16, tile_bf16, outer_bf16, load_bf16, |v: bf16| v.to_f32());

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-0.5, 0.5) from a fixed linear congruential sequence.
    fn values(seed: u32) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 9) as f32 / (1u32 << 23) as f32 - 0.5
        }
    }

    /// `y` (`[m, rows]`) against `dot(x[i], w[first + j])` in f64, `wf(q)` the weights' f32
    /// values.
    fn assert_products(
        y: &[f32],
        x: &[f32],
        k: usize,
        wf: &dyn Fn(usize) -> f32,
        first: usize,
        what: &str,
    ) {
        let m = x.len() / k;
        let rows = y.len() / m;
        for i in 0..m {
            for j in 0..rows {
                let want: f64 = (0..k)
                    .map(|q| x[i * k + q] as f64 * wf((first + j) * k + q) as f64)
                    .sum();
                let got = y[i * rows + j] as f64;
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{what} m={m} i={i} j={j}: {got} vs {want}"
                );
            }
        }
    }

    /// Both tile kinds for f32, f16 and bf16 weights, k not a multiple of 16: the dot tiles for
    /// every shape and remainder (m from 1 to 17, n not a multiple of 6), the outer-product tiles
    /// for chunks of 32 and 16 rows with and without dot-tile rows after them and weight blocks
    /// of 12, 4 and 1.
    #[test]
    fn tiles_match_a_plain_dot() {
        if !available() {
            eprintln!("no AVX-512F on this CPU: the AVX-512 tiles are not checked");
            return;
        }
        let (k, n, first) = (45, 33, 2);
        let rows = n - first;
        let mut next = values(11);
        let w32: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let w16: Vec<f16> = w32.iter().map(|v| f16::from_f32(*v)).collect();
        let wb16: Vec<bf16> = w32.iter().map(|v| bf16::from_f32(*v)).collect();
        for m in (1..=17).chain([31, 32, 33, 47, 48, 63, 64, 70]) {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let mut y = vec![0f32; rows * m];
            let cols = Columns::new(&x, m, k, &[32, 16]);
            let outer = m >= Columns::MIN_ROWS;
            // Each product into a buffer of NaN, so an output a kernel misses shows.
            let mut check = |run: &dyn Fn(Out), wf: &dyn Fn(usize) -> f32, what: &str| {
                y.fill(f32::NAN);
                run(unsafe { Out::new(y.as_mut_ptr(), rows) });
                assert_products(&y, &x, k, wf, first, what);
            };
            unsafe {
                check(
                    &|out| f32::band_avx512(&x, m, k, &w32, first, rows, out),
                    &|q| w32[q],
                    "dot f32",
                );
                check(
                    &|out| f16::band_avx512(&x, m, k, &w16, first, rows, out),
                    &|q| w16[q].to_f32(),
                    "dot f16",
                );
                check(
                    &|out| bf16::band_avx512(&x, m, k, &wb16, first, rows, out),
                    &|q| wb16[q].to_f32(),
                    "dot bf16",
                );
                if outer {
                    check(
                        &|out| cols.band(&x, &w32, first, rows, out),
                        &|q| w32[q],
                        "outer f32",
                    );
                    check(
                        &|out| cols.band(&x, &w16, first, rows, out),
                        &|q| w16[q].to_f32(),
                        "outer f16",
                    );
                    check(
                        &|out| cols.band(&x, &wb16, first, rows, out),
                        &|q| wb16[q].to_f32(),
                        "outer bf16",
                    );
                }
            }
        }
    }
}
