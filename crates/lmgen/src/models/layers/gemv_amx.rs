//! bf16 products on Intel AMX tiles (Sapphire Rapids and later), for bf16 weights against bf16
//! activations with more than one row: batched decode, the engine's steps and prefill.
//!
//! The other CPU kernels widen each bf16 weight to f32 and multiply in f32 (16 lanes an
//! instruction). AMX's `TDPBF16PS` multiplies a 16 x 32 tile of bf16 by a 32 x 16 one into 16 x
//! 16 f32 sums in one instruction (512 multiply-adds a cycle against AVX-512's 32), so a batch
//! of 32 rows costs about what the weights take to read. The arithmetic is the same kind as
//! the f32 kernels' over bf16 values: every product of two bf16 numbers is exact in f32 and
//! the sums are f32 (`TDPBF16PS` adds each pair of products to the accumulator with
//! round-to-nearest-even), only in another order, and subnormal inputs and results are flushed to
//! zero. The CPU runs a bf16 model's activations in f32 ([`super::compute_dtype`]): each f32
//! activation is split exactly into three bf16 terms ([`split_f32`]) multiplied one after the
//! other, three tile products where the weights' one read is the cost anyway, so no activation
//! is rounded (measured: rounding them to bf16 instead moved 13 of the 171 golden generate
//! cases in bf16 further from transformers' f32 tokens).
//!
//! Layout (`y = x w^T`, `x [m, k]`, `w [n, k]`, both row-major bf16): the weight rows are the
//! tiles' left operand as they lie in memory (16 rows of 32 values, `k * 2` bytes apart), and
//! `x` is repacked once per call into the right operand's pair-interleaved layout:
//! `xt[p][i] = (x[i][2p], x[i][2p + 1])`, one u32 per pair, `m` rounded up to 32 columns of
//! zeros. A tile of sums is then `[16 weight rows][16 input rows]`, written to the transposed
//! place of `y`. Each band of 32 weight rows runs against 32 input rows at a time: two weight
//! tiles and two input tiles feed four tiles of sums (all eight tile registers).
//!
//! The tile instructions are written with `asm!` (Rust's AMX intrinsics are not stable); Linux
//! hands a process the tile registers only after `arch_prctl(ARCH_REQ_XCOMP_PERM)`, which
//! [`available`] asks for once. Unsafe code is allowed here only.
#![allow(unsafe_code)]

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::bf16;
use rayon::prelude::*;

use super::gemv_avx2::Out;
use crate::error::Result;

/// Weight rows a tile covers (and input rows).
const TILE: usize = 16;
/// bf16 values of one tile row (64 bytes).
const TILE_K: usize = 32;
/// Weight rows, and input rows, of one block of four tiles of sums.
const BLOCK: usize = 2 * TILE;

/// Fewer input rows than this stay on the f32 kernels ([`super::gemv`]): with three terms a
/// value the tiles' products cost more than the weights take to read. Measured on SmolLM2-135M
/// with bf16 weights (2 threads, tokens/s, f32 kernels against tiles): batch-8 decode 354
/// against 337, batch 16 408 against 546, batch 32 451 against 670, a 64-token prompt 693
/// against 1113.
pub const MIN_ROWS: usize = 16;

/// Whether this CPU and OS run AMX bf16 tiles for this process: the CPU has AMX-TILE and
/// AMX-BF16, the OS saves the tile state (XCR0 bits 17 and 18), and Linux granted this process
/// the tile data. Decided once. `LMGEN_CPU_KERNELS=avx512` (or `avx2`, `portable`) stops below
/// them.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let capped = std::env::var("LMGEN_CPU_KERNELS")
            .is_ok_and(|v| matches!(v.as_str(), "avx512" | "avx2" | "portable"));
        !capped && super::gemv_avx512::available() && detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let (leaf1, leaf7) = (__cpuid(1), __cpuid_count(7, 0));
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    if !(amx_bf16 && amx_tile && osxsave) {
        return false;
    }
    let xcr0: u64 = {
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV with ECX = 0 is available when OSXSAVE is set (checked above).
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags));
        }
        (u64::from(hi) << 32) | u64::from(lo)
    };
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only asks for a permission.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `x [.., k] · w[n, k]^T -> [.., n]` in `x`'s dtype for an f32 or bf16 `x` of at least
/// [`MIN_ROWS`] rows and a contiguous bf16 CPU weight whose `k` is a multiple of 32, on AMX tiles; `None`
/// where that does not hold or the CPU has no AMX (the caller takes another kernel). An f32 `x`
/// (the CPU's activations over bf16 weights, see [`super::compute_dtype`]) is split exactly into
/// three bf16 terms ([`split_f32`]), each multiplied by the weights: every product is still
/// exact and every sum f32, so the result is the f32 kernels' up to the order of the sums.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !matches!(x.dtype(), DType::F32 | DType::BF16) || w.dtype() != DType::BF16 {
        return Ok(None);
    }
    if w.rank() != 2 || !matches!(w.device(), Device::Cpu) || !available() {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    let m = x.elem_count() / k.max(1);
    if m < MIN_ROWS || k % TILE_K != 0 || x.dim(candle_core::D::Minus1)? != k {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let y = {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (Storage::Cpu(xc), Storage::Cpu(wc)) = (&*xs, &*ws) else {
            return Ok(None);
        };
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            return Ok(None);
        };
        let Ok(wv) = wc.as_slice::<bf16>() else {
            return Ok(None);
        };
        let xt = match xc {
            CpuStorage::BF16(v) => pack_x::<_, 1>(&v[x0..x1], m, k, |v| [v.to_bits()]),
            CpuStorage::F32(v) => pack_x::<_, 3>(&v[x0..x1], m, k, split_f32),
            _ => return Ok(None),
        };
        products(xt, m, k, &wv[w0..w1], n)
    };
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok(Some(
        Tensor::from_vec(y, dims, &Device::Cpu)?.to_dtype(x.dtype())?,
    ))
}

/// `v` as the sum of three bf16 values, exactly: the high 8 bits of its significand, the next
/// 8 of what is left, and the rest (at most 8 bits remain, so each cut is exact for a normal
/// `v`). Cut by truncation, which never rounds the first term past the largest finite value;
/// an infinity is its own first term, and NaN a quiet NaN. (The tiles flush subnormal terms, of
/// values below about 1e-38 times the first, to zero.)
#[inline(always)]
fn split_f32(v: &f32) -> [u16; 3] {
    let cut = |x: f32| x.to_bits() & 0xffff_0000;
    let hi = cut(*v);
    let r1 = v - f32::from_bits(hi);
    let mid = cut(r1);
    let lo = cut(r1 - f32::from_bits(mid));
    // Selects, not branches, so that the packing loop vectorises.
    let (hi, mid, lo) = if v.is_nan() {
        (0x7fc0_0000, 0, 0)
    } else if v.is_infinite() {
        (hi, 0, 0)
    } else {
        (hi, mid, lo)
    };
    [(hi >> 16) as u16, (mid >> 16) as u16, (lo >> 16) as u16]
}

/// The packed right operand, `TERMS` parts (an f32 `x` split into bf16 terms, see
/// [`split_f32`]) one after the other, each `k / 2` rows of `cols` pairs (`m` rounded up to
/// [`BLOCK`], the padding zero) as contiguous 16 x 16 tiles: pair `p = 16c + q` of input
/// `i = 16b + r` of term `t`, `(x_t[i][2p], x_t[i][2p + 1])` as bf16 bits low half first, is
/// `xt[t * k / 2 * cols + (c * cols / 16 + b) * 256 + q * 16 + r]`. (Rows of `cols` pairs made
/// a tile's 16 rows `4 * cols` bytes apart: for a 512-token prompt every row of a tile fell in
/// the same few cache sets.)
struct Packed {
    xt: Vec<u32>,
    cols: usize,
    terms: usize,
}

/// `x` (`m` rows of `k`, each value turned into `TERMS` bf16 terms by `split`) in the tiles'
/// right-operand layout, a tile's 16 pair rows at a time (on rayon's threads for a large `x`):
/// each input row's 32 values become 16 pairs a term in a row-major scratch `[m, 16]`
/// (contiguous, so the rounding vectorises), which is then written transposed into the 16 pair
/// rows of each term.
fn pack_x<T: Sync, const TERMS: usize>(
    x: &[T],
    m: usize,
    k: usize,
    split: impl Fn(&T) -> [u16; TERMS] + Sync,
) -> Packed {
    let cols = m.div_ceil(BLOCK) * BLOCK;
    let term_len = k / 2 * cols;
    let mut xt = vec![0u32; TERMS * term_len];
    let pack = |chunk: usize, rows: &mut [&mut [u32]]| {
        let k0 = chunk * TILE_K;
        let mut pairs = vec![[0u32; TERMS]; m * TILE];
        for (row, dst) in x.chunks_exact(k).zip(pairs.chunks_exact_mut(TILE)) {
            for (d, pair) in dst.iter_mut().zip(row[k0..k0 + TILE_K].chunks_exact(2)) {
                let (a, b) = (split(&pair[0]), split(&pair[1]));
                for t in 0..TERMS {
                    d[t] = u32::from(a[t]) | (u32::from(b[t]) << 16);
                }
            }
        }
        // Each 16 columns' tile of the 16 pair rows is one contiguous 1 KiB block.
        for (t, rows) in rows.iter_mut().enumerate() {
            for (block, tile) in rows.chunks_exact_mut(TILE * TILE).enumerate() {
                for (q, out) in tile.chunks_exact_mut(TILE).enumerate() {
                    let inputs = pairs.chunks_exact(TILE).skip(block * TILE);
                    for (o, p) in out.iter_mut().zip(inputs) {
                        *o = p[q][t];
                    }
                }
            }
        }
    };
    // Each task: the same 16 pair rows of every term.
    let chunk_len = TILE * cols;
    let mut tasks: Vec<Vec<&mut [u32]>> = (0..k / TILE_K).map(|_| Vec::new()).collect();
    for term in xt.chunks_mut(term_len) {
        for (task, rows) in tasks.iter_mut().zip(term.chunks_mut(chunk_len)) {
            task.push(rows);
        }
    }
    // Below this many values the threads' hand-off costs more than the packing.
    const PARALLEL_FROM: usize = 1 << 16;
    if m * k >= PARALLEL_FROM {
        tasks
            .into_par_iter()
            .enumerate()
            .for_each(|(chunk, mut rows)| pack(chunk, &mut rows));
    } else {
        for (chunk, mut rows) in tasks.into_iter().enumerate() {
            pack(chunk, &mut rows);
        }
    }
    Packed {
        xt,
        cols,
        terms: TERMS,
    }
}

/// `[m, n]` f32: `y[i][j] = dot(x[i], w[j])` over the packed `x` (`k` a multiple of 32, AMX
/// available).
fn products(x: Packed, m: usize, k: usize, w: &[bf16], n: usize) -> Vec<f32> {
    let Packed { xt, cols, terms } = x;
    // Not zeroed: the tasks write every value (each its own columns of every row).
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: `y` has room for `m` rows of `n` and is not touched until every task is done;
    // each task writes the columns of its own weight rows.
    let out = unsafe { Out::new(y.as_mut_ptr(), n) };
    let per_task = super::gemv::rows_per_task(n, BLOCK);
    (0..n.div_ceil(per_task)).into_par_iter().for_each(|task| {
        let first = task * per_task;
        let rows = per_task.min(n - first);
        let full = rows / BLOCK * BLOCK;
        // SAFETY: `available()` was checked by the caller; the band's rows `first..first +
        // full` are inside `w`, `xt` holds `k / 2` rows of `cols` pairs, and only this task
        // writes the band's columns of `y`.
        unsafe {
            tiles::band(
                terms,
                &w[first * k..(first + full) * k],
                k,
                &xt,
                cols,
                m,
                out.at_column(first),
            );
        }
        if full < rows {
            // The last rows of the weight (fewer than a block): a zero-padded copy.
            let mut pad = vec![bf16::ZERO; BLOCK * k];
            pad[..(rows - full) * k].copy_from_slice(&w[(first + full) * k..(first + rows) * k]);
            let mut part = vec![0f32; m * BLOCK];
            // SAFETY: as above, into a private `[m, BLOCK]` buffer.
            unsafe {
                tiles::band(
                    terms,
                    &pad,
                    k,
                    &xt,
                    cols,
                    m,
                    Out::new(part.as_mut_ptr(), BLOCK),
                )
            };
            for i in 0..m {
                for j in 0..rows - full {
                    // SAFETY: column `full + j` of this band, row `i < m`.
                    unsafe { out.at_column(first + full).set(i, j, part[i * BLOCK + j]) };
                }
            }
        }
    });
    // SAFETY: the bands cover columns 0..n, and each writes all `m` rows of its columns.
    unsafe { y.set_len(m * n) };
    y
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;

    use super::*;

    /// The tile configuration (palette 1): tiles 0-3 the sums (16 rows of 16 f32), 4-5 weight
    /// rows, 6-7 input pairs (16 rows of 64 bytes each).
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: Config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Asks for the `len` bf16 values from `p` in L2 (a prefetch never faults).
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const bf16, len: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        for line in (0..len).step_by(32) {
            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(line).cast::<i8>());
        }
    }

    /// Every block of 32 rows of `w` (`w.len() / k` rows, a multiple of 32) against every
    /// block of 32 columns of `xt` (the first `m` real), into `out[i][j]`.
    ///
    /// # Safety
    /// AMX must be [`available`]; `w` holds whole blocks of rows of `k` (a multiple of 32);
    /// `xt` holds `terms` parts of `k / 2` rows of `cols` pairs (`cols` a multiple of 32, at
    /// least `m`); `out` takes `m` rows of `w.len() / k` values.
    pub unsafe fn band(
        terms: usize,
        w: &[bf16],
        k: usize,
        xt: &[u32],
        cols: usize,
        m: usize,
        out: Out,
    ) {
        let rows = w.len() / k;
        debug_assert!(
            rows.is_multiple_of(BLOCK)
                && k.is_multiple_of(TILE_K)
                && cols.is_multiple_of(BLOCK)
                && cols >= m
        );
        debug_assert!(xt.len() >= terms * k / 2 * cols);
        let term_len = k / 2 * cols;
        let w_stride = k * 2; // bytes from one weight row to the next
        let x_stride = TILE * 4; // bytes from one pair row of an input tile to the next
        let chunks = k / TILE_K;
        let mut sums = [[0f32; TILE]; 4 * TILE];
        asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags));
        // Input columns a pass over the band: as many as keep their packed terms within about
        // 192 KiB (L2), so that a prefill's many rows are read from L2 by every weight block
        // instead of streaming all of them through it again for each.
        let pass = (192 * 1024 / (terms * k / 2 * 4)) / BLOCK * BLOCK;
        let pass = pass.max(BLOCK);
        for ib0 in (0..m).step_by(pass) {
            for jb in (0..rows).step_by(BLOCK) {
                let w0 = w.as_ptr().add(jb * k);
                let w1 = w0.add(TILE * k);
                for ib in (ib0..m.min(ib0 + pass)).step_by(BLOCK) {
                    let two_inputs = m - ib > TILE;
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nomem, nostack, preserves_flags)
                    );
                    for c in 0..chunks {
                        if ib == ib0 && jb + BLOCK < rows {
                            // The next block's rows are the next 32 * k values of `w`: a linear
                            // stream, fetched into L2 a share a chunk while this block's tiles
                            // read theirs across 32 rows (which the hardware prefetchers follow
                            // poorly: batch-8 decode stayed at half the bandwidth without this).
                            prefetch_l2(w0.add(BLOCK * k + c * BLOCK * TILE_K), BLOCK * TILE_K);
                        }
                        asm!(
                            "tileloadd tmm4, [{w0} + {ws}]",
                            "tileloadd tmm5, [{w1} + {ws}]",
                            w0 = in(reg) w0.add(c * TILE_K),
                            w1 = in(reg) w1.add(c * TILE_K),
                            ws = in(reg) w_stride,
                            options(nostack, readonly, preserves_flags)
                        );
                        for t in 0..terms {
                            // Term t's pair rows 16c..16c + 16, input columns ib..ib + 32.
                            let x0 = xt.as_ptr().add(t * term_len + c * TILE * cols + ib * TILE);
                            let x1 = x0.add(TILE * TILE);
                            if !two_inputs {
                                // Columns ib + 16.. are padding: half the tile products.
                                asm!(
                                    "tileloadd tmm6, [{x0} + {xs}]",
                                    "tdpbf16ps tmm0, tmm4, tmm6",
                                    "tdpbf16ps tmm2, tmm5, tmm6",
                                    x0 = in(reg) x0,
                                    xs = in(reg) x_stride,
                                    options(nostack, readonly, preserves_flags)
                                );
                                continue;
                            }
                            asm!(
                                // Each input tile's two products right after its load,
                                // so the next term's load into a register waits only for
                                // the products that read it.
                                "tileloadd tmm6, [{x0} + {xs}]",
                                "tdpbf16ps tmm0, tmm4, tmm6",
                                "tdpbf16ps tmm2, tmm5, tmm6",
                                "tileloadd tmm7, [{x1} + {xs}]",
                                "tdpbf16ps tmm1, tmm4, tmm7",
                                "tdpbf16ps tmm3, tmm5, tmm7",
                                x0 = in(reg) x0,
                                x1 = in(reg) x1,
                                xs = in(reg) x_stride,
                                options(nostack, readonly, preserves_flags)
                            );
                        }
                    }
                    // sums[16t + r][c]: tile t's row r (weight row), column c (input row).
                    asm!(
                        "tilestored [{s0} + {ss}], tmm0",
                        "tilestored [{s1} + {ss}], tmm1",
                        "tilestored [{s2} + {ss}], tmm2",
                        "tilestored [{s3} + {ss}], tmm3",
                        s0 = in(reg) sums.as_mut_ptr(),
                        s1 = in(reg) sums.as_mut_ptr().add(TILE),
                        s2 = in(reg) sums.as_mut_ptr().add(2 * TILE),
                        s3 = in(reg) sums.as_mut_ptr().add(3 * TILE),
                        ss = in(reg) TILE * 4,
                        options(nostack, preserves_flags)
                    );
                    // Tile 0: weight rows 0-15 x inputs 0-15; 1: rows 0-15 x inputs 16-31;
                    // 2: rows 16-31 x inputs 0-15; 3: rows 16-31 x inputs 16-31.
                    for (t, tile) in sums.chunks_exact(TILE).enumerate() {
                        let (row0, col0) = ((t / 2) * TILE, (t % 2) * TILE);
                        for c in 0..TILE.min(m.saturating_sub(ib + col0)) {
                            for (r, sum) in tile.iter().enumerate() {
                                out.set(ib + col0 + c, jb + row0 + r, sum[c]);
                            }
                        }
                    }
                }
            }
        }
        asm!("tilerelease", options(nomem, nostack, preserves_flags));
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tiles {
    use super::*;

    pub unsafe fn band(_: usize, _: &[bf16], _: usize, _: &[u32], _: usize, _: usize, _: Out) {
        unreachable!("AMX tiles run only on x86-64");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 sum of exact bf16 products, as the f32 kernels compute it.
    fn reference(x: &[bf16], m: usize, k: usize, w: &[bf16], n: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += f64::from(x[i * k + p].to_f32()) * f64::from(w[j * k + p].to_f32());
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    /// The three terms sum to the value exactly (in f64) for normal values, keep infinities and
    /// NaN in the first term, and never overflow the first term.
    #[test]
    fn split_is_exact() {
        let to = |b: u16| f64::from(bf16::from_bits(b).to_f32());
        let mut seed = 0x2545_f491_u32;
        for i in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // Exponents from 2^-100 to 2^100, both signs.
            let v = f32::from_bits((seed & 0x807f_ffff) | ((27 + (seed >> 23) % 200) << 23));
            let v = if i == 0 { f32::MAX } else { v };
            let [a, b, c] = split_f32(&v);
            assert_eq!(to(a) + to(b) + to(c), f64::from(v), "{v:e}");
        }
        for v in [f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(split_f32(&v), [bf16::from_f32(v).to_bits(), 0, 0]);
        }
        assert!(bf16::from_bits(split_f32(&f32::NAN)[0]).is_nan());
    }

    /// f32 activations through the three terms: each sum within f32 rounding of the exact sum of
    /// the f32 products (not of bf16-rounded activations).
    #[test]
    fn f32_activations_keep_their_precision() {
        if !available() {
            return;
        }
        let (m, k, n) = (7, 192, 64);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1009) as f32 / 317.0 - 1.55)
            .collect();
        let w: Vec<bf16> = (0..n * k)
            .map(|i| bf16::from_f32(((i * 104_729) % 997) as f32 / 421.0 - 1.1))
            .collect();
        let got = products(pack_x::<_, 3>(&x, m, k, split_f32), m, k, &w, n);
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p].to_f32()))
                    .sum();
                let abs: f64 = (0..k)
                    .map(|p| (f64::from(x[i * k + p]) * f64::from(w[j * k + p].to_f32())).abs())
                    .sum();
                // f32 sums of k terms: at most about k units of 2^-24 of the absolute sum.
                let bound = abs * k as f64 * 6e-8;
                let g = f64::from(got[i * n + j]);
                assert!(
                    (g - exact).abs() <= bound,
                    "y[{i}][{j}] = {g}, exact {exact}"
                );
                // Rounding the activations to bf16 alone would be off by far more.
                assert!(bound < abs * 2e-3);
            }
        }
    }

    /// Every shape the blocks cut: rows and inputs not multiples of 32, one chunk of `k` and
    /// several; each sum within f32 rounding of the exact one (in f64).
    #[test]
    fn tiles_match_exact_sums() {
        if !available() {
            eprintln!("no AMX on this CPU: the tiles are not run");
            return;
        }
        let value = |i: usize, s: usize| bf16::from_f32(((i * s + 7) % 23) as f32 / 8.0 - 1.4);
        for &(m, k, n) in &[
            (2, 32, 32),
            (5, 64, 40),
            (17, 96, 33),
            (32, 576, 64),
            (33, 64, 100),
            (70, 128, 31),
        ] {
            let x: Vec<bf16> = (0..m * k).map(|i| value(i, 13)).collect();
            let w: Vec<bf16> = (0..n * k).map(|i| value(i, 29)).collect();
            let got = products(pack_x::<_, 1>(&x, m, k, |v| [v.to_bits()]), m, k, &w, n);
            let want = reference(&x, m, k, &w, n);
            for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                let bound = 1e-6 * k as f32 * 4.0;
                assert!(
                    (g - e).abs() <= bound,
                    "m {m} k {k} n {n}: y[{}][{}] = {g}, exact {e}",
                    idx / n,
                    idx % n
                );
            }
        }
    }

    /// Through tensors: the same values as the f32 kernel's product of the widened operands,
    /// rounded to bf16 (equal, or one bf16 unit apart where the sums' order rounds across).
    #[test]
    fn matmul_t_agrees_with_the_widened_product() {
        if !available() {
            return;
        }
        let (m, k, n) = (MIN_ROWS + 9, 128, 96);
        let x = Tensor::rand(-1f32, 1., (1, m, k), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let w = Tensor::rand(-1f32, 1., (n, k), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let got = matmul_t(&x, &w).unwrap().expect("AMX product");
        assert_eq!(got.dims(), &[1, m, n]);
        let want = x
            .to_dtype(DType::F32)
            .unwrap()
            .broadcast_matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap();
        let (g, e): (Vec<f32>, Vec<f32>) = (
            got.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap(),
            want.flatten_all().unwrap().to_vec1().unwrap(),
        );
        for (a, b) in g.iter().zip(&e) {
            // One bf16 unit of the value (8 bits of mantissa) plus the f32 sums' rounding.
            assert!((a - b).abs() <= b.abs() / 128.0 + 1e-4, "{a} against {b}");
        }
        // f32 activations holding bf16 values: the same products, returned in f32.
        let got32 = matmul_t(&x.to_dtype(DType::F32).unwrap(), &w)
            .unwrap()
            .unwrap();
        assert_eq!(got32.dtype(), DType::F32);
        let g32: Vec<f32> = got32.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in g32.iter().zip(&e) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} against {b}");
        }
        // Fewer rows: not taken (the f32 kernels are faster there).
        let few = x.narrow(1, 0, MIN_ROWS - 1).unwrap();
        assert!(matmul_t(&few, &w).unwrap().is_none());
    }
}
