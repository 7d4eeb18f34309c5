//! The input rows of a product transposed in chunks for the outer-product tiles of
//! [`super::gemv_avx512`] and [`super::gemv_avx2`], which add their own `band` methods.

use rayon::prelude::*;

/// The input rows of a product transposed for the outer-product tiles ([`Columns::band`], and
/// [`Columns::band_avx2`] on AVX2-only CPUs): rows in chunks of the first width (32 for the
/// AVX-512 tiles, 16 for the AVX2 ones: two registers a k-step), then at most one of a narrower
/// width (16 for the AVX-512 tiles), each chunk `[k, width]` (one k-step of every row of the
/// chunk in one or two registers). Rows past the chunks take the dot tiles.
pub struct Columns {
    pub(super) data: Vec<f32>,
    /// `data[start..]` starts on a cache line.
    pub(super) start: usize,
    /// `(first input row, width)` of each chunk, stored one after the other.
    pub(super) chunks: Vec<(usize, usize)>,
    /// Input rows the chunks cover: `0..covered`.
    pub(super) covered: usize,
    /// `x`'s shape, `[m, k]`.
    pub(super) m: usize,
    pub(super) k: usize,
}

impl Columns {
    /// The fewest input rows worth transposing: below 16 a chunk would be mostly empty lanes.
    pub const MIN_ROWS: usize = 16;

    /// `x` (`[m, k]`, row-major) in chunks of `widths[0]` rows, then at most one of `widths[1]`
    /// (one or two widths, multiples of 8, the widest first).
    pub fn new(x: &[f32], m: usize, k: usize, widths: &[usize]) -> Self {
        assert!(matches!(widths.len(), 1 | 2) && widths.windows(2).all(|w| w[1] < w[0]));
        let widest = widths[0];
        let mut chunks = Vec::new();
        let mut covered = 0;
        while m - covered >= widest {
            chunks.push((covered, widest));
            covered += widest;
        }
        for &width in &widths[1..] {
            if m - covered >= width {
                chunks.push((covered, width));
                covered += width;
            }
        }
        let (mut data, start) = super::aligned::vec(covered * k, 0f32);
        // Chunk by chunk on rayon's threads (each chunk is `k * widest` values, the last one
        // narrower if the rows end in one).
        data[start..start + covered * k]
            .par_chunks_mut(widest * k)
            .zip(&chunks)
            .for_each(|(panel, &(first, width))| {
                debug_assert_eq!(panel.len(), k * width);
                // 16 k-steps at a time, so the rows read and the panel written stay in cache.
                for p0 in (0..k).step_by(16) {
                    let p1 = (p0 + 16).min(k);
                    for r in 0..width {
                        let row = &x[(first + r) * k..(first + r + 1) * k];
                        for p in p0..p1 {
                            panel[p * width + r] = row[p];
                        }
                    }
                }
            });
        Self {
            data,
            start,
            chunks,
            covered,
            m,
            k,
        }
    }
}
