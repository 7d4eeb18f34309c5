//! Converting a tensor's stored bytes to the compute dtype a chunk at a time.
//!
//! A whole-tensor conversion (`Tensor::from_raw_buffer(..).to_dtype(..)`) holds the mapped file
//! pages, a copy in the stored dtype and the result at once: for Qwen2.5-0.5B's f32 embedding table
//! loaded in f16 that is 545 + 545 + 272 MB, which set the process's peak memory. Converting
//! chunk by chunk straight from the mapped bytes, and giving each chunk's pages back as it is done,
//! holds only the result. Every element goes through f32 with `half`'s round-to-nearest-even, as
//! candle's `to_dtype` does, so the values are bit-identical.

use candle_core::{DType, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Result;
use crate::models::layers::aligned;

/// Elements converted per task (4 MiB of f32).
const CHUNK: usize = 1 << 20;

/// Elements widened to f32 at a time within a task: the f32 values stay in L1 between the read
/// and the narrowing.
const STEP: usize = 4096;

/// A compute dtype the conversion writes.
trait Target: candle_core::WithDType + Send {
    /// `dst[i] = src[i]` rounded to this dtype (round to nearest even, as `to_dtype`).
    fn from_f32_slice(src: &[f32], dst: &mut [Self]);
}

impl Target for f32 {
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

impl Target for f16 {
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        // `half`'s slice conversion: F16C's rounding (to nearest even) where the CPU has it.
        dst.convert_from_f32_slice(src);
    }
}

impl Target for bf16 {
    fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

/// Whether [`convert`] handles `stored -> dtype`: two different floating dtypes of F32, F16, BF16.
pub(crate) fn converts(stored: DType, dtype: DType) -> bool {
    let float = |d| matches!(d, DType::F32 | DType::F16 | DType::BF16);
    stored != dtype && float(stored) && float(dtype)
}

/// `bytes` (little-endian elements of `stored`) as a CPU tensor of `dtype` with `shape`;
/// `release(range)` is called with each converted chunk's byte range within `bytes`, so the caller
/// can give the mapped pages back. `bytes.len()` must be `shape`'s element count times the stored
/// element size, and [`converts`] must hold.
pub(crate) fn convert(
    bytes: &[u8],
    stored: DType,
    dtype: DType,
    shape: &[usize],
    release: &(dyn Fn(std::ops::Range<usize>) + Sync),
) -> Result<Tensor> {
    match dtype {
        DType::F16 => from_stored::<f16>(bytes, stored, shape, release),
        DType::BF16 => from_stored::<bf16>(bytes, stored, shape, release),
        _ => from_stored::<f32>(bytes, stored, shape, release),
    }
}

fn from_stored<T: Target>(
    bytes: &[u8],
    stored: DType,
    shape: &[usize],
    release: &(dyn Fn(std::ops::Range<usize>) + Sync),
) -> Result<Tensor> {
    match stored {
        DType::F16 => to_vec::<T, 2>(bytes, shape, release, |b| f16::from_le_bytes(b).to_f32()),
        DType::BF16 => to_vec::<T, 2>(bytes, shape, release, |b| bf16::from_le_bytes(b).to_f32()),
        _ => to_vec::<T, 4>(bytes, shape, release, f32::from_le_bytes),
    }
}

/// The elements of `bytes` (`SIZE` bytes each, read by `read`) converted to `T`, chunk by chunk
/// on rayon's threads; `read` is inlined into each instance, so the widening loop is vectorised.
fn to_vec<T: Target, const SIZE: usize>(
    bytes: &[u8],
    shape: &[usize],
    release: &(dyn Fn(std::ops::Range<usize>) + Sync),
    read: impl Fn([u8; SIZE]) -> f32 + Sync,
) -> Result<Tensor> {
    let n = bytes.len() / SIZE;
    // Every element is written below before the vector is read; the data starts on a cache line
    // for the CPU products.
    let (mut out, start) = aligned::vec(n, T::from_f64(0.0));
    out[start..start + n]
        .par_chunks_mut(CHUNK)
        .zip(bytes.par_chunks(CHUNK * SIZE))
        .enumerate()
        .for_each(|(i, (dst, src))| {
            let mut wide = [0f32; STEP];
            for (dst, src) in dst.chunks_mut(STEP).zip(src.chunks(STEP * SIZE)) {
                let wide = &mut wide[..dst.len()];
                for (w, s) in wide.iter_mut().zip(src.chunks_exact(SIZE)) {
                    *w = read(s.try_into().expect("chunks_exact gives SIZE bytes"));
                }
                T::from_f32_slice(wide, dst);
            }
            let start = i * CHUNK * SIZE;
            release(start..start + src.len());
        });
    aligned::tensor(out, start, n, shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_to_dtype_bit_for_bit() {
        let dev = Device::Cpu;
        // More than one chunk, odd length; values that round differently in f16 and bf16.
        let n = CHUNK + 777;
        let x = (Tensor::randn(0f32, 3., n, &dev).unwrap() * 1e3).unwrap();
        let released = std::sync::Mutex::new(0usize);
        let release = |r: std::ops::Range<usize>| *released.lock().unwrap() += r.len();
        for stored in [DType::F32, DType::F16, DType::BF16] {
            let src = x.to_dtype(stored).unwrap();
            let bytes: Vec<u8> = match stored {
                DType::F32 => src
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                DType::F16 => src
                    .to_vec1::<f16>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => src
                    .to_vec1::<bf16>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            };
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                if !converts(stored, dtype) {
                    continue;
                }
                *released.lock().unwrap() = 0;
                let got = convert(&bytes, stored, dtype, &[n], &release).unwrap();
                let want = src.to_dtype(dtype).unwrap();
                assert_eq!(got.dtype(), dtype);
                let same = got.eq(&want).unwrap().to_dtype(DType::F32).unwrap();
                let same = same.sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert_eq!(same as usize, n, "{stored:?} -> {dtype:?}");
                assert_eq!(
                    *released.lock().unwrap(),
                    bytes.len(),
                    "every byte released once"
                );
            }
        }
    }
}
