//! Prefill products of Q8_0 and Q4_K weights in 8-bit integer lanes, as llama.cpp multiplies its
//! quantized prompts: the activation rows are quantized to Q8_0 blocks once a call, and each
//! block of 32 products is summed exactly in i32, then scaled by the two blocks' scales into an
//! f32 sum. Two tiles compute it: one for AVX-512 VNNI (Q8_0 and Q4_K) and one for AVX2 (Q4_K).
//!
//! The tile is an outer product: a group of weight rows (two vectors' lanes: 32 rows with
//! AVX-512, 16 with AVX2) is repacked per task so that one vector holds 4 consecutive bytes of
//! each of its lanes' rows, multiplied by 4 bytes of one activation row broadcast to every lane,
//! so each lane sums one (activation row, weight row) pair. A block's 32 bytes are 8 such steps a
//! vector.
//!
//! With VNNI, `vpdpbusd` multiplies unsigned by signed bytes and adds the 4 products into an i32
//! lane: Q8_0 weights are signed, so the activations go in as `q + 128` and each weight block's
//! `128 * sum(q)` comes off its sum; Q4_K's 4-bit weights are unsigned, with a scale `d * sc` and
//! a minimum `dmin * m` per 32 (candle's dequantization), so the sum is
//! `dx * (d * sc) * S - (dx * sum(xq)) * (dmin * m)`.
//! With AVX2, `vpmaddubsw` multiplies the unsigned 4-bit weights by the signed activation bytes
//! and adds pairs into i16 lanes (at most `2 * 15 * 128` each), summed over a block's 8 steps in
//! i16 (at most 30720, exact) and then in pairs into i32 by `vpmaddwd` once a block: the same
//! integer sum with 2 multiplies and 2 adds (and a broadcast) for 64 products where f32 needs 8
//! fused multiply-adds. Q8_0's signed weights would overflow the i16 pairs (`2 * 255 * 127`), so
//! on AVX2 Q8_0 stays on the dequantized product.
//! Against dequantizing the weights to f32 for `gemm` ([`super::layers::widened`]) this does a
//! quarter of the multiply instructions (with AVX2 each multiply also needs an i16 add); the
//! activations lose what Q8_0 rounding loses, as they do in decode and in llama.cpp.
//!
//! Each output is `sum_b f32(S_b) * (dx_b * dw_b)` accumulated in block order with one fused
//! multiply-add per block (`S_b` the exact i32 sum of block `b`; for Q4_K a second one takes off
//! the minimum), what [`reference`] computes: the two tiles give the same bits.
#![allow(unsafe_code)]

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ8_0, GgmlType};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Bytes of a Q8_0 block: an f16 scale, then 32 signed bytes.
const BLOCK_BYTES: usize = 34;
/// Bytes of a Q4_K block (256 weights): `d`, `dmin` (f16), 12 bytes of 6-bit scales and minimums,
/// 128 bytes of 4-bit weights.
const Q4K_BYTES: usize = 144;
/// Weight rows of the widest tile (two vectors of 16 lanes).
const MAX_GROUP: usize = 32;
/// Activation rows of one tile.
const MR: usize = 4;

/// The instructions a tile runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX-512F/BW and VNNI: 16 lanes a vector, Q8_0 and Q4_K.
    Vnni,
    /// AVX2: 8 lanes a vector, Q4_K only (see the module).
    Avx2,
}

impl Isa {
    /// i32 lanes of one vector: a group is two vectors' lanes of weight rows.
    fn lanes(self) -> usize {
        match self {
            Isa::Vnni => 16,
            Isa::Avx2 => 8,
        }
    }
}

/// The widest tile this CPU runs (none where lmgen's run-time chosen kernels are turned off by
/// `LMGEN_CPU_KERNELS`), decided once per process.
fn isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            if super::layers::gemv_avx512::available()
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                Some(Isa::Vnni)
            } else if super::layers::gemv_avx2::available() {
                Some(Isa::Avx2)
            } else {
                None
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// From this many activation rows, Q8_0 and Q4_K products take these tiles where the CPU has
/// them, instead of the decode tiles of [`super::quantize_avx2`] and [`super::quantize_k_avx2`].
/// Qwen2.5-0.5B decode on an AMD EPYC (Zen 4, 2 threads), tok/s, decode tiles against the VNNI
/// tiles: Q8_0 batch 8 93 / 84, 16 117 / 156, 32 114 / 206; Q4_K batch 8 104 / 89, 16 107 / 118,
/// 32 116 / 202. The AVX2 tile has no such margin: Qwen3-0.6B Q4_K decode on an AMD EPYC (Zen 3,
/// 2 threads), tok/s, decode tiles against the AVX2 tile, alternated twice: batch 16 56 / 45,
/// 74 / 39; batch 32 56 / 73, 64 / 59; so with AVX2 only prompts of 64 rows or more take it.
pub fn min_rows() -> usize {
    match isa() {
        Some(Isa::Vnni) => 16,
        _ => 64,
    }
}

/// Whether this CPU multiplies Q8_0 weights ([`matmul_q8_0`]) in 8-bit lanes: AVX-512 VNNI.
pub fn available_q8_0() -> bool {
    isa() == Some(Isa::Vnni)
}

/// Whether this CPU multiplies Q4_K weights ([`matmul_q4k`]) in 8-bit lanes: AVX-512 VNNI or
/// AVX2.
pub fn available_q4k() -> bool {
    isa().is_some()
}

/// Activation rows quantized to Q8_0: the signed bytes (`[m, k]`), the scales and, for Q4_K's
/// minimums, each block's `dx * sum(q)` (both `[m, blocks]`).
struct Activations {
    xq: Vec<u8>,
    dx: Vec<f32>,
    xsum: Vec<f32>,
}

fn quantize_activations(x: &[f32], m: usize, k: usize) -> Activations {
    let blocks = k / 32;
    let mut q = vec![BlockQ8_0::zeros(); blocks];
    let mut xq = vec![0u8; m * k];
    let mut dx = vec![0f32; m * blocks];
    let mut xsum = vec![0f32; m * blocks];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        if !super::quantize_avx2::quantize_q8_0(row, &mut q) {
            BlockQ8_0::from_float(row, &mut q);
        }
        for (b, block) in block_bytes(&q).chunks_exact(BLOCK_BYTES).enumerate() {
            let d = f16_at(block);
            dx[i * blocks + b] = d;
            xsum[i * blocks + b] =
                d * block[2..].iter().map(|&v| v as i8 as i32).sum::<i32>() as f32;
            xq[i * k + b * 32..][..32].copy_from_slice(&block[2..]);
        }
    }
    Activations { xq, dx, xsum }
}

/// The bytes of Q8_0 blocks (ggml's layout: f16 scale, 32 bytes).
pub(crate) fn block_bytes(blocks: &[BlockQ8_0]) -> &[u8] {
    assert_eq!(std::mem::size_of::<BlockQ8_0>(), BLOCK_BYTES);
    // SAFETY: `BlockQ8_0` is `repr(C)` plain data of `BLOCK_BYTES` bytes (asserted).
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

/// One group of weight rows (two vectors' lanes), repacked for the tile: per block of 32,
/// `packed` holds for each half (a vector's `lanes` rows) and each 4-byte step of the block the 4
/// bytes of the half's rows; `dw` the rows' scales, `corr` (Q8_0) their `128 * sum(q)` and `mins`
/// (Q4_K) their minimums, `group` per block (zero past the last row).
struct Packed {
    lanes: usize,
    packed: Vec<u8>,
    dw: Vec<f32>,
    corr: Vec<i32>,
    mins: Vec<f32>,
}

impl Packed {
    fn new(blocks: usize, lanes: usize) -> Self {
        let group = 2 * lanes;
        Packed {
            lanes,
            packed: vec![0u8; blocks * group * 32],
            dw: vec![0f32; blocks * group],
            corr: vec![0i32; blocks * group],
            mins: vec![0f32; blocks * group],
        }
    }

    /// Weight rows of the group.
    fn group(&self) -> usize {
        2 * self.lanes
    }

    /// Bytes of one packed block: 2 halves x 8 steps x `lanes` rows x 4 bytes.
    fn block_bytes(&self) -> usize {
        self.group() * 32
    }

    /// Row `r` of the group's block `b`: 32 weight bytes.
    fn put(&mut self, r: usize, b: usize, qs: &[u8]) {
        let (half, lane) = (r / self.lanes, r % self.lanes);
        let step_bytes = self.lanes * 4;
        for step in 0..8 {
            let at = b * self.block_bytes() + (half * 8 + step) * step_bytes + lane * 4;
            self.packed[at..at + 4].copy_from_slice(&qs[step * 4..step * 4 + 4]);
        }
    }
}

fn f16_at(bytes: &[u8]) -> f32 {
    half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

/// [`pack_q8_0`] or [`pack_q4k`]: `(weight bytes, first row, rows, blocks of 32 a row, lanes)`.
type Pack = fn(&[u8], usize, usize, usize, usize) -> Packed;

/// Rows `first..first + rows` of a Q8_0 weight (`blocks` blocks a row).
fn pack_q8_0(w: &[u8], first: usize, rows: usize, blocks: usize, lanes: usize) -> Packed {
    let mut p = Packed::new(blocks, lanes);
    let group = p.group();
    for r in 0..rows {
        let row = &w[(first + r) * blocks * BLOCK_BYTES..][..blocks * BLOCK_BYTES];
        for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
            p.dw[b * group + r] = f16_at(block);
            let qs = &block[2..];
            p.corr[b * group + r] = 128 * qs.iter().map(|&v| v as i8 as i32).sum::<i32>();
            p.put(r, b, qs);
        }
    }
    p
}

/// Candle's (ggml's) 6-bit scale and minimum of sub-block `j` of a Q4_K block's 12 scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Rows `first..first + rows` of a Q4_K weight (`blocks` blocks of 32 a row): each sub-block's
/// 4-bit weights as bytes, `d * sc` and `dmin * m` as candle's dequantization computes them.
fn pack_q4k(w: &[u8], first: usize, rows: usize, blocks: usize, lanes: usize) -> Packed {
    let mut p = Packed::new(blocks, lanes);
    let group = p.group();
    let supers = blocks / 8;
    let mut qs = [0u8; 32];
    for r in 0..rows {
        let row = &w[(first + r) * supers * Q4K_BYTES..][..supers * Q4K_BYTES];
        for (sb, block) in row.chunks_exact(Q4K_BYTES).enumerate() {
            let (d, dmin) = (f16_at(block), f16_at(&block[2..]));
            let (scales, bits) = (&block[4..16], &block[16..]);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, scales);
                let b = sb * 8 + j;
                p.dw[b * group + r] = d * sc as f32;
                p.mins[b * group + r] = dmin * m as f32;
                let chunk = &bits[32 * (j / 2)..][..32];
                for (q, &v) in qs.iter_mut().zip(chunk) {
                    *q = if j % 2 == 0 { v & 0xF } else { v >> 4 };
                }
                p.put(r, b, &qs);
            }
        }
    }
    p
}

/// `y [m, n] = x [m, k] · w^T` for a Q8_0 weight `w` (`n` rows of `k / 32` blocks): see the
/// module. The caller checked [`available_q8_0`].
pub fn matmul_q8_0(x: &[f32], dims: (usize, usize, usize), w: &[BlockQ8_0]) -> Vec<f32> {
    assert!(
        available_q8_0(),
        "quantize_int8: Q8_0 tiles need AVX-512 VNNI"
    );
    matmul_q8_0_on(Isa::Vnni, x, dims, w)
}

fn matmul_q8_0_on(isa: Isa, x: &[f32], dims: (usize, usize, usize), w: &[BlockQ8_0]) -> Vec<f32> {
    assert_eq!(dims.2 % 32, 0);
    assert_eq!(w.len(), dims.1 * (dims.2 / 32));
    matmul::<false>(isa, x, dims, block_bytes(w), pack_q8_0)
}

/// `y [m, n] = x [m, k] · w^T` for a Q4_K weight `w` (`n` rows of `k / 256` blocks): see the
/// module. The caller checked [`available_q4k`].
pub fn matmul_q4k(x: &[f32], dims: (usize, usize, usize), w: &[BlockQ4K]) -> Vec<f32> {
    let isa = isa().expect("quantize_int8: Q4_K tiles need AVX2 or AVX-512 VNNI");
    matmul_q4k_on(isa, x, dims, w)
}

fn matmul_q4k_on(isa: Isa, x: &[f32], dims: (usize, usize, usize), w: &[BlockQ4K]) -> Vec<f32> {
    assert_eq!(std::mem::size_of::<BlockQ4K>(), Q4K_BYTES);
    assert_eq!(dims.2 % 256, 0);
    assert_eq!(w.len(), dims.1 * (dims.2 / 256));
    // SAFETY: `BlockQ4K` is `repr(C)` plain data of `Q4K_BYTES` bytes (asserted).
    let bytes =
        unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u8>(), std::mem::size_of_val(w)) };
    matmul::<true>(isa, x, dims, bytes, pack_q4k)
}

/// The product on `isa`'s tiles, which the caller checked this CPU runs (Q8_0 on VNNI only).
fn matmul<const Q4K: bool>(
    isa: Isa,
    x: &[f32],
    (m, n, k): (usize, usize, usize),
    w: &[u8],
    pack: Pack,
) -> Vec<f32> {
    assert!(
        Q4K || isa == Isa::Vnni,
        "quantize_int8: Q8_0 tiles need VNNI"
    );
    assert_eq!(x.len(), m * k);
    let blocks = k / 32;
    let group = 2 * isa.lanes();
    let acts = quantize_activations(x, m, k);
    let mut y = vec![0f32; m * n]; // [m, n]
    let out = Out(y.as_mut_ptr());
    (0..n.div_ceil(group)).into_par_iter().for_each(|g| {
        let first = g * group;
        let rows = group.min(n - first);
        let p = pack(w, first, rows, blocks, isa.lanes());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that this CPU runs `isa`'s tiles; the packed group, the
        // activations and `y` hold what the tiles read and write (rows `0..m`, columns
        // `first..first + rows`), and no two groups write the same column.
        unsafe {
            let mut i = 0;
            while i < m {
                let r = (m - i).min(MR);
                let mut acc = [[0f32; MAX_GROUP]; MR];
                match (isa, r) {
                    (Isa::Vnni, 4) => tile::<4, Q4K>(&acts, i, k, blocks, &p, &mut acc),
                    (Isa::Vnni, 3) => tile::<3, Q4K>(&acts, i, k, blocks, &p, &mut acc),
                    (Isa::Vnni, 2) => tile::<2, Q4K>(&acts, i, k, blocks, &p, &mut acc),
                    (Isa::Vnni, _) => tile::<1, Q4K>(&acts, i, k, blocks, &p, &mut acc),
                    (Isa::Avx2, 4) => tile_avx2_q4k::<4>(&acts, i, k, blocks, &p, &mut acc),
                    (Isa::Avx2, 3) => tile_avx2_q4k::<3>(&acts, i, k, blocks, &p, &mut acc),
                    (Isa::Avx2, 2) => tile_avx2_q4k::<2>(&acts, i, k, blocks, &p, &mut acc),
                    (Isa::Avx2, _) => tile_avx2_q4k::<1>(&acts, i, k, blocks, &p, &mut acc),
                }
                for (ii, row) in acc.iter().take(r).enumerate() {
                    let dst = out.at((i + ii) * n + first);
                    std::ptr::copy_nonoverlapping(row.as_ptr(), dst, rows);
                }
                i += r;
            }
        }
    });
    y
}

/// `y`'s storage, written by the groups at disjoint columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each group writes only its own columns of `y` (see `matmul`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element at `offset`.
    ///
    /// # Safety
    /// `offset` must lie inside `y`.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// `acc[r][c] = dot(x[i + r], w[first + c])` for `R` activation rows and the group's 32 rows,
/// for Q4_K weights (unsigned bytes, minimums) or Q8_0 (signed bytes).
///
/// # Safety
/// The CPU must have AVX-512F/BW and VNNI ([`isa`] is `Vnni`); rows `i..i + R` of `a` must exist.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const Q4K: bool>(
    a: &Activations,
    i: usize,
    k: usize,
    blocks: usize,
    p: &Packed,
    out: &mut [[f32; MAX_GROUP]; MR],
) {
    debug_assert_eq!(p.lanes, 16);
    let xq = a.xq.as_ptr().add(i * k);
    let wp = p.packed.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for b in 0..blocks {
        let mut s = [[_mm512_setzero_si512(); 2]; R];
        let wb = wp.add(b * p.block_bytes());
        for step in 0..8 {
            let w0 = _mm512_loadu_si512(wb.add(step * 64).cast());
            let w1 = _mm512_loadu_si512(wb.add(512 + step * 64).cast());
            for (r, sr) in s.iter_mut().enumerate() {
                let four =
                    std::ptr::read_unaligned(xq.add(r * k + b * 32 + step * 4).cast::<i32>());
                if Q4K {
                    // Unsigned 4-bit weights by signed activations.
                    let xv = _mm512_set1_epi32(four);
                    sr[0] = _mm512_dpbusd_epi32(sr[0], w0, xv);
                    sr[1] = _mm512_dpbusd_epi32(sr[1], w1, xv);
                } else {
                    // Activations plus 128 (unsigned) by signed weights.
                    let xv = _mm512_set1_epi32(four ^ 0x8080_8080_u32 as i32);
                    sr[0] = _mm512_dpbusd_epi32(sr[0], xv, w0);
                    sr[1] = _mm512_dpbusd_epi32(sr[1], xv, w1);
                }
            }
        }
        let at = b * p.group();
        let dw = [
            _mm512_loadu_ps(p.dw.as_ptr().add(at)),
            _mm512_loadu_ps(p.dw.as_ptr().add(at + 16)),
        ];
        if Q4K {
            let mins = [
                _mm512_loadu_ps(p.mins.as_ptr().add(at)),
                _mm512_loadu_ps(p.mins.as_ptr().add(at + 16)),
            ];
            for r in 0..R {
                let d = _mm512_set1_ps(a.dx[(i + r) * blocks + b]);
                let xs = _mm512_set1_ps(a.xsum[(i + r) * blocks + b]);
                for h in 0..2 {
                    let f = _mm512_cvtepi32_ps(s[r][h]);
                    let v = _mm512_fmadd_ps(f, _mm512_mul_ps(d, dw[h]), acc[r][h]);
                    acc[r][h] = _mm512_fnmadd_ps(xs, mins[h], v);
                }
            }
        } else {
            let corr = [
                _mm512_loadu_si512(p.corr.as_ptr().add(at).cast()),
                _mm512_loadu_si512(p.corr.as_ptr().add(at + 16).cast()),
            ];
            for r in 0..R {
                let d = _mm512_set1_ps(a.dx[(i + r) * blocks + b]);
                for h in 0..2 {
                    let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(s[r][h], corr[h]));
                    acc[r][h] = _mm512_fmadd_ps(f, _mm512_mul_ps(d, dw[h]), acc[r][h]);
                }
            }
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r][0]);
        _mm512_storeu_ps(out[r].as_mut_ptr().add(16), acc[r][1]);
    }
}

/// [`tile`] for Q4_K weights with AVX2: 16 weight rows (two vectors of 8 lanes). Each step's
/// `vpmaddubsw` products (unsigned 4-bit weights by signed activation bytes, pairs added: at most
/// `2 * 15 * 128`) are added in i16 over the block's 8 steps (at most 30720, so exact), then in
/// pairs into i32 by `vpmaddwd`: each lane's exact block sum, scaled as [`tile`] scales it.
///
/// # Safety
/// The CPU must have AVX2 and FMA; rows `i..i + R` of `a` must exist.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2_q4k<const R: usize>(
    a: &Activations,
    i: usize,
    k: usize,
    blocks: usize,
    p: &Packed,
    out: &mut [[f32; MAX_GROUP]; MR],
) {
    debug_assert_eq!(p.lanes, 8);
    let xq = a.xq.as_ptr().add(i * k);
    let wp = p.packed.as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..blocks {
        let mut s = [[_mm256_setzero_si256(); 2]; R];
        let wb = wp.add(b * p.block_bytes());
        for step in 0..8 {
            let w0 = _mm256_loadu_si256(wb.add(step * 32).cast());
            let w1 = _mm256_loadu_si256(wb.add(256 + step * 32).cast());
            for (r, sr) in s.iter_mut().enumerate() {
                let four =
                    std::ptr::read_unaligned(xq.add(r * k + b * 32 + step * 4).cast::<i32>());
                let xv = _mm256_set1_epi32(four);
                sr[0] = _mm256_add_epi16(sr[0], _mm256_maddubs_epi16(w0, xv));
                sr[1] = _mm256_add_epi16(sr[1], _mm256_maddubs_epi16(w1, xv));
            }
        }
        let at = b * p.group();
        let dw = [
            _mm256_loadu_ps(p.dw.as_ptr().add(at)),
            _mm256_loadu_ps(p.dw.as_ptr().add(at + 8)),
        ];
        let mins = [
            _mm256_loadu_ps(p.mins.as_ptr().add(at)),
            _mm256_loadu_ps(p.mins.as_ptr().add(at + 8)),
        ];
        for r in 0..R {
            let d = _mm256_set1_ps(a.dx[(i + r) * blocks + b]);
            let xs = _mm256_set1_ps(a.xsum[(i + r) * blocks + b]);
            for h in 0..2 {
                let f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s[r][h], ones));
                let v = _mm256_fmadd_ps(f, _mm256_mul_ps(d, dw[h]), acc[r][h]);
                acc[r][h] = _mm256_fnmadd_ps(xs, mins[h], v);
            }
        }
    }
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r][0]);
        _mm256_storeu_ps(out[r].as_mut_ptr().add(8), acc[r][1]);
    }
}

/// What [`matmul`] computes, one output at a time, from the same packed rows: each block's exact
/// integer sum times `dx * dw` (rounded once) added in block order by a fused multiply-add, and
/// for Q4_K `(dx * sum(xq)) * min` taken off by another. For tests.
#[cfg(test)]
fn reference(
    x: &[f32],
    (m, n, k): (usize, usize, usize),
    w: &[u8],
    pack: Pack,
    q4k: bool,
) -> Vec<f32> {
    let blocks = k / 32;
    let acts = quantize_activations(x, m, k);
    let mut y = vec![0f32; m * n];
    for j in 0..n {
        let p = pack(w, j, 1, blocks, 16); // row j alone: lane 0, half 0
        for i in 0..m {
            let mut acc = 0f32;
            for b in 0..blocks {
                let s: i32 = (0..32)
                    .map(|t| {
                        let wq = p.packed[b * p.block_bytes() + (t / 4) * 64 + t % 4];
                        let wq = if q4k { wq as i32 } else { wq as i8 as i32 };
                        acts.xq[i * k + b * 32 + t] as i8 as i32 * wq
                    })
                    .sum();
                let (dx, dw) = (acts.dx[i * blocks + b], p.dw[b * p.group()]);
                acc = (s as f32).mul_add(dx * dw, acc);
                if q4k {
                    acc = (-acts.xsum[i * blocks + b]).mul_add(p.mins[b * p.group()], acc);
                }
            }
            y[i * n + j] = acc;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1) from a fixed linear congruential sequence.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `got` against the f32 product of the dequantized weight `wd`: only the activations'
    /// rounding to Q8_0 (under 1% of each output's sum of absolute products) apart.
    fn near_f32(got: &[f32], x: &[f32], wd: &[f32], (m, n, k): (usize, usize, usize)) {
        for i in 0..m {
            for j in 0..n {
                let terms = (0..k).map(|t| x[i * k + t] * wd[j * k + t]);
                let exact: f32 = terms.clone().sum();
                let scale: f32 = terms.map(f32::abs).sum();
                let g = got[i * n + j];
                assert!(
                    (g - exact).abs() <= 0.01 * scale + 1e-4,
                    "m {m} n {n} k {k} ({i}, {j}): {g} vs {exact} (scale {scale})"
                );
            }
        }
    }

    fn assert_bits(got: &[f32], want: &[f32], what: &str) {
        for (idx, (a, b)) in got.iter().zip(want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{what} at {idx}: {a} vs {b}");
        }
    }

    /// [`matmul_q8_0_on`] or [`matmul_q4k_on`].
    type Matmul<T> = fn(Isa, &[f32], (usize, usize, usize), &[T]) -> Vec<f32>;

    // Row and column counts off the tile sizes; a weight row of large values.
    const SHAPES: [(usize, usize); 4] = [(1, 1), (5, 33), (13, 70), (66, 45)];

    /// The tiles this CPU runs: VNNI's (on a CPU that has them) and AVX2's.
    fn isas() -> Vec<Isa> {
        match isa() {
            Some(Isa::Vnni) => vec![Isa::Vnni, Isa::Avx2],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            None => vec![],
        }
    }

    /// `matmul` of `T` weights on each of `isas`' tiles over [`SHAPES`] (with the depths `ks`):
    /// bit-equal to [`reference`], near the f32 product of the dequantized weight.
    fn check<T: GgmlType>(isas: &[Isa], ks: [usize; 4], matmul: Matmul<T>, pack: Pack, q4k: bool) {
        if isas.is_empty() {
            eprintln!("skipped: this CPU runs none of these tiles");
        }
        for &isa in isas {
            for (&(m, n), k) in SHAPES.iter().zip(ks) {
                let x = values(m * k, 7);
                let mut wf = values(n * k, 11);
                wf[..k].iter_mut().for_each(|v| *v *= 300.0);
                let mut w = vec![T::zeros(); n * k / T::BLCK_SIZE];
                T::from_float(&wf, &mut w);
                let y = matmul(isa, &x, (m, n, k), &w);
                // SAFETY: ggml's block types are `repr(C)` plain data.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        w.as_ptr().cast::<u8>(),
                        std::mem::size_of_val(&w[..]),
                    )
                };
                let want = reference(&x, (m, n, k), bytes, pack, q4k);
                let what = format!("{isa:?} {:?} m {m} n {n} k {k}", T::DTYPE);
                assert_bits(&y, &want, &what);
                let mut wd = vec![0f32; n * k];
                T::to_float(&w, &mut wd);
                near_f32(&y, &x, &wd, (m, n, k));
            }
        }
    }

    #[test]
    fn q8_0_tiles_equal_the_reference_and_stay_near_the_f32_product() {
        let vnni: Vec<Isa> = isas().into_iter().filter(|&i| i == Isa::Vnni).collect();
        check::<BlockQ8_0>(&vnni, [32, 64, 96, 576], matmul_q8_0_on, pack_q8_0, false);
    }

    #[test]
    fn q4k_tiles_equal_the_reference_and_stay_near_the_f32_product() {
        check::<BlockQ4K>(&isas(), [256, 512, 256, 768], matmul_q4k_on, pack_q4k, true);
    }
}
