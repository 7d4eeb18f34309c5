//! A packed step of the paged engine with prompt chunks in it, on the GPU in two launches per
//! layer: every new token's keys and values written into the KV store at its slot, then every
//! sequence's queries attending causally over its own slots in place (`kernels/flash.cu`),
//! instead of a write, a gather of the sequence's cached tokens (`index_select`), a mask built
//! on the host and the attention ops, per sequence and layer.

use candle_core::{Device, Tensor};

use super::flash_attention::{head_fits, FlashBody, FlashScores, BLOCK_QUERIES};
use crate::error::Result;
use crate::models::layers::attention::Scores;

/// The sequences of one packed step, on the device: u32 `[starts (n) | news (n) | offsets
/// (n + 1) | slots | work (2 per block) | token slots (total)]`, uploaded once a step and read
/// by every layer's launches.
#[derive(Debug)]
pub struct PagedStep {
    index: Tensor,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    n: usize,
    /// Where the (sequence, first query) pairs start, and how many blocks they make.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    work: (usize, usize),
    /// Where the new tokens' slots start, and the step's tokens.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    tokens: (usize, usize),
}

impl PagedStep {
    /// Sequence `i` has `news[i]` new tokens, after those of the sequences before it in the
    /// step's input; `slots[i]` holds the slots of its cached tokens, then of its new ones.
    pub fn new(news: &[usize], slots: &[&[u32]], device: &Device) -> Result<Self> {
        let n = news.len();
        let total: usize = news.iter().sum();
        let slot_count: usize = slots.iter().map(|s| s.len()).sum();
        let blocks: usize = news.iter().map(|&t| t.div_ceil(BLOCK_QUERIES)).sum();
        let mut index = Vec::with_capacity(3 * n + 1 + slot_count + 2 * blocks + total);
        let mut start = 0u32;
        for &t in news {
            index.push(start);
            start += t as u32;
        }
        index.extend(news.iter().map(|&t| t as u32));
        super::paged_attention::extend_slots(&mut index, slots);
        let work_at = index.len();
        for (i, &t) in news.iter().enumerate() {
            for q0 in (0..t).step_by(BLOCK_QUERIES) {
                index.extend([i as u32, q0 as u32]);
            }
        }
        let tokens_at = index.len();
        for (s, &t) in slots.iter().zip(news) {
            index.extend_from_slice(&s[s.len().saturating_sub(t)..]);
        }
        Ok(Self {
            index: Tensor::new(index.as_slice(), device)?,
            n,
            work: (work_at, blocks),
            tokens: (tokens_at, total),
        })
    }
}

/// Writes the new keys and values of every token of `step` (`k`, `v` `[1, nkv, total, d]`, the
/// step's input) into the store (`store_k`, `store_v` `[nkv, slot_count, d]`, contiguous) at
/// its slot, then returns `q` `[1, nh, total, d]`'s attention, each sequence's queries causal
/// over its own slots (and within `window` of their position): `[1, nh, total, d]` (a view of
/// `[1, total, nh, d]` memory), as [`super::flash_attention`] computes it. `None` where the
/// kernel does not apply (not CUDA, another dtype or layout, a head size it does not take, not
/// enough shared memory): the caller goes sequence by sequence, and nothing was written.
pub fn paged_flash_attention(
    store_k: &Tensor,
    store_v: &Tensor,
    [q, k, v]: [&Tensor; 3],
    step: &PagedStep,
    window: Option<usize>,
    scores: Scores<'_>,
) -> Result<Option<Tensor>> {
    let (Ok((1, nh, total, d)), Ok((1, nkv, kt, kd)), Ok((snkv, _, sd))) =
        (q.dims4(), k.dims4(), store_k.dims3())
    else {
        return Ok(None);
    };
    let fits = super::applies(q)
        && total == step.tokens.1
        && kt == total
        && kd == d
        && snkv == nkv
        && sd == d
        && nkv > 0
        && nh % nkv == 0
        && head_fits(d, q.dtype())
        && v.dims() == k.dims()
        && store_v.dims() == store_k.dims()
        && [k, v, store_k, store_v]
            .iter()
            .all(|t| t.dtype() == q.dtype())
        && store_k.is_contiguous()
        && store_v.is_contiguous()
        && step.index.device().same_device(q.device());
    let body = FlashBody::new(d, q.dtype().size_in_bytes());
    match FlashScores::new(window, scores, nh, q) {
        Some(scores) if fits => imp::run(store_k, store_v, [q, k, v], step, scores, body),
        _ => Ok(None),
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(
        _: &Tensor,
        _: &Tensor,
        _: [&Tensor; 3],
        _: &PagedStep,
        _: FlashScores,
        _: FlashBody,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{Map3, WrapErr};
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::*;
    use crate::cuda::flash_attention::imp::{allow_shared, hold_sinks, max_shared};
    use crate::cuda::Module;

    pub fn run(
        store_k: &Tensor,
        store_v: &Tensor,
        [q, k, v]: [&Tensor; 3],
        step: &PagedStep,
        scores: FlashScores,
        body: FlashBody,
    ) -> Result<Option<Tensor>> {
        let Ok(dev) = q.device().as_cuda_device() else {
            return Ok(None);
        };
        if body.shared_bytes > max_shared(dev)? {
            return Ok(None);
        }
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let write = WriteTokens {
            at: step.tokens.0,
            total: step.tokens.1,
        };
        store_k.inplace_op3(&k, &step.index, &write)?;
        store_v.inplace_op3(&v, &step.index, &write)?;
        let op = PagedFlash {
            index: step.index.clone(),
            n: step.n,
            work: step.work,
            scores,
            body,
        };
        // [1, total, nh, d] -> [1, nh, total, d]: a view whose transpose back is contiguous.
        Ok(Some(
            q.apply_op3_no_bwd(store_k, store_v, &op)?.transpose(1, 2)?,
        ))
    }

    /// The step's new keys (or values) into the store at their slots.
    struct WriteTokens {
        /// Where the token slots start in the index.
        at: usize,
        total: usize,
    }

    fn write<T: DeviceRepr + WithDType>(
        op: &WriteTokens,
        dst: &mut CudaSlice<T>,
        ld: &Layout,
        src: &CudaSlice<T>,
        ls: &Layout,
        index: &CudaView<'_, u32>,
        dev: &CudaDevice,
    ) -> candle_core::Result<()> {
        let (total, token_slots) = (op.total, index.slice(op.at..));
        let [nkv, slot_count, d] = <[usize; 3]>::try_from(ld.dims())
            .map_err(|_| crate::cuda::cuda_only("paged_kv_write_tokens (a store of rank 3)"))?;
        let mut dst = dst.slice_mut(ld.start_offset()..);
        let src = src.slice(ls.start_offset()..);
        let (stream, func) =
            crate::cuda::func_in::<T>(dev, "lmgen_paged_kv_write_tokens", Module::Flash)?;
        let cfg = crate::cuda::elementwise(nkv * total * d);
        let ints = [nkv, total, slot_count, d].map(|x| x as i32);
        let mut bld = stream.launch_builder(&func);
        bld.arg(&src).arg(&mut dst).arg(&token_slots);
        for x in &ints {
            bld.arg(x);
        }
        unsafe { bld.launch(cfg) }.w()?;
        Ok(())
    }

    cuda_write_op3!(
        WriteTokens,
        "lmgen-paged-kv-write-tokens",
        "paged_kv_write_tokens",
        write
    );

    struct PagedFlash {
        /// [`PagedStep`]'s tensor, read by the kernel.
        index: Tensor,
        n: usize,
        work: (usize, usize),
        scores: FlashScores,
        body: FlashBody,
    }

    impl Map3 for PagedFlash {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            q: &CudaSlice<T>,
            lq: &Layout,
            k: &CudaSlice<T>,
            lk: &Layout,
            v: &CudaSlice<T>,
            lv: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let q = q.slice(lq.start_offset()..);
            let (k, v) = (k.slice(lk.start_offset()..), v.slice(lv.start_offset()..));
            let [_, nh, total, d] = <[usize; 4]>::try_from(lq.dims())
                .map_err(|_| crate::cuda::cuda_only("paged_flash_attention (q of rank 4)"))?;
            let [nkv, slot_count, _] = <[usize; 3]>::try_from(lk.dims())
                .map_err(|_| crate::cuda::cuda_only("paged_flash_attention (a store of rank 3)"))?;
            let out = unsafe { dev.alloc::<T>(nh * total * d)? };
            let (stream, func) =
                crate::cuda::func_in::<T>(dev, "lmgen_paged_flash_attention", Module::Flash)?;
            let bytes = self.body.shared_bytes;
            allow_shared(&func, bytes).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let cfg = LaunchConfig {
                grid_dim: (self.work.1 as u32, nh as u32, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: bytes as u32,
            };
            let index = crate::cuda::hold(&self.index);
            let index = index.view::<u32>("paged_flash_attention (a CUDA index)")?;
            let sinks = hold_sinks(&self.scores);
            let sinks = match &sinks {
                Some(held) => Some(held.view::<f32>("paged_flash_attention (CUDA sinks)")?),
                None => None,
            };
            let ints = [self.n, self.work.0, nh, nkv, total, slot_count, d].map(|x| x as i32);
            let mut bld = stream.launch_builder(&func);
            bld.arg(&q).arg(&k).arg(&v).arg(&out);
            match &sinks {
                Some(s) => bld.arg(s),
                None => bld.arg(&0u64), // no sinks
            };
            bld.arg(&index);
            for x in &ints {
                bld.arg(x);
            }
            let sc = &self.scores;
            let mma = i32::from(self.body.mma);
            bld.arg(&sc.window)
                .arg(&sc.scale)
                .arg(&sc.softcap)
                .arg(&mma);
            unsafe { bld.launch(cfg) }.w()?;
            Ok(out)
        }
    }

    cuda_op3!(
        PagedFlash,
        "lmgen-paged-flash-attention",
        "paged_flash_attention",
        |_op, lq| {
            let &[b, nh, total, d] = lq.dims() else {
                return Err(crate::cuda::cuda_only(
                    "paged_flash_attention (q of rank 4)",
                ));
            };
            candle_core::Shape::from((b, total, nh, d))
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index holds what `kernels/flash.cu` reads, in its order: starts, new tokens, slot
    /// offsets, slots, one (sequence, first query) pair per block of 64 queries, then each new
    /// token's slot.
    #[test]
    fn the_step_index_is_laid_out_as_the_kernel_reads_it() -> Result<()> {
        let news = [2, 1, 65];
        let slots: [&[u32]; 3] = [&[7, 3], &[9, 1, 4], &(100..170).collect::<Vec<u32>>()];
        let step = PagedStep::new(&news, &slots, &Device::Cpu)?;
        let index = step.index.to_vec1::<u32>()?;
        let (n, total) = (3, 68);
        assert_eq!((step.n, step.tokens.1), (n, total));
        assert_eq!(&index[..n], &[0, 2, 3]); // starts
        assert_eq!(&index[n..2 * n], &[2, 1, 65]); // news
        assert_eq!(&index[2 * n..3 * n + 1], &[0, 2, 5, 75]); // offsets
        let all: Vec<u32> = slots.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(&index[3 * n + 1..step.work.0], all.as_slice());
        // 65 queries make two blocks.
        assert_eq!(step.work.1, 4);
        assert_eq!(
            &index[step.work.0..step.tokens.0],
            &[0, 0, 1, 0, 2, 0, 2, 64]
        );
        let mut new_slots = vec![7, 3, 4];
        new_slots.extend(105..170);
        assert_eq!(&index[step.tokens.0..], new_slots.as_slice());
        Ok(())
    }
}
