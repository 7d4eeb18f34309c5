//! CPU tensors whose data starts on a cache-line (64-byte) boundary.
//!
//! The CPU products ([`super::gemv`]) load 64 bytes of a weight row (and of an input row) at a
//! time. glibc returns large blocks 16 bytes past a page boundary, so a weight loaded into a plain
//! `Vec` has every 64-byte load straddle two cache lines, which costs the tiles about a quarter of
//! their throughput (measured: a 32-row f32 product over SmolLM2-135M's shapes, one thread, 132
//! against 96-112 GFLOP/s). A tensor here owns a few elements more than it holds and is a view
//! that starts at the first aligned one, so every row of a matrix whose row length is a multiple
//! of 64 bytes starts on a line.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor, WithDType};

use crate::error::Result;

/// The boundary the data starts on.
pub const ALIGN_BYTES: usize = 64;

/// A vector of `len + pad` copies of `fill` and the index `pad <= 64 bytes` at which its first
/// 64-byte-aligned element lies: `&v[start..start + len]` is the aligned slice.
pub fn vec<T: Copy>(len: usize, fill: T) -> (Vec<T>, usize) {
    let size = std::mem::size_of::<T>().max(1);
    let pad = ALIGN_BYTES.div_ceil(size);
    // Large vectors (weights) in huge pages where the kernel gives them (see `huge_pages`).
    let mut v = super::huge_pages::with_capacity(len + pad);
    v.resize(len + pad, fill);
    let misaligned = v.as_ptr() as usize % ALIGN_BYTES;
    let start = if misaligned == 0 || !misaligned.is_multiple_of(size) {
        0
    } else {
        (ALIGN_BYTES - misaligned) / size
    };
    (v, start)
}

/// The `len` elements of `v` from `start` as a CPU tensor of `shape` (a view: `v` stays whole).
pub fn tensor<T: WithDType>(
    v: Vec<T>,
    start: usize,
    len: usize,
    shape: &[usize],
) -> Result<Tensor> {
    let total = v.len();
    Ok(Tensor::from_vec(v, total, &Device::Cpu)?
        .narrow(0, start, len)?
        .reshape(shape)?)
}

/// Whether `t` is a contiguous CPU tensor whose data starts on a 64-byte boundary.
pub fn is_aligned(t: &Tensor) -> bool {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return false;
    };
    let Some((start, _)) = layout.contiguous_offsets() else {
        return false;
    };
    let address = match cpu {
        CpuStorage::F32(v) => v[start..].as_ptr() as usize,
        CpuStorage::F16(v) => v[start..].as_ptr() as usize,
        CpuStorage::BF16(v) => v[start..].as_ptr() as usize,
        _ => return false,
    };
    address.is_multiple_of(ALIGN_BYTES)
}

/// `t` itself when it is aligned or not a contiguous f32/f16/bf16 CPU tensor, else an aligned copy
/// (the caller drops `t`, so only one copy outlives the call).
pub fn aligned(t: Tensor) -> Result<Tensor> {
    if !t.device().is_cpu()
        || !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16)
        || !t.is_contiguous()
        || is_aligned(&t)
    {
        return Ok(t);
    }
    fn copy<T: WithDType>(src: &[T], shape: &[usize]) -> Result<Tensor> {
        let (mut v, start) = vec(src.len(), T::zero());
        v[start..start + src.len()].copy_from_slice(src);
        tensor(v, start, src.len(), shape)
    }
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
        drop(storage);
        return Ok(t);
    };
    let shape = t.dims();
    match cpu {
        CpuStorage::F32(v) => copy(&v[a..b], shape),
        CpuStorage::F16(v) => copy(&v[a..b], shape),
        CpuStorage::BF16(v) => copy(&v[a..b], shape),
        _ => unreachable!("checked above: f32, f16 or bf16"),
    }
}

/// Stacks contiguous CPU matrices `[rows_i, cols]` of one dtype along their rows into one aligned
/// tensor, copying each once; `None` when the parts are not of that kind.
pub fn cat_rows(parts: &[Tensor]) -> Result<Option<Tensor>> {
    let Some(first) = parts.first().filter(|p| p.rank() == 2) else {
        return Ok(None);
    };
    let (dtype, cols) = (first.dtype(), first.dim(1)?);
    let rows: usize = parts
        .iter()
        .map(|p| p.dim(0))
        .sum::<candle_core::Result<_>>()?;
    let same = parts
        .iter()
        .all(|p| p.device().is_cpu() && p.dtype() == dtype && p.rank() == 2 && p.dims()[1] == cols);
    if !same || !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Ok(None);
    }
    fn stack<T: WithDType>(parts: &[Tensor], rows: usize, cols: usize) -> Result<Option<Tensor>> {
        let (mut v, start) = vec(rows * cols, T::zero());
        let mut at = start;
        for p in parts {
            let (storage, layout) = p.storage_and_layout();
            let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) else {
                return Ok(None);
            };
            let Ok(src) = cpu.as_slice::<T>() else {
                return Ok(None);
            };
            v[at..at + (b - a)].copy_from_slice(&src[a..b]);
            at += b - a;
        }
        tensor(v, start, rows * cols, &[rows, cols]).map(Some)
    }
    match dtype {
        DType::F32 => stack::<f32>(parts, rows, cols),
        DType::F16 => stack::<half::f16>(parts, rows, cols),
        _ => stack::<half::bf16>(parts, rows, cols),
    }
}

/// Little-endian elements of `dtype` (f32, f16 or bf16) as an aligned CPU tensor of `shape`;
/// `None` for other dtypes.
pub fn from_le_bytes(bytes: &[u8], dtype: DType, shape: &[usize]) -> Result<Option<Tensor>> {
    fn read<T: WithDType, const N: usize>(
        bytes: &[u8],
        shape: &[usize],
        from: fn([u8; N]) -> T,
    ) -> Result<Option<Tensor>> {
        let len = bytes.len() / N;
        let (mut v, start) = vec(len, T::zero());
        for (d, s) in v[start..start + len].iter_mut().zip(bytes.chunks_exact(N)) {
            *d = from(s.try_into().expect("chunks of N bytes"));
        }
        tensor(v, start, len, shape).map(Some)
    }
    match dtype {
        DType::F32 => read(bytes, shape, f32::from_le_bytes),
        DType::F16 => read(bytes, shape, half::f16::from_le_bytes),
        DType::BF16 => read(bytes, shape, half::bf16::from_le_bytes),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_start_on_a_line_and_keep_their_values() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            // A view one element in is misaligned whatever the allocator returned.
            let base = Tensor::randn(0f32, 1., (3 * 40 + 1,), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let t = base.narrow(0, 1, 120).unwrap().reshape((3, 40)).unwrap();
            assert!(!is_aligned(&t), "{dtype:?}");
            let a = aligned(t.clone()).unwrap();
            assert!(is_aligned(&a), "{dtype:?}");
            assert_eq!(a.dims(), &[3, 40]);
            let same = a.eq(&t).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!(same.sum_all().unwrap().to_scalar::<f32>().unwrap(), 120.0);

            let parts = [t.clone(), t.narrow(0, 1, 2).unwrap()];
            let c = cat_rows(&parts).unwrap().unwrap();
            assert!(is_aligned(&c), "{dtype:?}");
            let want = Tensor::cat(&parts, 0).unwrap();
            let same = c.eq(&want).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!(same.sum_all().unwrap().to_scalar::<f32>().unwrap(), 200.0);
        }
        let bytes: Vec<u8> = [1.5f32, -2.0, 3.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = from_le_bytes(&bytes, DType::F32, &[3]).unwrap().unwrap();
        assert!(is_aligned(&t));
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
    }
}
