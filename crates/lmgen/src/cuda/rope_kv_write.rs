//! One decode token from the fused q/k/v projection into the cache, in one launch: each query
//! and key head's RMSNorm (Qwen3's `q_norm` / `k_norm`) and rotation (RoPE), the queries written
//! out, the keys and values written into the cache buffers at slots held in device memory (a
//! captured decode graph, [`super::graph`]). It replaces up to two norm, two rope and two
//! [`super::kv_write`] launches a layer.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// A step's fused q/k/v projection and what turns it into heads: a decode token in every batch
/// row here (`t = 1`), a prompt's tokens in [`super::qkv_heads`].
#[derive(Debug, Clone, Copy)]
pub struct FusedQkv<'a> {
    /// `[b, t, (num_heads + 2 num_kv_heads) * head_dim]`: queries, keys, values.
    pub qkv: &'a Tensor,
    /// Query heads (`nh`).
    pub num_heads: usize,
    /// Key/value heads (`nkv`).
    pub num_kv_heads: usize,
    /// Features per head (`d`).
    pub head_dim: usize,
    /// `(cos, sin)`, each `[b, t, r / 2]`: rotate_half RoPE over each head's first `r` features.
    pub rope: Option<(&'a Tensor, &'a Tensor)>,
    /// Per-head RMSNorm of queries and keys before the rotation: weights `[head_dim]` and eps.
    pub norms: Option<(&'a Tensor, &'a Tensor, f32)>,
}

impl FusedQkv<'_> {
    /// `(b, t)` where the fused kernels take this projection: `qkv` `[b, t, (nh + 2 nkv) d]`
    /// contiguous, the rotation's tables `[b, t, r / 2]` and the norms' weights `[d]` of its dtype,
    /// contiguous on its device, `d` even and at most `max_head_dim`; `None` otherwise.
    pub(super) fn fitting(&self, max_head_dim: usize) -> Option<(usize, usize)> {
        let (nh, nkv, d, qkv) = (self.num_heads, self.num_kv_heads, self.head_dim, self.qkv);
        let (b, t, width) = qkv.dims3().ok()?;
        let rope_fits = self.rope.is_none_or(|(cos, sin)| {
            let half = cos.dim(2).unwrap_or(0);
            cos.dims3().ok() == Some((b, t, half))
                && sin.dims() == cos.dims()
                && half > 0
                && 2 * half <= d
                && like(qkv, cos)
                && like(qkv, sin)
        });
        let norms_fit = self.norms.is_none_or(|(qw, kw, _)| {
            qw.dims() == [d] && kw.dims() == [d] && like(qkv, qw) && like(qkv, kw)
        });
        let fits = nkv > 0
            && d > 0
            && d.is_multiple_of(2)
            && d <= max_head_dim
            && width == (nh + 2 * nkv) * d
            && qkv.is_contiguous()
            && rope_fits
            && norms_fit;
        fits.then_some((b, t))
    }
}

/// Whether `x` is contiguous, of `like`'s dtype and on its device.
pub(super) fn like(like: &Tensor, x: &Tensor) -> bool {
    x.dtype() == like.dtype() && x.is_contiguous() && x.device().same_device(like.device())
}

/// Normalises and rotates `token`'s queries and keys, writes its keys and values into `k_cache`
/// and `v_cache` (`[b, nkv, cap, d]`, contiguous) at slot `slots[row]` (`[b]` u32; slots at or
/// past `cap` are skipped: the caller checks them first) in place, and returns the queries
/// `[b, nh, 1, d]`: the values of candle's `rms_norm`, `rope` and a cache write, in one launch.
/// `None` where it does not apply (a CPU tensor, a dtype other than f32 / f16 / bf16, mixed
/// dtypes, a layout other than the documented ones, the step fusions off: see
/// [`super::set_fuse_steps`]), before anything is written.
pub fn rope_kv_write(
    token: &FusedQkv<'_>,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slots: &Tensor,
) -> Result<Option<Tensor>> {
    let (nkv, d) = (token.num_kv_heads, token.head_dim);
    let qkv = token.qkv;
    if !super::applies(qkv) || !super::fuse_steps() {
        return Ok(None);
    }
    let Some((b, 1)) = token.fitting(2048) else {
        return Ok(None);
    };
    let cache_dims = (b, nkv, k_cache.dim(2).unwrap_or(0), d);
    let fits = k_cache.dims4().ok() == Some(cache_dims)
        && v_cache.dims4().ok() == Some(cache_dims)
        && like(qkv, k_cache)
        && like(qkv, v_cache)
        && slots.dims1().ok() == Some(b)
        && slots.dtype() == DType::U32
        && slots.device().same_device(qkv.device());
    if !fits {
        return Ok(None);
    }
    imp::run(token, k_cache, v_cache, slots).map(Some)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(_: &FusedQkv<'_>, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Tensor> {
        Err(crate::error::Error::unsupported(
            "rope_kv_write needs a build with the `cuda` feature",
        ))
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaDevice, Layout, Shape, WithDType};

    use crate::cuda::hold;

    use super::*;
    use crate::cuda::launch::Launch;

    pub fn run(
        token: &FusedQkv<'_>,
        k_cache: &Tensor,
        v_cache: &Tensor,
        slots: &Tensor,
    ) -> Result<Tensor> {
        let op = RopeKvWrite {
            heads: (token.num_heads, token.num_kv_heads, token.head_dim),
            rope: token.rope.map(|(c, s)| (c.clone(), s.clone())),
            norms: token.norms.map(|(q, k, eps)| (q.clone(), k.clone(), eps)),
            caches: (k_cache.clone(), v_cache.clone()),
            slots: slots.clone(),
        };
        Ok(token.qkv.apply_op1_no_bwd(&op)?)
    }

    /// The tensors the launch reads or writes besides `qkv`, held by the op.
    struct RopeKvWrite {
        heads: (usize, usize, usize),
        rope: Option<(Tensor, Tensor)>,
        norms: Option<(Tensor, Tensor, f32)>,
        caches: (Tensor, Tensor),
        slots: Tensor,
    }

    /// For errors: what the launch needs of the tensors it holds.
    const WHAT: &str = "rope_kv_write (CUDA tensors)";

    impl RopeKvWrite {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            qkv: &CudaSlice<T>,
            lqkv: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<(CudaSlice<T>, Shape)> {
            let (nh, nkv, d) = self.heads;
            let b = lqkv.dims()[0];
            let qkv = qkv.slice(lqkv.start_offset()..);
            let q = unsafe { dev.alloc::<T>(b * nh * d)? };
            let rope = self.rope.as_ref().map(|(c, s)| (hold(c), hold(s)));
            let norms = self
                .norms
                .as_ref()
                .map(|(q, k, eps)| (hold(q), hold(k), *eps));
            // The caches are written through these read-locked views: the kernel's stores are
            // ordered on the device's one stream, like every launch's.
            let (k_cache, v_cache) = (hold(&self.caches.0), hold(&self.caches.1));
            let slots = hold(&self.slots);
            let (cap, r) = (
                self.caches.0.dim(2)?,
                self.rope.as_ref().map_or(d, |(c, _)| 2 * c.dims()[2]),
            );
            let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_rope_kv_write")?;
            let cfg = LaunchConfig {
                grid_dim: ((nh + 2 * nkv) as u32, b as u32, 1),
                block_dim: ((d / 2).next_multiple_of(32) as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let rope = match &rope {
                Some((c, s)) => Some((c.view::<T>(WHAT)?, s.view::<T>(WHAT)?)),
                None => None,
            };
            let eps = norms.as_ref().map_or(0.0, |n| n.2);
            let norms = match &norms {
                Some((q, k, _)) => Some((q.view::<T>(WHAT)?, k.view::<T>(WHAT)?)),
                None => None,
            };
            let (k_cache, v_cache) = (k_cache.view::<T>(WHAT)?, v_cache.view::<T>(WHAT)?);
            let slots = slots.view::<u32>(WHAT)?;
            let ints = [nh, nkv, d, r, cap].map(|n| n as i32);
            let mut bld = Launch::new(&stream, &func);
            bld.arg(&qkv);
            match &rope {
                Some((c, s)) => bld.arg(c).arg(s),
                None => bld.arg(&0u64).arg(&0u64), // null pointers: no rotation
            };
            match &norms {
                Some((q, k)) => bld.arg(q).arg(k),
                None => bld.arg(&0u64).arg(&0u64), // null pointers: no norm
            };
            bld.arg(&eps)
                .arg(&q)
                .arg(&k_cache)
                .arg(&v_cache)
                .arg(&slots);
            for n in &ints {
                bld.arg(n);
            }
            bld.dependent();
            unsafe { bld.launch(cfg) }.w()?;
            Ok((q, Shape::from((b, nh, 1, d))))
        }
    }

    cuda_op1!(RopeKvWrite, "lmgen-rope-kv-write", "rope_kv_write", launch);
}
