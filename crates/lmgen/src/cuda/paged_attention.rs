//! The paged engine's decode tokens on the GPU, reading the KV store in place: each sequence's
//! new keys and values are written at its slot and its query attends over its slots in two
//! launches per layer for the whole step, instead of a write, a gather of every cached token
//! (`index_select`) and the attention ops per sequence (about ten launches a sequence and layer,
//! which bound a 64-sequence step on the H100 to 284 ms).

use candle_core::{Device, Tensor};

use crate::error::Result;

/// The most keys (cached tokens and the new one) a sequence may hold for the paged decode
/// kernel; longer ones are gathered.
pub const MAX_KEYS: usize = super::decode_attention::BLOCK_KEYS;

/// The decode tokens of one packed step, on the device: u32 `[tokens (n) | offsets (n + 1) |
/// slots]`, uploaded once a step and read by every layer's launches.
#[derive(Debug)]
pub struct PagedIndex {
    index: Tensor,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    n: usize,
    /// The longest sequence (cached tokens and the new one).
    max_len: usize,
}

impl PagedIndex {
    /// Sequence `i`'s new token lies at position `tokens[i]` of the step's input, and `slots[i]`
    /// holds the slots of its cached tokens, then the new one's.
    pub fn new(tokens: &[usize], slots: &[&[u32]], device: &Device) -> Result<Self> {
        let index = layout(tokens, slots);
        Ok(Self {
            index: Tensor::new(index.as_slice(), device)?,
            n: tokens.len(),
            max_len: slots.iter().map(|s| s.len()).max().unwrap_or(0),
        })
    }

    /// A buffer for `n` sequences of up to `max_len` slots each that stays where it is, for a
    /// step captured as a CUDA graph: [`PagedIndex::refill`] writes each step's index into it
    /// before a replay, and the kernels size their work for `max_len` keys whatever the step
    /// holds.
    pub fn with_capacity(n: usize, max_len: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            index: Tensor::zeros(2 * n + 1 + n * max_len, candle_core::DType::U32, device)?,
            n,
            max_len,
        })
    }

    /// Writes a step's index (as [`PagedIndex::new`] takes it) into this buffer: exactly its
    /// `n` sequences, none longer than its `max_len`.
    pub fn refill(&self, tokens: &[usize], slots: &[&[u32]]) -> Result<()> {
        let lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
        let tokens = tokens.iter().map(|&t| t as u32);
        self.fill(tokens, &lens, |i, index| index.extend_from_slice(slots[i]))
    }

    /// [`PagedIndex::refill`] for sequence `i`'s token at input position `i`, its `lens[i]`
    /// slots appended by `push(i, index)`: straight from the sequences' block tables, with no
    /// list of slots made for each first.
    pub fn refill_in_order(
        &self,
        lens: &[usize],
        push: impl FnMut(usize, &mut Vec<u32>),
    ) -> Result<()> {
        self.fill(0..lens.len() as u32, lens, push)
    }

    fn fill(
        &self,
        tokens: impl Iterator<Item = u32>,
        lens: &[usize],
        push: impl FnMut(usize, &mut Vec<u32>),
    ) -> Result<()> {
        let mut index = Vec::with_capacity(2 * self.n + 1 + lens.iter().sum::<usize>());
        index.extend(tokens);
        let tokens = index.len();
        extend_slots_with(&mut index, lens, push);
        let slots = index.len() - tokens - (lens.len() + 1);
        if tokens != self.n
            || lens.len() != self.n
            || lens.iter().any(|&l| l == 0 || l > self.max_len)
            || slots != lens.iter().sum::<usize>()
        {
            return Err(crate::error::Error::input(format!(
                "a paged index for {} sequences of 1 to {} slots cannot hold {} tokens and {} \
                 sequences of {} slots at most ({slots} slots given)",
                self.n,
                self.max_len,
                tokens,
                lens.len(),
                lens.iter().max().unwrap_or(&0)
            )));
        }
        super::upload::write_u32(&self.index, &index)
    }

    /// How many sequences it holds.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// `[tokens (n) | offsets (n + 1) | slots]`, the kernels' index.
fn layout(tokens: &[usize], slots: &[&[u32]]) -> Vec<u32> {
    let total: usize = slots.iter().map(|s| s.len()).sum();
    let mut index = Vec::with_capacity(2 * tokens.len() + 1 + total);
    index.extend(tokens.iter().map(|&t| t as u32));
    extend_slots(&mut index, slots);
    index
}

/// Appends `[offsets (n + 1) | slots]`: where each sequence's slots start among the slots, then
/// the slots of every sequence in order (the paged kernels' index, [`super::PagedStep`]'s too).
pub(super) fn extend_slots(index: &mut Vec<u32>, slots: &[&[u32]]) {
    let lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
    extend_slots_with(index, &lens, |i, index| index.extend_from_slice(slots[i]));
}

/// [`extend_slots`] for sequences of `lens[i]` slots, sequence `i`'s appended by `push(i, index)`.
fn extend_slots_with(
    index: &mut Vec<u32>,
    lens: &[usize],
    mut push: impl FnMut(usize, &mut Vec<u32>),
) {
    let mut offset = 0u32;
    index.push(0);
    for &len in lens {
        offset += len as u32;
        index.push(offset);
    }
    for i in 0..lens.len() {
        push(i, index);
    }
}

/// Writes the new keys and values of `index`'s tokens (from `k`, `v` `[1, nkv, total, d]`, the
/// step's whole input) into the store (`store_k`, `store_v` `[nkv, slot_count, d]`, contiguous)
/// at each sequence's last slot, then returns `softmax(q k^T * scale) v` of each token's query
/// (`q` `[1, nh, total, d]`) over its sequence's slots: `[1, nh, n, d]`, in `index`'s order, the
/// scores and softmax in f32 as [`super::decode_attention`]. `None` where the kernels do not
/// apply (not CUDA, another dtype or layout, a sequence past 8192 tokens, one block's keys): the
/// caller gathers instead, and nothing was written.
pub fn paged_decode_attention(
    store_k: &Tensor,
    store_v: &Tensor,
    [q, k, v]: [&Tensor; 3],
    index: &PagedIndex,
    scale: f64,
) -> Result<Option<Tensor>> {
    let (Ok((1, nh, total, d)), Ok((1, nkv, kt, kd)), Ok((snkv, _, sd))) =
        (q.dims4(), k.dims4(), store_k.dims3())
    else {
        return Ok(None);
    };
    let fits = super::applies(q)
        && kt == total
        && kd == d
        && snkv == nkv
        && sd == d
        && nkv > 0
        && nh % nkv == 0
        && v.dims() == k.dims()
        && store_v.dims() == store_k.dims()
        && [k, v, store_k, store_v]
            .iter()
            .all(|t| t.dtype() == q.dtype())
        && store_k.is_contiguous()
        && store_v.is_contiguous()
        && (1..=MAX_KEYS).contains(&index.max_len)
        && index.index.device().same_device(q.device());
    if !fits {
        return Ok(None);
    }
    imp::run(store_k, store_v, [q, k, v], index, scale as f32)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(
        _: &Tensor,
        _: &Tensor,
        _: [&Tensor; 3],
        _: &PagedIndex,
        _: f32,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{Map3, WrapErr};
    use candle_core::{CudaDevice, Layout, Shape, WithDType};

    use super::*;
    use crate::cuda::launch::Launch;

    use crate::cuda::decode_attention::imp::GroupedGrid;
    use crate::cuda::decode_attention::{grouped_applies, shared_bytes, THREADS};

    pub fn run(
        store_k: &Tensor,
        store_v: &Tensor,
        [q, k, v]: [&Tensor; 3],
        index: &PagedIndex,
        scale: f32,
    ) -> Result<Option<Tensor>> {
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let total = q.dim(2)?;
        let write = PagedWrite { n: index.n, total };
        store_k.inplace_op3(&k, &index.index, &write)?;
        store_v.inplace_op3(&v, &index.index, &write)?;
        let op = PagedAttention {
            index: index.index.clone(),
            n: index.n,
            max_len: index.max_len,
            scale,
        };
        Ok(Some(q.apply_op3_no_bwd(store_k, store_v, &op)?))
    }

    struct PagedWrite {
        n: usize,
        total: usize,
    }

    fn write<T: DeviceRepr + WithDType>(
        op: &PagedWrite,
        dst: &mut CudaSlice<T>,
        ld: &Layout,
        src: &CudaSlice<T>,
        ls: &Layout,
        index: &CudaView<'_, u32>,
        dev: &CudaDevice,
    ) -> candle_core::Result<()> {
        let (n, total) = (op.n, op.total);
        let [nkv, slot_count, d] = <[usize; 3]>::try_from(ld.dims())
            .map_err(|_| crate::cuda::cuda_only("paged_kv_write (a store of rank 3)"))?;
        let dst = dst.slice_mut(ld.start_offset()..);
        let src = src.slice(ls.start_offset()..);
        let count = n * nkv * d;
        let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_paged_kv_write")?;
        let cfg = crate::cuda::elementwise(count);
        let ints = [n, nkv, total, slot_count, d].map(|x| x as i32);
        let mut bld = Launch::new(&stream, &func);
        bld.arg(&src).arg(&dst).arg(index);
        for x in &ints {
            bld.arg(x);
        }
        bld.dependent();
        unsafe { bld.launch(cfg) }.w()?;
        Ok(())
    }

    cuda_write_op3!(PagedWrite, "lmgen-paged-kv-write", "paged_kv_write", write);

    struct PagedAttention {
        /// [`PagedIndex`]'s tensor, read by the kernel.
        index: Tensor,
        n: usize,
        max_len: usize,
        scale: f32,
    }

    impl Map3 for PagedAttention {
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
                .map_err(|_| crate::cuda::cuda_only("paged_decode_attention (q of rank 4)"))?;
            let [nkv, slot_count, _] = <[usize; 3]>::try_from(lk.dims()).map_err(|_| {
                crate::cuda::cuda_only("paged_decode_attention (a store of rank 3)")
            })?;
            let n = self.n;
            let out = unsafe { dev.alloc::<T>(nh * n * d)? };
            let index = crate::cuda::hold(&self.index);
            let index = index.view::<u32>("paged_decode_attention (a CUDA index)")?;
            if grouped_applies(d, std::mem::size_of::<T>(), n, nkv) {
                let grid = GroupedGrid::new(dev, nh, nkv, n, self.max_len, d)?;
                let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_paged_decode_grouped")?;
                let ints = [nh, nkv, total, n, slot_count, d, grid.splits].map(|x| x as i32);
                let mut bld = Launch::new(&stream, &func);
                bld.arg(&q).arg(&k).arg(&v).arg(&out);
                grid.part_arg(&mut bld).arg(&index);
                for x in &ints {
                    bld.arg(x);
                }
                bld.arg(&self.scale);
                grid.launch(bld, dev, &out)?;
                return Ok(out);
            }
            let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_paged_decode_attention")?;
            let cfg = LaunchConfig {
                grid_dim: (nh as u32, n as u32, 1),
                block_dim: (THREADS as u32, 1, 1),
                // Room for the longest sequence's scores.
                shared_mem_bytes: shared_bytes(d, self.max_len, std::mem::size_of::<T>()),
            };
            let ints = [nh, nkv, total, n, slot_count, d].map(|x| x as i32);
            let mut bld = Launch::new(&stream, &func);
            bld.arg(&q).arg(&k).arg(&v).arg(&out).arg(&index);
            for x in &ints {
                bld.arg(x);
            }
            bld.arg(&self.scale);
            bld.dependent();
            unsafe { bld.launch(cfg) }.w()?;
            Ok(out)
        }
    }

    cuda_op3!(
        PagedAttention,
        "lmgen-paged-decode-attention",
        "paged_decode_attention",
        |op, lq| Shape::from((1, lq.dims()[1], op.n, lq.dims()[3]))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(index: &PagedIndex) -> Vec<u32> {
        index.index.to_vec1().unwrap()
    }

    /// A fixed index refilled from per-sequence pushes holds what `PagedIndex::new` builds from
    /// the same slots, then the zeros of its unused room; a refill that does not fit is refused.
    #[test]
    fn refilled_indices_hold_the_kernels_layout() {
        let slots: [&[u32]; 3] = [&[7, 8, 9], &[40], &[3, 1]];
        let exact = held(&PagedIndex::new(&[0, 1, 2], &slots, &Device::Cpu).unwrap());
        assert_eq!(exact, [0, 1, 2, 0, 3, 4, 6, 7, 8, 9, 40, 3, 1]);
        let fixed = PagedIndex::with_capacity(3, 4, &Device::Cpu).unwrap();
        fixed
            .refill_in_order(&[3, 1, 2], |i, out| out.extend_from_slice(slots[i]))
            .unwrap();
        let got = held(&fixed);
        assert_eq!(got[..exact.len()], exact[..]);
        assert!(got[exact.len()..].iter().all(|&x| x == 0));
        fixed.refill(&[0, 1, 2], &slots).unwrap();
        assert_eq!(held(&fixed)[..exact.len()], exact[..]);
        // A push that gives fewer slots than its length, too many sequences, a sequence past
        // the buffer's room.
        assert!(fixed
            .refill_in_order(&[3, 1, 2], |_, out| out.push(0))
            .is_err());
        assert!(fixed
            .refill_in_order(&[1, 1, 1, 1], |_, out| out.push(0))
            .is_err());
        let long: [&[u32]; 3] = [&[0; 5], &[1], &[2]];
        assert!(fixed.refill(&[0, 1, 2], &long).is_err());
    }
}
