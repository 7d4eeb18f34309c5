//! Weight quantization at load time (`--quantize q8_0|q4_k`): the analogue of transformers'
//! `load_in_8bit` / `load_in_4bit`, with llama.cpp's block formats (candle's `quantized` module).
//!
//! Every linear layer's `[out, in]` weight, the LM head included, and the token embedding table
//! are quantized once at load (a tied LM head shares the embedding's blocks, as in llama.cpp);
//! norms, biases and GPT-2's position table keep the compute dtype. Decode products run on SIMD
//! block dot products (AVX2 tiles chosen at run time, else candle's) with f32 activations
//! quantized to Q8 blocks per call, as llama.cpp does (see [`QuantizedWeight`]).
//! Q4_K needs rows whose length is a multiple of 256; other rows (for example SmolLM2's and
//! Qwen2.5-0.5B's hidden sizes 576 and 896) fall back to Q8_0, as llama.cpp's `llama-quantize`
//! falls back to another type for tensors whose rows do not split into super-blocks.

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K, BlockQ8_0, GgmlType};
use candle_core::quantized::GgmlDType;
use std::ops::Range;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::models::layers::widened::{widened_matmul, with_rows};
use crate::models::layers::{gemv, gemv_avx2, huge_pages};
use crate::models::{quantize_avx2, quantize_int8, quantize_k_avx2};

/// A quantized weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// 8-bit blocks of 32 weights with one f16 scale (34 bytes per 32 weights).
    Q8_0,
    /// 4-bit super-blocks of 256 weights with 6-bit sub-block scales (144 bytes per 256 weights).
    Q4K,
}

impl Quantization {
    /// Parses `q8_0` or `q4_k` (also `Q8_0`, `Q4_K`, `q4k`).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().replace('_', "").as_str() {
            "q80" => Ok(Self::Q8_0),
            "q4k" => Ok(Self::Q4K),
            _ => Err(Error::input(format!(
                "unknown quantization `{name}`; supported: q8_0, q4_k"
            ))),
        }
    }

    /// The block format a `[rows, cols]` weight gets: this one, or Q8_0 where `cols` does not
    /// split into this format's blocks.
    pub fn format_for(self, cols: usize) -> GgmlDType {
        let wanted = match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4K => GgmlDType::Q4K,
        };
        if cols.is_multiple_of(wanted.block_size()) {
            wanted
        } else {
            GgmlDType::Q8_0
        }
    }

    /// Bytes a `[rows, cols]` weight takes in this format (what a decode step reads).
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        let f = self.format_for(cols);
        rows * cols / f.block_size() * f.type_size()
    }

    /// Quantizes an `[out, in]` weight; `in` must be a multiple of 32.
    pub fn quantize(self, weight: &Tensor, name: &str) -> Result<QuantizedWeight> {
        let (rows, cols) = weight.dims2()?;
        self.quantize_banded(rows, cols, name, &|r| {
            Ok(weight.narrow(0, r.start, r.len())?)
        })
    }

    /// Quantizes a `[rows, cols]` weight that `band(range)` reads a band of rows at a time (as
    /// `[range.len(), cols]` in any float dtype), so that at most one band is held in f32: a
    /// large embedding table or LM head never exists whole in f32. Blocks never span rows, so
    /// the result is the same as quantizing the whole matrix.
    pub(crate) fn quantize_banded(
        self,
        rows: usize,
        cols: usize,
        name: &str,
        band: &dyn Fn(Range<usize>) -> Result<Tensor>,
    ) -> Result<QuantizedWeight> {
        let format = self.format_for(cols);
        if !cols.is_multiple_of(format.block_size()) {
            return Err(Error::unsupported(format!(
                "quantizing `{name}`: rows of {cols} values do not split into blocks of {}",
                format.block_size()
            )));
        }
        let read = |r: Range<usize>| -> Result<Vec<f32>> {
            let t = band(r.clone())?;
            if t.dims() != [r.len(), cols] {
                return Err(Error::unsupported(format!(
                    "quantizing `{name}`: rows {r:?} read as {:?}, not [{}, {cols}]",
                    t.dims(),
                    r.len()
                )));
            }
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let blocks = match format {
            GgmlDType::Q4K => Blocks::Q4K(quantize_blocks(rows, cols, &read)?),
            _ => Blocks::Q8_0(quantize_blocks(rows, cols, &read)?),
        };
        Ok(QuantizedWeight { blocks, rows, cols })
    }
}

/// The blocks of a quantized `[rows, cols]` matrix, row after row. Q6_K comes only from GGUF
/// files (llama.cpp's Q4_K_M and Q5_K_M mixes keep some tensors in it).
#[derive(Debug, Clone)]
enum Blocks {
    Q8_0(Vec<BlockQ8_0>),
    Q4K(Vec<BlockQ4K>),
    Q6K(Vec<BlockQ6K>),
}

/// Copies ggml blocks out of a file's bytes; `None` unless `bytes` is a whole number of blocks
/// and `T` is laid out exactly as ggml stores it.
#[allow(unsafe_code)]
fn blocks_from_bytes<T: GgmlType>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if size != T::DTYPE.type_size() || size == 0 || !bytes.len().is_multiple_of(size) {
        return None;
    }
    let mut blocks = huge_pages::with_capacity(bytes.len() / size);
    blocks.resize(bytes.len() / size, T::zeros());
    // SAFETY: candle's block types are `#[repr(C)]` structs of `f16`, `u8` and `i8` fields and
    // arrays, for which every bit pattern is a valid value, and `size_of::<T>()` equals ggml's
    // block size in bytes, so the struct has no padding and is ggml's on-disk layout (candle reads
    // GGUF files the same way, `ggml_file::from_raw_data`). The destination holds exactly
    // `bytes.len()` bytes and does not overlap the source.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            blocks.as_mut_ptr().cast::<u8>(),
            bytes.len(),
        );
    }
    Some(blocks)
}

/// An `[out, in]` weight in a llama.cpp block format.
///
/// Products with few rows of `x` (decode) quantize `x` to the format's dot-product blocks once and
/// run block dot products over the weight rows on rayon's threads, each row read once (llama.cpp's
/// `ggml_compute_forward_mul_mat`): the AVX2 tiles of [`quantize_avx2`] (Q8_0) and
/// [`quantize_k_avx2`] (Q4_K, Q6_K) where `gemv_avx2::available()`, candle's `vec_dot`
/// otherwise. candle's own quantized matmul does the same work on a spinning thread pool that
/// collapses when the cores are shared (measured here: 0.4 tokens/s instead of 12). Products with many rows (prefill) widen a band of weight rows at a time to f32
/// and use the f32 matmul, which is compute-bound there.
#[derive(Debug, Clone)]
pub struct QuantizedWeight {
    blocks: Blocks,
    rows: usize,
    cols: usize,
}

/// Rows read and quantized at a time by [`Quantization::quantize_banded`].
const QUANTIZE_BAND_ROWS: usize = 4096;

fn quantize_blocks<T: GgmlType>(
    rows: usize,
    cols: usize,
    read: &dyn Fn(Range<usize>) -> Result<Vec<f32>>,
) -> Result<Vec<T>> {
    let mut blocks = huge_pages::with_capacity(rows * cols / T::BLCK_SIZE);
    for start in (0..rows).step_by(QUANTIZE_BAND_ROWS) {
        let data = read(start..rows.min(start + QUANTIZE_BAND_ROWS))?;
        let done = blocks.len();
        blocks.resize(done + data.len() / T::BLCK_SIZE, T::zeros());
        T::from_float(&data, &mut blocks[done..]);
    }
    Ok(blocks)
}

/// Weight rows per rayon task in the few-rows product.
const ROWS_PER_TASK: usize = 32;

impl QuantizedWeight {
    /// Whether [`QuantizedWeight::from_ggml_bytes`] takes this block type.
    pub(crate) fn reads(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q6K)
    }

    /// An `[rows, cols]` weight from ggml blocks as a GGUF file stores them (row after row), in
    /// Q8_0, Q4_K or Q6_K; `name` is for errors.
    pub(crate) fn from_ggml_bytes(
        dtype: GgmlDType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
        name: &str,
    ) -> Result<Self> {
        let bad = |what: &str| {
            Error::unsupported(format!(
                "tensor `{name}`: {what} ({dtype:?}, [{rows}, {cols}], {} bytes)",
                bytes.len()
            ))
        };
        if !Self::reads(dtype) {
            return Err(bad("block type not run by lmgen's quantized layers"));
        }
        if !cols.is_multiple_of(dtype.block_size())
            || bytes.len() != rows * cols / dtype.block_size() * dtype.type_size()
        {
            return Err(bad("rows do not split into whole blocks"));
        }
        let layout = || bad("block layout differs from candle's");
        let blocks = match dtype {
            GgmlDType::Q8_0 => Blocks::Q8_0(blocks_from_bytes(bytes).ok_or_else(layout)?),
            GgmlDType::Q4K => Blocks::Q4K(blocks_from_bytes(bytes).ok_or_else(layout)?),
            _ => Blocks::Q6K(blocks_from_bytes(bytes).ok_or_else(layout)?),
        };
        Ok(Self { blocks, rows, cols })
    }

    /// The block format.
    pub(crate) fn dtype(&self) -> GgmlDType {
        match &self.blocks {
            Blocks::Q8_0(_) => GgmlDType::Q8_0,
            Blocks::Q4K(_) => GgmlDType::Q4K,
            Blocks::Q6K(_) => GgmlDType::Q6K,
        }
    }

    /// `[rows, cols]`.
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The weights stacked along rows (`[sum rows_i, cols]`), when all have the same block format
    /// and row length; `Err` gives them back otherwise.
    pub(crate) fn concat_rows(parts: Vec<Self>) -> std::result::Result<Self, Vec<Self>> {
        let Some(first) = parts.first() else {
            return Err(parts);
        };
        let (dtype, cols) = (first.dtype(), first.cols);
        if parts.iter().any(|p| p.dtype() != dtype || p.cols != cols) {
            return Err(parts);
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        // Every part has `dtype` (checked above), so each arm takes every part's blocks.
        let blocks = match dtype {
            GgmlDType::Q8_0 => Blocks::Q8_0(
                parts
                    .into_iter()
                    .flat_map(|p| match p.blocks {
                        Blocks::Q8_0(b) => b,
                        _ => Vec::new(),
                    })
                    .collect(),
            ),
            GgmlDType::Q4K => Blocks::Q4K(
                parts
                    .into_iter()
                    .flat_map(|p| match p.blocks {
                        Blocks::Q4K(b) => b,
                        _ => Vec::new(),
                    })
                    .collect(),
            ),
            _ => Blocks::Q6K(
                parts
                    .into_iter()
                    .flat_map(|p| match p.blocks {
                        Blocks::Q6K(b) => b,
                        _ => Vec::new(),
                    })
                    .collect(),
            ),
        };
        Ok(Self { blocks, rows, cols })
    }

    /// A Q8_0 weight's blocks as ggml lays them out (34 bytes each: f16 scale, 32 int8), with its
    /// `[rows, cols]`; `None` for the other block formats.
    pub(crate) fn q8_0_bytes(&self) -> Option<(&[u8], usize, usize)> {
        match &self.blocks {
            Blocks::Q8_0(b) => Some((quantize_int8::block_bytes(b), self.rows, self.cols)),
            _ => None,
        }
    }

    /// The whole weight as an f32 `[rows, cols]` tensor on the CPU.
    pub fn dequantize_all(&self) -> Result<Tensor> {
        match &self.blocks {
            Blocks::Q8_0(b) => self.dequantize(b),
            Blocks::Q4K(b) => self.dequantize(b),
            Blocks::Q6K(b) => self.dequantize(b),
        }
    }

    /// `x [.., in] -> [.., out]` in f32.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?.reshape(((), self.cols))?; // [m, in]
        let m = x32.dim(0)?;
        let int8 = match self.blocks {
            Blocks::Q8_0(_) => quantize_int8::available_q8_0(),
            Blocks::Q4K(_) => quantize_int8::available_q4k(),
            Blocks::Q6K(_) => false,
        };
        let few = if int8 {
            m < quantize_int8::min_rows()
        } else {
            m <= gemv::MAX_ROWS
        };
        let y = if few {
            let xs: Vec<f32> = x32.flatten_all()?.to_vec1()?;
            let y = match &self.blocks {
                Blocks::Q8_0(b) if gemv_avx2::available() => {
                    few_rows(b, &xs, m, self.rows, self.cols, quantize_avx2::band)
                }
                Blocks::Q4K(b) if gemv_avx2::available() => {
                    let band = quantize_k_avx2::band::<BlockQ4K>;
                    few_rows(b, &xs, m, self.rows, self.cols, band)
                }
                Blocks::Q6K(b) if gemv_avx2::available() => {
                    let band = quantize_k_avx2::band::<BlockQ6K>;
                    few_rows(b, &xs, m, self.rows, self.cols, band)
                }
                Blocks::Q8_0(b) => few_rows(b, &xs, m, self.rows, self.cols, row_band),
                Blocks::Q4K(b) => few_rows(b, &xs, m, self.rows, self.cols, row_band),
                Blocks::Q6K(b) => few_rows(b, &xs, m, self.rows, self.cols, row_band),
            };
            Tensor::from_vec(y, (m, self.rows), x.device())?
        } else {
            // Prefill and batches: Q8_0 and Q4_K in 8-bit integer lanes where the CPU has
            // AVX-512 VNNI, Q4_K also with AVX2; otherwise (and Q6_K) blocks of weight rows
            // dequantized into a buffer the thread keeps, the product written into the output's
            // columns.
            let x32 = x32.contiguous()?;
            let dims = (m, self.rows, self.cols);
            let y = with_rows(&x32, |xs| match &self.blocks {
                Blocks::Q8_0(b) if quantize_int8::available_q8_0() => {
                    quantize_int8::matmul_q8_0(xs, dims, b)
                }
                Blocks::Q4K(b) if quantize_int8::available_q4k() => {
                    quantize_int8::matmul_q4k(xs, dims, b)
                }
                Blocks::Q8_0(b) => widened_matmul(xs, dims, |s, dst, ld| self.widen(b, s, dst, ld)),
                Blocks::Q4K(b) => widened_matmul(xs, dims, |s, dst, ld| self.widen(b, s, dst, ld)),
                Blocks::Q6K(b) => widened_matmul(xs, dims, |s, dst, ld| self.widen(b, s, dst, ld)),
            })
            .ok_or_else(|| Error::unsupported("a quantized product takes CPU activations"))?;
            Tensor::from_vec(y, (m, self.rows), x.device())?
        };
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.rows;
        }
        Ok(y.reshape(dims)?)
    }

    /// The rows `ids` (each below `rows`) as an f32 `[ids.len(), cols]` host tensor: an
    /// embedding lookup in a quantized table.
    pub(crate) fn gather_rows(&self, ids: &[u32]) -> Result<Tensor> {
        fn gather<T: GgmlType>(blocks: &[T], ids: &[u32], cols: usize) -> Vec<f32> {
            let per_row = cols / T::BLCK_SIZE;
            let mut out = vec![0f32; ids.len() * cols];
            for (dst, &id) in out.chunks_exact_mut(cols).zip(ids) {
                let start = id as usize * per_row;
                T::to_float(&blocks[start..start + per_row], dst);
            }
            out
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.rows) {
            return Err(Error::input(format!(
                "id {bad} is outside the table of {} rows (token ids must be below the \
                 vocabulary size)",
                self.rows
            )));
        }
        let out = match &self.blocks {
            Blocks::Q8_0(b) => gather(b, ids, self.cols),
            Blocks::Q4K(b) => gather(b, ids, self.cols),
            Blocks::Q6K(b) => gather(b, ids, self.cols),
        };
        Ok(Tensor::from_vec(
            out,
            (ids.len(), self.cols),
            &candle_core::Device::Cpu,
        )?)
    }

    /// Rows `start..start + dst.len() / ld` dequantized into `dst`, row `r` at `dst[r * ld..]`,
    /// on the calling thread (a panel of [`widened_matmul`]).
    fn widen<T: GgmlType>(&self, blocks: &[T], start: usize, dst: &mut [f32], ld: usize) {
        let per_row = self.cols / T::BLCK_SIZE;
        let n = dst.len() / ld;
        dst.chunks_mut(ld)
            .zip(blocks[start * per_row..(start + n) * per_row].chunks(per_row))
            .for_each(|(dst, row)| T::to_float(row, &mut dst[..self.cols]));
    }

    /// Every row as an f32 `[rows, in]` tensor, rows side by side on rayon's threads.
    fn dequantize<T: GgmlType>(&self, blocks: &[T]) -> Result<Tensor> {
        let per_row = self.cols / T::BLCK_SIZE;
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols)
            .zip(blocks.par_chunks(per_row))
            .for_each(|(dst, row)| T::to_float(row, dst));
        Ok(Tensor::from_vec(
            out,
            (self.rows, self.cols),
            &candle_core::Device::Cpu,
        )?)
    }
}

/// A run-time chosen band kernel: `y_t[(j - first) * m + i] = dot(x[i], w[j])` for the weight
/// rows `first..first + y_t.len() / m` and the `m` rows of `x` quantized to dot-product blocks
/// (`quantize_avx2::band`, `quantize_k_avx2::band`); unsafe to call unless
/// `gemv_avx2::available()`.
type Band<T> = unsafe fn(&[<T as GgmlType>::VecDotType], usize, usize, &[T], usize, &mut [f32]);

/// `y[i, j] = dot(x[i], w[j])` for `m` rows of `x` and every weight row, as `[m, rows]`: `x`
/// quantized to the dot-product blocks once, then `band` over bands of `ROWS_PER_TASK` weight
/// rows on rayon's threads. `band` is [`row_band`], or the AVX2 tiles of [`quantize_avx2`] and
/// [`quantize_k_avx2`], for which the caller checked `gemv_avx2::available()`.
#[allow(unsafe_code)]
fn few_rows<T: GgmlType>(
    w: &[T],
    x: &[f32],
    m: usize,
    rows: usize,
    cols: usize,
    band: Band<T>,
) -> Vec<f32>
where
    T::VecDotType: 'static,
{
    let blocks = cols / T::VecDotType::BLCK_SIZE;
    let mut xq = vec![T::VecDotType::zeros(); m * blocks]; // [m, blocks]
    for (src, dst) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(blocks)) {
        quantize_row::<T>(src, dst);
    }
    let mut y_t = vec![0f32; rows * m]; // [rows, m]
    y_t.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            // SAFETY: `row_band` has no requirement; for the AVX2 bands the caller checked
            // `gemv_avx2::available()`, their one requirement; they check their slices' bounds.
            unsafe { band(&xq, m, blocks, w, task * ROWS_PER_TASK, out) }
        });
    gemv::transposed(y_t, m, rows)
}

/// One activation row into `T`'s dot-product blocks: candle's `from_float`, or for Q8_0 the same
/// blocks through AVX-512 ([`quantize_avx2::quantize_q8_0`]).
#[allow(unsafe_code)]
fn quantize_row<T: GgmlType>(src: &[f32], dst: &mut [T::VecDotType])
where
    T::VecDotType: 'static,
{
    if std::any::TypeId::of::<T::VecDotType>() == std::any::TypeId::of::<BlockQ8_0>() {
        // SAFETY: the same type (the `TypeId`s are equal), so the same layout and length.
        let blocks = unsafe {
            std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<BlockQ8_0>(), dst.len())
        };
        if quantize_avx2::quantize_q8_0(src, blocks) {
            return;
        }
    }
    T::VecDotType::from_float(src, dst);
}

/// The portable band kernel for [`few_rows`]: candle's block dot product (its own SIMD where the
/// CPU has it), one weight row by one activation row.
fn row_band<T: GgmlType>(
    xq: &[T::VecDotType],
    m: usize,
    blocks: usize,
    w: &[T],
    first: usize,
    y_t: &mut [f32],
) {
    let cols = blocks * T::VecDotType::BLCK_SIZE;
    let per_row = cols / T::BLCK_SIZE;
    for (r, out_row) in y_t.chunks_exact_mut(m).enumerate() {
        let j = first + r;
        let w_row = &w[j * per_row..(j + 1) * per_row];
        for (i, o) in out_row.iter_mut().enumerate() {
            *o = T::vec_dot(cols, w_row, &xq[i * blocks..(i + 1) * blocks]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn parses_names() {
        assert_eq!(Quantization::parse("q8_0").unwrap(), Quantization::Q8_0);
        assert_eq!(Quantization::parse("Q4_K").unwrap(), Quantization::Q4K);
        assert!(Quantization::parse("q3").is_err());
    }

    #[test]
    fn q4_k_falls_back_to_q8_0_for_short_rows() {
        assert_eq!(Quantization::Q4K.format_for(1536), GgmlDType::Q4K);
        assert_eq!(Quantization::Q4K.format_for(576), GgmlDType::Q8_0);
        assert_eq!(Quantization::Q8_0.bytes(2, 64), 2 * 2 * 34);
    }

    #[test]
    fn banded_quantization_gives_candles_blocks() {
        // More rows than one band: the blocks must be those of quantizing the whole matrix.
        let w = Tensor::randn(0f32, 1., (QUANTIZE_BAND_ROWS + 5, 256), &Device::Cpu).unwrap();
        for (q, format) in [
            (Quantization::Q8_0, GgmlDType::Q8_0),
            (Quantization::Q4K, GgmlDType::Q4K),
        ] {
            let ours = q.quantize(&w, "w").unwrap().dequantize_all().unwrap();
            let candle = candle_core::quantized::QTensor::quantize(&w, format)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            let diff = (ours - candle).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{q:?}");
        }
    }

    #[test]
    fn gathered_rows_are_the_dequantized_rows() {
        let w = Tensor::randn(0f32, 1., (40, 256), &Device::Cpu).unwrap();
        for q in [Quantization::Q8_0, Quantization::Q4K] {
            let qw = q.quantize(&w, "w").unwrap();
            let all = qw.dequantize_all().unwrap();
            let got = qw.gather_rows(&[39, 0, 7, 7]).unwrap();
            let ids = Tensor::new(&[39u32, 0, 7, 7], &Device::Cpu).unwrap();
            let want = all.index_select(&ids, 0).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{q:?}");
            let err = qw.gather_rows(&[40]).unwrap_err().to_string();
            assert!(err.contains("id 40") && err.contains("40 rows"), "{err}");
        }
    }

    /// The portable band ([`row_band`], what CPUs without AVX2 run) gives what the AVX2 tiles
    /// give, to the bit (both are candle's arithmetic), for each format and a batch of 3 rows.
    #[test]
    fn portable_band_equals_the_tiles() {
        if !gemv_avx2::available() {
            return;
        }
        let (rows, cols, m) = (70, 512, 3);
        let w = Tensor::randn(0f32, 1., (rows, cols), &Device::Cpu).unwrap();
        let x: Vec<f32> = Tensor::randn(0f32, 1., (m, cols), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for q in [Quantization::Q8_0, Quantization::Q4K] {
            let qw = q.quantize(&w, "w").unwrap();
            let (portable, tiled) = match &qw.blocks {
                Blocks::Q8_0(b) => (
                    few_rows(b, &x, m, rows, cols, row_band),
                    few_rows(b, &x, m, rows, cols, quantize_avx2::band),
                ),
                Blocks::Q4K(b) => (
                    few_rows(b, &x, m, rows, cols, row_band),
                    few_rows(b, &x, m, rows, cols, quantize_k_avx2::band),
                ),
                Blocks::Q6K(_) => unreachable!("not made by quantize"),
            };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&portable), bits(&tiled), "{q:?}");
        }
    }

    #[test]
    fn prefill_product_is_the_int8_or_the_dequantized_product() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (300, 512), &dev).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 40, 512), &dev).unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        for q in [Quantization::Q8_0, Quantization::Q4K] {
            let qw = q.quantize(&w, "w").unwrap();
            let want = match &qw.blocks {
                // With AVX-512 VNNI, Q8_0 and Q4_K multiply in 8-bit lanes, with AVX2 Q4_K
                // (the tiles are checked against their own reference in `quantize_int8`).
                Blocks::Q8_0(b) if quantize_int8::available_q8_0() => {
                    let y = quantize_int8::matmul_q8_0(&xs, (80, 300, 512), b);
                    Tensor::from_vec(y, (2, 40, 300), &dev).unwrap()
                }
                Blocks::Q4K(b) if quantize_int8::available_q4k() => {
                    let y = quantize_int8::matmul_q4k(&xs, (80, 300, 512), b);
                    Tensor::from_vec(y, (2, 40, 300), &dev).unwrap()
                }
                _ => x
                    .broadcast_matmul(&qw.dequantize_all().unwrap().t().unwrap())
                    .unwrap(),
            };
            let got = qw.forward(&x).unwrap();
            assert_eq!(got.dims(), &[2, 40, 300]);
            let bits = |t: &Tensor| -> Vec<u32> {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                v.iter().map(|f| f.to_bits()).collect()
            };
            assert_eq!(bits(&got), bits(&want), "{q:?}");
        }
    }

    #[test]
    fn quantized_product_stays_close() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (64, 512), &dev).unwrap();
        for m in [2, gemv::MAX_ROWS + 1] {
            let x = Tensor::randn(0f32, 1., (m, 512), &dev).unwrap();
            let exact = x.matmul(&w.t().unwrap()).unwrap();
            for (q, tol) in [(Quantization::Q8_0, 0.01), (Quantization::Q4K, 0.1)] {
                let y = q.quantize(&w, "w").unwrap().forward(&x).unwrap();
                assert_eq!(y.dims(), &[m, 64]);
                let err = (y - &exact).unwrap().sqr().unwrap().mean_all().unwrap();
                let scale = exact.sqr().unwrap().mean_all().unwrap();
                let rel =
                    (err.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()).sqrt();
                assert!(rel < tol, "{q:?}, {m} rows: relative error {rel}");
            }
        }
    }
}
