//! Attention of one new query per head over the cached keys (decode), in one launch: what
//! [`crate::models::layers::attention::attend`] computes without a mask, softcap or sinks, the
//! scores and softmax kept in f32 throughout (transformers' sdpa kernels keep them in f32 too).
//!
//! Two kernels: where the head size allows (`grouped_applies`), one block takes up to eight query
//! heads of a key/value head and a share of its keys in tiles of 256 (each cached row read once
//! for the group: grouped-query models have 2-8 query heads a key/value head); else one block per
//! query head. Both split long caches across blocks and add the splits up in a second launch.

use candle_core::Tensor;

use crate::error::Result;

/// The most cached keys the kernel takes (128k): longer caches take candle's ops.
pub const MAX_KEYS: usize = 1 << 17;

/// The most keys one block takes: their scores live in shared memory (4 bytes each, under the
/// 48 KiB a launch gets without opting in, beside the query and the partial sums).
pub(super) const BLOCK_KEYS: usize = 8192;

/// How many blocks share the `s` keys of each of `rows` (head, batch row) pairs: enough to give
/// a GPU's SMs (132 on an H100) about two blocks each, none with fewer than 512 keys nor more
/// than [`BLOCK_KEYS`]. A single pass (1) for short caches: one launch, no combine.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn splits(s: usize, rows: usize) -> usize {
    let fill = 264usize.div_ceil(rows.max(1));
    let by_len = s.div_ceil(512);
    s.div_ceil(BLOCK_KEYS).max(fill.min(by_len)).max(1)
}

/// Query heads one block of the grouped kernel takes, and keys a tile (`PG_HEADS`, `PG_TILE` in
/// `kernels/fused.cu`).
pub(super) const GROUP_HEADS: usize = 8;
const TILE: usize = 256;

/// When the grouped kernels (each cached row read once for all the query heads of its
/// key/value head; dense and paged) run where the head size allows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouped {
    /// For steps of at least [`GROUPED_MIN_ROWS`] (rows x key/value heads): on an H100 they took
    /// the engine's 64-sequence decode step (2 key/value heads) from 5.54 to 4.07 ms, but batch-1
    /// decode of the Qwen2.5-0.5B shape from 1015-1030 to 824-826 tok/s (two blocks of seven
    /// heads a layer where the per-head kernel runs fourteen: latency, not bytes, bounds it).
    Auto,
    /// Wherever the head size allows them.
    Always,
    /// One block per query head everywhere.
    Never,
}

/// The fewest rows x key/value heads a step has for [`Grouped::Auto`] to take the grouped
/// kernels (2 measured slower, 128 faster; the threshold between is not measured).
pub const GROUPED_MIN_ROWS: usize = 32;

fn grouped_mode() -> &'static std::sync::atomic::AtomicU8 {
    static MODE: std::sync::OnceLock<std::sync::atomic::AtomicU8> = std::sync::OnceLock::new();
    MODE.get_or_init(|| {
        let mode = match std::env::var("LMGEN_CUDA_GROUPED_ATTENTION").as_deref() {
            Ok("0") => Grouped::Never,
            Ok("1") => Grouped::Always,
            _ => Grouped::Auto,
        };
        std::sync::atomic::AtomicU8::new(mode as u8)
    })
}

/// Sets when the grouped kernels run for the whole process (`LMGEN_CUDA_GROUPED_ATTENTION=0` /
/// `1` set [`Grouped::Never`] / [`Grouped::Always`] at start; [`Grouped::Auto`] otherwise), and
/// returns the mode before: the kernel checks run both kernels whatever the process runs with.
pub fn set_grouped(mode: Grouped) -> Grouped {
    Grouped::from(grouped_mode().swap(mode as u8, std::sync::atomic::Ordering::Relaxed))
}

impl From<u8> for Grouped {
    fn from(mode: u8) -> Self {
        match mode {
            0 => Grouped::Auto,
            1 => Grouped::Always,
            _ => Grouped::Never,
        }
    }
}

/// Whether a grouped kernel takes a step of `rows` rows (batch rows or sequences) over `nkv`
/// key/value heads of size `d` in `elem`-byte elements: rows in 16-byte chunks, a row's chunks
/// dividing a warp, `d <= 128` (its shared memory under 48 KiB), and the [`Grouped`] mode.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn grouped_applies(d: usize, elem: usize, rows: usize, nkv: usize) -> bool {
    let bytes = d * elem;
    let fits = bytes.is_multiple_of(16) && 32usize.is_multiple_of(bytes / 16) && d <= 128;
    let mode = Grouped::from(grouped_mode().load(std::sync::atomic::Ordering::Relaxed));
    fits && match mode {
        Grouped::Auto => rows * nkv >= GROUPED_MIN_ROWS,
        Grouped::Always => true,
        Grouped::Never => false,
    }
}

/// The grouped kernel's blocks per (query-head block, sequence): enough for about two blocks on
/// each of an H100's 132 SMs, no more than the longest sequence's tiles. Fixed by the step's
/// shape (`max_len` is a captured graph's capacity there), not by its sequences' lengths: a
/// split that finds no tile of its sequence writes an empty part.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn grouped_splits(head_blocks: usize, n: usize, max_len: usize) -> usize {
    264usize
        .div_ceil((head_blocks * n).max(1))
        .min(max_len.div_ceil(TILE))
        .max(1)
}

/// The grouped kernel's dynamic shared memory: the queries `[8, d]`, a tile's scores
/// `[8, 256]` and each warp's partial sums `[8 warps, 8, d]`, f32.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn grouped_shared_bytes(d: usize) -> u32 {
    let warps = THREADS / 32;
    (4 * (GROUP_HEADS * d + GROUP_HEADS * TILE + warps * GROUP_HEADS * d)) as u32
}

/// Threads per block of the attention kernels (`attend_rows` in `kernels/fused.cu`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) const THREADS: usize = 256;

/// The dynamic shared memory of `attend_rows` for head size `d` over `s` keys of `elem`-byte
/// values: the query and the scores (`d + s` floats), and one partial output (`d` floats) per
/// group of threads, a group being the `d / chunk` threads that cover a row in chunks of 16
/// bytes (of one element where `d` is not a multiple of 16 bytes), as the kernel splits them.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn shared_bytes(d: usize, s: usize, elem: usize) -> u32 {
    attend_shared_bytes(d, s, elem, THREADS) as u32
}

/// [`shared_bytes`] for blocks of `threads` threads (`attend_rows` in `kernels/attend.cuh`,
/// which the layer kernel runs with its own block size too).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn attend_shared_bytes(d: usize, s: usize, elem: usize, threads: usize) -> usize {
    let chunk = if (d * elem).is_multiple_of(16) {
        16 / elem
    } else {
        1
    };
    let groups = (threads / (d / chunk).max(1)).max(1);
    4 * (d + s + groups * d)
}

/// [`decode_attention`] over the first `slots[row] + 1` keys of each row of the cache buffers
/// `k`, `v` `[b, nkv, cap, d]`, the lengths read from device memory (`slots` `[b]` u32, the slot
/// each row's new token was written to): a captured decode graph replays it as the cache grows.
/// `None` where the kernel does not apply, or for buffers of more than [`MAX_KEYS`] slots.
pub fn decode_attention_at(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    slots: &Tensor,
    scale: f64,
) -> Result<Option<Tensor>> {
    let fits = slots.dtype() == candle_core::DType::U32
        && slots.dims1().ok() == q.dims().first().copied()
        && slots.device().same_device(q.device());
    if !fits {
        return Ok(None);
    }
    decode_attention_over(q, k, v, Some(slots), scale)
}

/// `softmax(q k^T * scale) v`: `q` `[b, nh, 1, d]` (contiguous), `k`, `v` `[b, nkv, s, d]` (any
/// strides with the last dim contiguous: the cache's narrowed views) -> `[b, nh, 1, d]`. `None`
/// where the kernel does not apply (see the [module](super) docs), or past [`MAX_KEYS`].
pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Option<Tensor>> {
    decode_attention_over(q, k, v, None, scale)
}

fn decode_attention_over(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    slots: Option<&Tensor>,
    scale: f64,
) -> Result<Option<Tensor>> {
    let (Ok((b, nh, t, d)), Ok((kb, nkv, s, kd))) = (q.dims4(), k.dims4()) else {
        return Ok(None);
    };
    let fits = t == 1
        && kb == b
        && kd == d
        && nkv > 0
        && nh % nkv == 0
        && (1..=MAX_KEYS).contains(&s)
        && v.dims() == k.dims()
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype()
        && q.is_contiguous()
        && k.stride()[3] == 1
        && v.stride()[3] == 1;
    if !super::applies(q) || !fits {
        return Ok(None);
    }
    imp::run(q, k, v, slots, scale as f32)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
        _: f32,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
pub(super) mod imp {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{Map3, WrapErr};
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::*;
    use crate::cuda::launch::Launch;

    pub fn run(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        slots: Option<&Tensor>,
        scale: f32,
    ) -> Result<Option<Tensor>> {
        let op = DecodeAttention {
            scale,
            slots: slots.cloned(),
        };
        Ok(Some(q.apply_op3_no_bwd(k, v, &op)?))
    }

    struct DecodeAttention {
        scale: f32,
        /// `[b]` u32: attend over the first `slots[row] + 1` keys of each row (the `_at` kernel)
        /// instead of all of them.
        slots: Option<Tensor>,
    }

    impl Map3 for DecodeAttention {
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
            let q = match lq.contiguous_offsets() {
                Some((a, b)) => q.slice(a..b),
                None => return Err(crate::cuda::cuda_only("decode_attention (a contiguous q)")),
            };
            let (k, v) = (k.slice(lk.start_offset()..), v.slice(lv.start_offset()..));
            let [b, nh, _, d] = <[usize; 4]>::try_from(lq.dims())
                .map_err(|_| crate::cuda::cuda_only("decode_attention (q of rank 4)"))?;
            let (nkv, s) = (lk.dims()[1], lk.dims()[2]);
            let out = unsafe { dev.alloc::<T>(b * nh * d)? };
            let (ks, vs) = (lk.stride(), lv.stride());
            let strides = [ks[0], ks[1], ks[2], vs[0], vs[1], vs[2]].map(|n| n as i64);
            // Held to the launch: the slots' storage, read by the `_at` kernels.
            let slots = self.slots.as_ref().map(crate::cuda::hold);
            let slots = match &slots {
                Some(held) => Some(held.view::<u32>("decode_attention_at (CUDA slots)")?),
                None => None,
            };
            if grouped_applies(d, std::mem::size_of::<T>(), b, nkv) {
                // A key/value head's query heads in one block; with `slots`, sized for all `s`
                // slots of the buffer (a captured graph's lengths change between replays).
                let grid = GroupedGrid::new(dev, nh, nkv, b, s, d)?;
                let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_decode_grouped")?;
                let splits = grid.splits as i32;
                let mut bld = Launch::new(&stream, &func);
                bld.arg(&q).arg(&k).arg(&v).arg(&out);
                grid.part_arg(&mut bld).arg(&splits);
                match &slots {
                    Some(slots) => bld.arg(slots),
                    None => bld.arg(&0u64), // every row's `s` keys
                };
                let ints = [nh, nkv, s, d].map(|n| n as i32);
                for n in &ints {
                    bld.arg(n);
                }
                for n in &strides {
                    bld.arg(n);
                }
                bld.arg(&self.scale);
                grid.launch(bld, dev, &out)?;
                return Ok(out);
            }
            let root = match self.slots {
                Some(_) => "lmgen_decode_attention_at",
                None => "lmgen_decode_attention",
            };
            let (stream, func) = crate::cuda::func::<T>(dev, root)?;
            // Long caches (all `s` slots of the buffer with `slots`) split across blocks.
            let splits = splits(s, b * nh);
            let chunk = s.div_ceil(splits);
            let part = match splits {
                1 => None,
                _ => Some(unsafe { dev.alloc::<f32>(b * nh * splits * (d + 2))? }),
            };
            let cfg = LaunchConfig {
                grid_dim: (nh as u32, b as u32, splits as u32),
                block_dim: (THREADS as u32, 1, 1),
                shared_mem_bytes: shared_bytes(d, chunk, std::mem::size_of::<T>()),
            };
            let ints: Vec<i32> = match self.slots {
                Some(_) => [nh, nkv, d].map(|n| n as i32).to_vec(),
                None => [nh, nkv, s, d].map(|n| n as i32).to_vec(),
            };
            let chunk = chunk as i32;
            let mut bld = Launch::new(&stream, &func);
            bld.arg(&q).arg(&k).arg(&v).arg(&out);
            match &part {
                Some(part) => bld.arg(part),
                None => bld.arg(&0u64), // the null pointer: one pass
            };
            bld.arg(&chunk);
            if let Some(slots) = &slots {
                bld.arg(slots);
            }
            for n in &ints {
                bld.arg(n);
            }
            for n in &strides {
                bld.arg(n);
            }
            bld.arg(&self.scale);
            bld.dependent();
            unsafe { bld.launch(cfg) }.w()?;
            if let Some(part) = &part {
                combine(dev, part, &out, b * nh, splits, d)?;
            }
            Ok(out)
        }
    }

    /// A grouped kernel's launch for `rows` rows (batch rows or sequences) of `nh` query heads
    /// over `nkv` key/value heads of size `d`, `len` keys at most a row: its grid (key/value head
    /// blocks, rows, splits), and the parts buffer the splits write where there are several.
    pub(in crate::cuda) struct GroupedGrid {
        pub splits: usize,
        part: Option<CudaSlice<f32>>,
        cfg: LaunchConfig,
        rows: usize,
        d: usize,
    }

    impl GroupedGrid {
        pub fn new(
            dev: &CudaDevice,
            nh: usize,
            nkv: usize,
            rows: usize,
            len: usize,
            d: usize,
        ) -> candle_core::Result<Self> {
            let head_blocks = nkv * (nh / nkv).div_ceil(GROUP_HEADS);
            let splits = grouped_splits(head_blocks, rows, len);
            let part = match splits {
                1 => None,
                _ => Some(unsafe { dev.alloc::<f32>(rows * nh * splits * (d + 2))? }),
            };
            let cfg = LaunchConfig {
                grid_dim: (head_blocks as u32, rows as u32, splits as u32),
                block_dim: (THREADS as u32, 1, 1),
                shared_mem_bytes: grouped_shared_bytes(d),
            };
            let rows = rows * nh;
            Ok(Self {
                splits,
                part,
                cfg,
                rows,
                d,
            })
        }

        /// The kernel's `part` argument: the buffer, or the null pointer (one split writes the
        /// output itself).
        pub fn part_arg<'a, 'b>(&'a self, bld: &'b mut Launch<'a>) -> &'b mut Launch<'a> {
            match &self.part {
                Some(part) => bld.arg(part),
                None => bld.arg(&0u64),
            }
        }

        /// Launches the kernel `bld` holds as a dependent, then the splits' sum into `out`.
        pub fn launch<T: DeviceRepr + WithDType>(
            &self,
            mut bld: Launch<'_>,
            dev: &CudaDevice,
            out: &CudaSlice<T>,
        ) -> candle_core::Result<()> {
            bld.dependent();
            unsafe { bld.launch(self.cfg) }.w()?;
            match &self.part {
                Some(part) => combine(dev, part, out, self.rows, self.splits, self.d),
                None => Ok(()),
            }
        }
    }

    /// `attention_combine`: the `splits` parts of each of `rows` outputs (`part` `[rows,
    /// splits, d + 2]`) added up into `out` `[rows, d]`.
    pub(in crate::cuda) fn combine<T: DeviceRepr + WithDType>(
        dev: &CudaDevice,
        part: &CudaSlice<f32>,
        out: &CudaSlice<T>,
        rows: usize,
        splits: usize,
        d: usize,
    ) -> candle_core::Result<()> {
        let (stream, func) = crate::cuda::func::<T>(dev, "lmgen_attention_combine")?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (splits, d) = (splits as i32, d as i32);
        let mut bld = Launch::new(&stream, &func);
        bld.arg(part).arg(out).arg(&splits).arg(&d);
        bld.dependent();
        unsafe { bld.launch(cfg) }.w()?;
        Ok(())
    }

    cuda_op3!(
        DecodeAttention,
        "lmgen-decode-attention",
        "decode_attention",
        |_op, lq| lq.shape().clone()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grouped kernel's splits give ~2 blocks an SM and never more than the tiles of the
    /// longest sequence; its shared memory stays under the 48 KiB of a launch that does not opt
    /// in for every head size it takes, and it leaves head sizes whose rows do not split evenly
    /// across a warp to the kernel with a block per query head.
    #[test]
    fn grouped_kernel_splits_and_shared_memory() {
        assert_eq!(grouped_splits(2, 1, 8192), 32); // one sequence: a tile a block
        assert_eq!(grouped_splits(2, 1, 300), 2);
        assert_eq!(grouped_splits(2, 64, 8192), 3); // a 64-sequence step fills the GPU already
        assert_eq!(grouped_splits(8, 64, 8192), 1);
        assert_eq!(grouped_splits(2, 3, 91), 1); // short sequences: the output directly
        for d in [64, 80, 96, 128, 256] {
            for elem in [2, 4] {
                if grouped_applies(d, elem, 64, 2) {
                    assert!(grouped_shared_bytes(d) as usize + 3 * 4 * GROUP_HEADS <= 48 * 1024);
                }
            }
        }
        let fits = |d, elem| grouped_applies(d, elem, 64, 2);
        assert!(fits(64, 2) && fits(128, 2) && fits(128, 4));
        assert!(!fits(96, 2) && !fits(80, 2) && !fits(256, 2));
        // Batch 1 keeps a block per query head; 16 rows over 2 key/value heads take the groups.
        assert!(!grouped_applies(64, 2, 1, 2) && grouped_applies(64, 2, 16, 2));
    }

    #[test]
    fn long_caches_split_into_blocks_that_fit_shared_memory() {
        assert_eq!(splits(128, 14), 1); // short: one pass
        assert_eq!(splits(512, 14), 1);
        assert_eq!(splits(2048, 14), 4); // 512 keys a block
        assert_eq!(splits(8192, 14), 16);
        assert_eq!(splits(8192, 32), 9); // ~2 blocks an SM
        assert_eq!(splits(8192, 64 * 32), 1); // a batch fills the GPU already
        for s in [1, 100, 4095, 8193, 40_000, MAX_KEYS] {
            for rows in [1, 14, 32, 2048] {
                let n = splits(s, rows);
                assert!(
                    s.div_ceil(n) <= BLOCK_KEYS,
                    "{s} keys, {rows} rows: {n} splits"
                );
                assert!(shared_bytes(512, s.div_ceil(n), 2) <= 48 * 1024);
            }
        }
    }
}
