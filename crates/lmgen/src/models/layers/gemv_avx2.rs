//! The AVX2 + FMA + F16C row kernels of [`super::gemv`], chosen at run time.
//!
//! A portable build (the Python wheel, the release binaries) is compiled for x86-64's baseline,
//! where the plain loop of `gemv` becomes SSE2 code with separate multiplies and adds; these
//! kernels carry their own target features, so every build uses 256-bit FMA on a CPU that has
//! it ([`available`]).
//!
//! A kernel computes a tile of `MR` input rows by `NR` weight rows: each weight vector of 8
//! lanes is loaded (and for f16/bf16 widened in registers) once and multiplied into the `MR`
//! rows of `x`, which stay in cache, so that a batch of 16 costs far less than 16 products. For
//! one input row, 8 weight rows at a time give 8 independent accumulators, enough to hide the
//! latency of the fused multiply-add while the weights stream from memory.
//!
//! Unsafe code is allowed here only: the intrinsics and raw row pointers need it. Every caller
//! checks [`available`] once, and the bounds are checked on entry to [`WeightElem::band`].
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::{bf16, f16};

use super::columns::Columns;

/// Whether this CPU runs the kernels of this file (and of the other run-time chosen CPU kernels),
/// decided once per process. `LMGEN_CPU_KERNELS=portable` turns them off, to compare against the
/// portable code (which a `-C target-cpu=native` build vectorises for the CPU it was built on) or
/// to rule the kernels out when a result looks wrong (oneDNN's `ONEDNN_MAX_CPU_ISA` is the same
/// kind of switch).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("LMGEN_CPU_KERNELS").is_ok_and(|v| v == "portable");
        !off && cpu_has_avx2_fma_f16c()
    })
}

fn cpu_has_avx2_fma_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A cache line. One input row in a tile (the rows a batch's tiles leave) prefetches the next
/// tile's weight rows into L2, a line each time its own rows cross one, so that the stream of
/// weights is a tile (`NR` rows) ahead of the multiply-adds.
#[cfg(target_arch = "x86_64")]
const LINE_BYTES: usize = 64;

/// How far ahead of the product one input row (batch-1 decode) prefetches the weights on a CPU
/// with AVX-512 ([`row_prefetch_bytes`]). That row takes the weight rows one after another, so a
/// thread's band is one stream through memory, read 32 values a step with every line prefetched
/// this far ahead. On the 2-core Zen 5 machine this read f16 and bf16 weights as fast as f32 ones,
/// where the earlier tile of eight rows side by side, 16 bytes of each a step with a prefetch of
/// the next tile, read them at 80-90% of that (Qwen3-0.6B f16 28-38 -> 50-52 tok/s; distances of
/// 1-16 KiB within the machine's noise; BENCHMARKS.md, 2026-12-07).
#[cfg(target_arch = "x86_64")]
const ROW_PREFETCH_BYTES: usize = 4096;

/// The distance of the one-row prefetch in bytes, 0 for none (the hardware prefetchers alone):
/// [`ROW_PREFETCH_BYTES`] where the CPU has AVX-512F (measured on Zen 5), none on the AVX2-only
/// CPUs, where it held the stream back: on the 2-core Zen 3 machine, f32 decode of SmolLM2-135M
/// 23-28 tok/s with it against 26-34 without, four rounds alternated, f16 within the noise
/// (BENCHMARKS.md, 2026-12-07). `LMGEN_ROW_PREFETCH=BYTES` sets it, for measuring another CPU.
#[cfg(target_arch = "x86_64")]
fn row_prefetch_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        let default = if super::gemv_avx512::available() {
            ROW_PREFETCH_BYTES
        } else {
            0
        };
        match std::env::var("LMGEN_ROW_PREFETCH") {
            Err(_) => default,
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(
                    "LMGEN_ROW_PREFETCH={v:?} is not a number of bytes; using {default}"
                );
                default
            }),
        }
    })
}

/// Where a band of products goes: `y[i * ld + j]` for input row `i` and the band's `j`-th weight
/// row, `y` pointing at the band's first column of a row-major `[m, n]` output (`ld = n`). Bands
/// of different weight rows write different columns of the same output, from different threads.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    y: *mut f32,
    ld: usize,
}

// SAFETY: an `Out` is only a place to write; the callers give each thread its own columns.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// `y` points at the band's first column, `ld` values apart from one input row to the next.
    ///
    /// # Safety
    /// Every `y[i * ld + j]` a band writes must be inside one allocation that outlives the writes
    /// and that nothing else reads or writes meanwhile.
    pub unsafe fn new(y: *mut f32, ld: usize) -> Self {
        Self { y, ld }
    }

    /// The same output from column `first` on (a band that starts there).
    ///
    /// # Safety
    /// As [`Out::new`], for the band's columns.
    pub unsafe fn at_column(self, first: usize) -> Self {
        Self {
            y: self.y.add(first),
            ld: self.ld,
        }
    }

    /// The same output from input row `i` on (a band over the rows past `i`).
    ///
    /// # Safety
    /// As [`Out::new`], for those rows.
    pub unsafe fn at_row(self, i: usize) -> Self {
        Self {
            y: self.y.add(i * self.ld),
            ld: self.ld,
        }
    }

    /// `y[i * ld + j] = v`.
    ///
    /// # Safety
    /// As [`Out::new`].
    #[inline(always)]
    pub(crate) unsafe fn set(self, i: usize, j: usize, v: f32) {
        *self.y.add(i * self.ld + j) = v;
    }
}

/// A weight element type the kernels read.
pub trait WeightElem: Copy + Sync {
    /// `out[i][j - first] = dot(x[i], w[j])` for the weight rows `first..first + rows` of `w`
    /// (`[n, k]`) and the `m` rows of `x` (`[m, k]`).
    ///
    /// # Safety
    /// [`available`] must be true, `w` must hold rows `first..first + rows` of `k` elements,
    /// `x` must hold `m * k` values and `out` take `m` rows of `rows` values ([`Out::new`]).
    unsafe fn band(x: &[f32], m: usize, k: usize, w: &[Self], first: usize, rows: usize, out: Out);

    /// The weights as f32 where they are (the AVX2 outer-product tiles take f32 weights only:
    /// [`Columns::band_avx2`]).
    fn as_f32(w: &[Self]) -> Option<&[f32]>;
}

macro_rules! kernels {
    ($elem:ty, $tile:ident, $row:ident, $as_f32:expr, $load:ident, $scalar:expr) => {
        /// `dot(x, w)` over `k` values for one input row: 32 values a step in four
        /// accumulators, then one at a time, each cache line of `w` prefetched `ahead` elements
        /// ahead where `ahead` is not 0 ([`row_prefetch_bytes`]; past the end of the band is
        /// harmless: a prefetch does not fault).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $row(x: *const f32, w: *const $elem, k: usize, ahead: usize) -> f32 {
            const SIZE: usize = std::mem::size_of::<$elem>();
            const LINE: usize = LINE_BYTES / SIZE;
            let mut acc = [_mm256_setzero_ps(); 4];
            let k32 = k / 32 * 32;
            let mut p = 0;
            while p < k32 {
                let mut q = 0;
                while ahead != 0 && q < 32 {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(p + q + ahead).cast::<i8>());
                    q += LINE;
                }
                for (l, a) in acc.iter_mut().enumerate() {
                    let at = p + 8 * l;
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(at)), $load!(w.add(at)), *a);
                }
                p += 32;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut s = hsum(sum);
            for q in p..k {
                s += *x.add(q) * $scalar(*w.add(q));
            }
            s
        }

        /// One tile: `out[i][j] = dot(x[i], w[j])` for `MR` rows of `x` (stride `k`) and `NR`
        /// rows of `w` (stride `k`).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $tile<const MR: usize, const NR: usize>(
            x: *const f32,
            w: *const $elem,
            k: usize,
            out: &mut [[f32; NR]; MR],
        ) {
            let mut acc = [[_mm256_setzero_ps(); NR]; MR];
            let k8 = k / 8 * 8;
            let mut p = 0;
            while p < k8 {
                let mut xv = [_mm256_setzero_ps(); MR];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(x.add(i * k + p));
                }
                for j in 0..NR {
                    if MR > 1 {
                        // Several input rows pass over these weight rows: fetch the next
                        // block's meanwhile (measured with the AVX-512 tiles: batch 4 1.19x).
                        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((NR + j) * k + p).cast::<i8>());
                    } else if p % (LINE_BYTES / std::mem::size_of::<$elem>()) == 0 {
                        // The next tile's row `j` at this offset (see `LINE_BYTES`); a prefetch
                        // does not fault, so past the last row is harmless.
                        _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add((NR + j) * k + p).cast::<i8>());
                    }
                    let wv = $load!(w.add(j * k + p));
                    for i in 0..MR {
                        acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
                    }
                }
                p += 8;
            }
            for i in 0..MR {
                for j in 0..NR {
                    let mut s = hsum(acc[i][j]);
                    for q in k8..k {
                        let wq: $elem = *w.add(j * k + q);
                        s += *x.add(i * k + q) * $scalar(wq);
                    }
                    out[i][j] = s;
                }
            }
        }

        impl WeightElem for $elem {
            fn as_f32(w: &[Self]) -> Option<&[f32]> {
                $as_f32(w)
            }

            unsafe fn band(
                x: &[f32],
                m: usize,
                k: usize,
                w: &[Self],
                first: usize,
                rows: usize,
                out: Out,
            ) {
                #[cfg(target_arch = "x86_64")]
                {
                    assert!(x.len() >= m * k && w.len() >= (first + rows) * k);
                    let (xp, wp) = (x.as_ptr(), w.as_ptr().add(first * k));
                    if m == 1 {
                        // One weight row after another (see `row_prefetch_bytes`).
                        let ahead = row_prefetch_bytes() / std::mem::size_of::<$elem>();
                        for j in 0..rows {
                            out.set(0, j, $row(xp, wp.add(j * k), k, ahead));
                        }
                    } else {
                        band_tiles!($tile, xp, wp, m, k, rows, out);
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (x, m, k, w, first, rows, out);
                    unreachable!("the AVX2 kernels run only on x86-64");
                }
            }
        }
    };
}

/// Covers `rows` weight rows by `m` (more than one) input rows with tiles: weight rows 4 at a
/// time against 3 input rows (12 accumulators, 3 inputs and the weight vector: the 16 AVX
/// registers), then 2 and 1 for what is left.
#[cfg(target_arch = "x86_64")]
macro_rules! band_tiles {
    ($tile:ident, $x:expr, $w:expr, $m:expr, $k:expr, $rows:expr, $out:expr) => {{
        let (x, w, m, k, rows, y) = ($x, $w, $m, $k, $rows, $out);
        // Weight rows 4 at a time (then one at a time), input rows 3 at a time (then fewer).
        let mut j = 0;
        while j + 4 <= rows {
            let wj = w.add(j * k);
            let mut i = 0;
            while i < m {
                let xi = x.add(i * k);
                i += match m - i {
                    1 => {
                        let mut out = [[0f32; 4]; 1];
                        $tile::<1, 4>(xi, wj, k, &mut out);
                        store_rows(&out, y, j, i);
                        1
                    }
                    2 => {
                        let mut out = [[0f32; 4]; 2];
                        $tile::<2, 4>(xi, wj, k, &mut out);
                        store_rows(&out, y, j, i);
                        2
                    }
                    _ => {
                        let mut out = [[0f32; 4]; 3];
                        $tile::<3, 4>(xi, wj, k, &mut out);
                        store_rows(&out, y, j, i);
                        3
                    }
                };
            }
            j += 4;
        }
        for j in j..rows {
            let wj = w.add(j * k);
            for i in 0..m {
                let mut out = [[0f32; 1]; 1];
                $tile::<1, 1>(x.add(i * k), wj, k, &mut out);
                y.set(i, j, out[0][0]);
            }
        }
    }};
}

/// Writes a tile's `out[i][jj]` to row `i0 + i`, column `j + jj` of a band's output.
///
/// # Safety
/// As [`Out::new`], for those rows and columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn store_rows<const MR: usize, const NR: usize>(
    out: &[[f32; NR]; MR],
    y: Out,
    j: usize,
    i0: usize,
) {
    for (i, row) in out.iter().enumerate() {
        for (jj, v) in row.iter().enumerate() {
            y.set(i0 + i, j + jj, *v);
        }
    }
}

/// Writes a tile's `out[i][jj]` to `y_t[(j + jj) * m + i0 + i]` (the Q8_0 tiles' layout).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn store<const MR: usize, const NR: usize>(
    out: &[[f32; NR]; MR],
    y_t: &mut [f32],
    j: usize,
    i0: usize,
    m: usize,
) {
    for (i, row) in out.iter().enumerate() {
        for (jj, v) in row.iter().enumerate() {
            y_t[(j + jj) * m + i0 + i] = *v;
        }
    }
}

/// The sum of the 8 lanes, in the order of candle's (and ggml's) `hsum_float_8`: the halves,
/// then pairs of the 4, then the last 2 (the Q8_0 tiles rely on it to equal candle's result).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[cfg(target_arch = "x86_64")]
macro_rules! load_f32 {
    ($p:expr) => {
        _mm256_loadu_ps($p)
    };
}

/// 8 f16 values widened to f32 in registers (F16C).
#[cfg(target_arch = "x86_64")]
macro_rules! load_f16 {
    ($p:expr) => {
        _mm256_cvtph_ps(_mm_loadu_si128($p as *const __m128i))
    };
}

/// 8 bf16 values widened to f32 in registers: the 16 bits become the high half of each lane.
#[cfg(target_arch = "x86_64")]
macro_rules! load_bf16 {
    ($p:expr) => {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128($p as *const __m128i)),
            16,
        ))
    };
}

kernels!(f32, tile_f32, row_f32, Some, load_f32, |v: f32| v);
kernels!(f16, tile_f16, row_f16, |_| None, load_f16, |v: f16| v
    .to_f32());
kernels!(bf16, tile_bf16, row_bf16, |_| None, load_bf16, |v: bf16| v
    .to_f32());

/// One outer-product tile of [`Columns::band_avx2`]: `out[i0 + i][j] = dot(x[i0 + i], w[j])`
/// for the 16 rows of a [`Columns`] chunk (`xt`, `[k, 16]`, 32-byte aligned) and `NW` f32
/// weight rows of `k` from `w`: each k-step broadcasts each row's weight straight from memory
/// against the chunk's two registers of inputs (`2 * NW` accumulators of 8 outputs, no
/// horizontal sums). Widening the weights into a buffer on the stack first, as the AVX-512
/// tiles do, ran at 36-56 GFLOP/s on Zen 3 (its broadcasts wait on the stores just made);
/// broadcast from the rows, 78-92 at 16, 32 and 64 rows against the dot tiles' 60-79 (one
/// thread, SmolLM2-135M's gate/up shape, two passes).
///
/// # Safety
/// [`available`] must be true, `xt` must hold `k * 16` values, `w` `NW` rows of `k`, and `out`
/// take rows `i0..i0 + 16` of `NW` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn outer_tile<const NW: usize>(
    xt: *const f32,
    k: usize,
    w: *const f32,
    out: Out,
    i0: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; NW];
    for p in 0..k {
        if p % (LINE_BYTES / 4) == 0 {
            for j in 0..NW {
                // The weight block after next into L2, a line a row as its rows cross one (as
                // the AVX-512 tiles do; a prefetch does not fault).
                _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add((2 * NW + j) * k + p).cast::<i8>());
            }
        }
        let x0 = _mm256_load_ps(xt.add(p * 16));
        let x1 = _mm256_load_ps(xt.add(p * 16 + 8));
        for (j, row) in acc.iter_mut().enumerate() {
            let b = _mm256_broadcast_ss(&*w.add(j * k + p));
            row[0] = _mm256_fmadd_ps(x0, b, row[0]);
            row[1] = _mm256_fmadd_ps(x1, b, row[1]);
        }
    }
    let mut buf = [[0f32; 16]; NW];
    for (b, row) in buf.iter_mut().zip(&acc) {
        _mm256_storeu_ps(b.as_mut_ptr(), row[0]);
        _mm256_storeu_ps(b.as_mut_ptr().add(8), row[1]);
    }
    for i in 0..16 {
        for (j, b) in buf.iter().enumerate() {
            out.set(i0 + i, j, b[i]);
        }
    }
}

impl Columns {
    /// `out[i][j - first] = dot(x[i], w[j])` for the f32 weight rows `first..first + rows`, as
    /// [`WeightElem::band`], with the rows this covers (chunks of 16) on the AVX2 outer-product
    /// tiles ([`outer_tile`]) and the rest (fewer than 16) on the dot tiles, weight block by
    /// weight block (6 rows: 12 accumulators, 2 inputs and the broadcast weight in the 16
    /// registers) so each block is read from memory once.
    ///
    /// # Safety
    /// As [`WeightElem::band`]; `x` must be the rows this was made of, in chunks of 16.
    pub unsafe fn band_avx2(&self, x: &[f32], w: &[f32], first: usize, rows: usize, out: Out) {
        #[cfg(target_arch = "x86_64")]
        {
            let (m, k) = (self.m, self.k);
            assert!(x.len() >= m * k && w.len() >= (first + rows) * k);
            assert!(self.covered <= m && self.data.len() >= self.start + self.covered * k);
            assert!(self.chunks.iter().all(|&(_, width)| width == 16));
            let wp = w.as_ptr();
            macro_rules! block {
                ($nw:literal, $j:expr) => {{
                    let wj = wp.add((first + $j) * k);
                    let o = out.at_column($j);
                    let mut at = self.data.as_ptr().add(self.start);
                    for &(i0, width) in &self.chunks {
                        outer_tile::<$nw>(at, k, wj, o, i0);
                        at = at.add(k * width);
                    }
                    if self.covered < m {
                        let c = self.covered;
                        f32::band(&x[c * k..], m - c, k, w, first + $j, $nw, o.at_row(c));
                    }
                }};
            }
            let mut j = 0;
            while j + 6 <= rows {
                block!(6, j);
                j += 6;
            }
            while j + 2 <= rows {
                block!(2, j);
                j += 2;
            }
            while j < rows {
                block!(1, j);
                j += 1;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, w, first, rows, out);
            unreachable!("the AVX2 kernels run only on x86-64");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One input row, weight row after weight row: `k` below one register, exactly one 32-value
    /// step, and steps with single values after them; f32, f16 and bf16 weights.
    #[test]
    fn one_row_matches_a_plain_dot() {
        if !available() {
            return;
        }
        let mut seed = 3u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 9) as f32 / (1u32 << 23) as f32 - 0.5
        };
        for k in [7, 32, 45, 149, 1000] {
            let (n, first) = (13, 3);
            let rows = n - first;
            let w32: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let w16: Vec<f16> = w32.iter().map(|v| f16::from_f32(*v)).collect();
            let wb16: Vec<bf16> = w32.iter().map(|v| bf16::from_f32(*v)).collect();
            let x: Vec<f32> = (0..k).map(|_| next()).collect();
            let mut y = vec![0f32; rows];
            let mut check = |run: &dyn Fn(Out), wf: &dyn Fn(usize) -> f32, what: &str| {
                y.fill(f32::NAN);
                run(unsafe { Out::new(y.as_mut_ptr(), rows) });
                for (j, g) in y.iter().enumerate() {
                    let want: f64 = (0..k)
                        .map(|q| x[q] as f64 * wf((first + j) * k + q) as f64)
                        .sum();
                    assert!(
                        (*g as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{what} k={k} j={j}: {g} vs {want}"
                    );
                }
            };
            unsafe {
                check(
                    &|o| f32::band(&x, 1, k, &w32, first, rows, o),
                    &|q| w32[q],
                    "f32",
                );
                check(
                    &|o| f16::band(&x, 1, k, &w16, first, rows, o),
                    &|q| w16[q].to_f32(),
                    "f16",
                );
                check(
                    &|o| bf16::band(&x, 1, k, &wb16, first, rows, o),
                    &|q| wb16[q].to_f32(),
                    "bf16",
                );
            }
        }
    }

    /// Every tile shape and remainder: m from 1 to 17, n not a multiple of 8, k not of 8.
    #[test]
    fn bands_match_a_plain_dot() {
        if !available() {
            return;
        }
        let k = 45;
        let n = 29;
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 9) as f32 / (1u32 << 23) as f32 - 0.5
        };
        let w32: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let w16: Vec<f16> = w32.iter().map(|v| f16::from_f32(*v)).collect();
        let wb16: Vec<bf16> = w32.iter().map(|v| bf16::from_f32(*v)).collect();
        for m in 1..=17 {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            // Rows 3.. of the weight, as a band that does not start at 0.
            let first = 3;
            let rows = n - first;
            let want = |wf: &dyn Fn(usize) -> f32| {
                let mut y = vec![0f64; rows * m];
                for j in 0..rows {
                    for i in 0..m {
                        y[i * rows + j] = (0..k)
                            .map(|q| x[i * k + q] as f64 * wf((first + j) * k + q) as f64)
                            .sum();
                    }
                }
                y
            };
            let check = |got: &[f32], want: Vec<f64>, what: &str| {
                for (g, r) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - r).abs() < 1e-5 * (1.0 + r.abs()),
                        "{what} m={m}: {g} vs {r}"
                    );
                }
            };
            // `[m, rows]`, row-major.
            let mut y = vec![0f32; rows * m];
            let out = unsafe { Out::new(y.as_mut_ptr(), rows) };
            unsafe { f32::band(&x, m, k, &w32, first, rows, out) };
            check(&y, want(&|q| w32[q]), "f32");
            unsafe { f16::band(&x, m, k, &w16, first, rows, out) };
            check(&y, want(&|q| w16[q].to_f32()), "f16");
            unsafe { bf16::band(&x, m, k, &wb16, first, rows, out) };
            check(&y, want(&|q| wb16[q].to_f32()), "bf16");
        }
    }

    /// The outer-product tiles over chunks of 16 rows, with and without dot-tile rows after
    /// them, weight blocks of 6, 2 and 1, k odd; every output written.
    #[test]
    fn outer_tiles_match_a_plain_dot() {
        if !available() {
            return;
        }
        let (k, n, first) = (45, 33, 2);
        let rows = n - first;
        let mut seed = 5u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 9) as f32 / (1u32 << 23) as f32 - 0.5
        };
        let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
        for m in [16, 17, 23, 24, 31, 32, 33, 47, 48, 64, 70] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let cols = Columns::new(&x, m, k, &[16]);
            // A buffer of NaN, so an output the tiles miss shows.
            let mut y = vec![f32::NAN; rows * m];
            unsafe { cols.band_avx2(&x, &w, first, rows, Out::new(y.as_mut_ptr(), rows)) };
            for i in 0..m {
                for j in 0..rows {
                    let want: f64 = (0..k)
                        .map(|q| x[i * k + q] as f64 * w[(first + j) * k + q] as f64)
                        .sum();
                    let got = y[i * rows + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "m={m} i={i} j={j}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
