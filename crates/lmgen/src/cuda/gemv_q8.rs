//! Q8_0 weights on the GPU: ggml's blocks (an f16 scale and 32 int8 quants each) split at load
//! into the quants `[n, k]` and the scales `[n, k / 32]`, so that a warp streams a weight row in
//! aligned 16-byte loads. Up to [`MAX_ROWS`] activation rows (decode) run lmgen's product over
//! the quants (`gemv_q8`: 1.06 bytes a weight instead of bf16's 2); more rows (prompts)
//! dequantize the weight to the activations' dtype and multiply on cuBLAS. An embedding table in
//! Q8_0 looks rows up on the device ([`DeviceQ8::rows`]).

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Activation rows the product takes in one launch; more go through the dequantized weight.
pub const MAX_ROWS: usize = 8;

/// A `[n, k]` Q8_0 weight in device memory.
#[derive(Debug)]
pub struct DeviceQ8 {
    /// `[n, k]` u8: the int8 quants' bytes.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    quants: Tensor,
    /// `[n, k / 32]` f16.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    scales: Tensor,
    n: usize,
    k: usize,
}

impl DeviceQ8 {
    /// ggml Q8_0 blocks (34 bytes each: f16 scale, then 32 int8) of a `[n, k]` weight, row by
    /// row, copied to `device`; `None` where `device` is not a GPU.
    pub fn new(blocks: &[u8], n: usize, k: usize, device: &Device) -> Result<Option<Self>> {
        if !device.is_cuda() {
            return Ok(None);
        }
        let per_row = k / 32;
        if !k.is_multiple_of(32) || blocks.len() != n * per_row * 34 {
            return Err(crate::error::Error::input(format!(
                "Q8_0 weight [{n}, {k}]: {} bytes of blocks, expected {}",
                blocks.len(),
                n * per_row * 34
            )));
        }
        let mut quants = Vec::with_capacity(n * k);
        let mut scales = Vec::with_capacity(n * per_row);
        for block in blocks.chunks_exact(34) {
            scales.push(half::f16::from_le_bytes([block[0], block[1]]));
            quants.extend_from_slice(&block[2..]);
        }
        Ok(Some(Self {
            quants: Tensor::from_vec(quants, (n, k), device)?,
            scales: Tensor::from_vec(scales, (n, per_row), device)?,
            n,
            k,
        }))
    }

    /// Bytes held on the device.
    pub fn bytes(&self) -> usize {
        self.n * self.k + 2 * self.n * (self.k / 32)
    }

    /// `x [.., k] -> [.., n]` in `x`'s dtype (f32, f16 or bf16 on the same GPU).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        imp::forward(self, x)
    }

    /// The weight as `dtype` `[n, k]` (`q * d`, rounded to `dtype`).
    pub fn dequantize(&self, dtype: candle_core::DType) -> Result<Tensor> {
        imp::dequantize(&self.quants, &self.scales, dtype)
    }

    /// Rows `ids` (u32, any shape) of the weight as `dtype`: `[ids.., k]` (an embedding lookup,
    /// gathered and dequantized on the device).
    pub fn rows(&self, ids: &Tensor, dtype: candle_core::DType) -> Result<Tensor> {
        let flat = ids.flatten_all()?;
        let quants = self.quants.index_select(&flat, 0)?; // [m, k]
        let scales = self.scales.index_select(&flat, 0)?; // [m, k / 32]
        let mut dims = ids.dims().to_vec();
        dims.push(self.k);
        Ok(imp::dequantize(&quants, &scales, dtype)?.reshape(dims)?)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn forward(_: &DeviceQ8, _: &Tensor) -> Result<Tensor> {
        Err(crate::error::Error::unsupported(
            "Q8_0 on the GPU needs a CUDA build",
        ))
    }
    pub fn dequantize(_: &Tensor, _: &Tensor, _: candle_core::DType) -> Result<Tensor> {
        Err(crate::error::Error::unsupported(
            "Q8_0 on the GPU needs a CUDA build",
        ))
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{CudaStorageSlice, Map1, WrapErr};
    use candle_core::{CudaDevice, DType, Layout, WithDType};

    use super::*;
    use crate::cuda::launch::Launch;

    pub fn forward(w: &DeviceQ8, x: &Tensor) -> Result<Tensor> {
        let rows = x.elem_count() / w.k.max(1);
        if (1..=MAX_ROWS).contains(&rows) && crate::cuda::applies(x) {
            let x = x.contiguous()?;
            return Ok(x.apply_op1_no_bwd(&GemvQ8 { w, rows })?);
        }
        // Prompts and larger batches: the weight in the activations' dtype, then cuBLAS.
        let dense = w.dequantize(x.dtype())?;
        Ok(x.broadcast_matmul(&dense.t()?)?)
    }

    /// `quants` `[m, k]` u8 and `scales` `[m, k / 32]` f16 as `dtype` `[m, k]`.
    pub fn dequantize(quants: &Tensor, scales: &Tensor, dtype: DType) -> Result<Tensor> {
        let (quants, scales) = (quants.contiguous()?, scales.contiguous()?);
        Ok(quants.apply_op1_no_bwd(&DequantQ8 {
            scales: &scales,
            dtype,
        })?)
    }

    /// The product for up to [`MAX_ROWS`] rows: `x` is the op's operand, the weight's tensors
    /// held.
    struct GemvQ8<'a> {
        w: &'a DeviceQ8,
        rows: usize,
    }

    /// The kernel for 1..=[`MAX_ROWS`] rows (`lmgen_gemv_q8_{R}_{dtype}` in `kernels/fused.cu`).
    const ROOTS: [&str; MAX_ROWS] = [
        "lmgen_gemv_q8_1",
        "lmgen_gemv_q8_2",
        "lmgen_gemv_q8_3",
        "lmgen_gemv_q8_4",
        "lmgen_gemv_q8_5",
        "lmgen_gemv_q8_6",
        "lmgen_gemv_q8_7",
        "lmgen_gemv_q8_8",
    ];

    /// Warps (output columns) per 256-thread block.
    const COLUMNS_PER_BLOCK: usize = 8;

    impl Map1 for GemvQ8<'_> {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            dev: &CudaDevice,
            layout: &Layout,
        ) -> candle_core::Result<CudaSlice<T>> {
            let x = x.slice(layout.start_offset()..);
            let (n, k) = (self.w.n, self.w.k);
            let out = unsafe { dev.alloc::<T>(self.rows * n)? };
            let quants = crate::cuda::hold(&self.w.quants);
            let quants = quants.view::<u8>("gemv_q8 (quants on the GPU)")?;
            let scales = crate::cuda::hold(&self.w.scales);
            let scales = scales.view::<half::f16>("gemv_q8 (scales on the GPU)")?;
            let (stream, func) = crate::cuda::func::<T>(dev, ROOTS[self.rows - 1])?;
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(COLUMNS_PER_BLOCK) as u32, 1, 1),
                block_dim: (32 * COLUMNS_PER_BLOCK as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let (n, k) = (n as i32, k as i32);
            let mut b = Launch::new(&stream, &func);
            b.arg(&x)
                .arg(&quants)
                .arg(&scales)
                .arg(&out)
                .arg(&n)
                .arg(&k);
            b.dependent();
            unsafe { b.launch(cfg) }.w()?;
            Ok(out)
        }
    }

    cuda_op1!(GemvQ8<'_>, "lmgen-gemv-q8", "gemv_q8", |op, s, l| {
        crate::cuda::mapped(op, s, l, crate::cuda::with_last(l.shape(), op.w.n))
    });

    /// Quants dequantized: the op's operand is the quants, the scales held.
    struct DequantQ8<'a> {
        scales: &'a Tensor,
        dtype: DType,
    }

    fn dequant<T: DeviceRepr + WithDType>(
        scales: &Tensor,
        quants: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, u8>,
        count: usize,
        dev: &CudaDevice,
    ) -> candle_core::Result<CudaSlice<T>> {
        let out = unsafe { dev.alloc::<T>(count)? };
        let scales = crate::cuda::hold(scales);
        let scales = scales.view::<half::f16>("dequant_q8 (scales on the GPU)")?;
        let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_dequant_q8")?;
        let cfg = crate::cuda::elementwise(count);
        let count = count as u64;
        let mut b = stream.launch_builder(&func);
        b.arg(quants).arg(&scales).arg(&out).arg(&count);
        unsafe { b.launch(cfg) }.w()?;
        Ok(out)
    }

    cuda_op1!(
        DequantQ8<'_>,
        "lmgen-dequant-q8",
        "dequant_q8",
        |op, s, l| {
            let dev = s.device();
            let quants = crate::cuda::view_of::<u8>(s, l)?;
            let count = l.shape().elem_count();
            let slice = match op.dtype {
                DType::F32 => CudaStorageSlice::F32(dequant(op.scales, &quants, count, dev)?),
                DType::F16 => CudaStorageSlice::F16(dequant(op.scales, &quants, count, dev)?),
                DType::BF16 => CudaStorageSlice::BF16(dequant(op.scales, &quants, count, dev)?),
                _ => return Err(crate::cuda::cuda_only("dequant_q8 (to f32, f16 or bf16)")),
            };
            Ok(crate::cuda::output(slice, dev, l.shape().clone()))
        }
    );
}
