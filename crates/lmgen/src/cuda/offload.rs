//! The offloaded cache's keys and values on a GPU model: kept in page-locked host memory, and
//! each layer's copied to the device on a second stream while the layer before it computes
//! (transformers' `prefetch` of the next layer on a side stream).
//!
//! Per layer, the host holds `[b, kv_heads, capacity, d]` keys and values (capacity doubling as
//! tokens come, or fixed for `offloaded_static`). In a step, layer `i`:
//! 1. waits for its past `[b, kv_heads, len, d]` to reach the device (queued while layer `i - 1`
//!    ran; copied there and then when nothing was queued: the first layer of the second step, or
//!    after a crop or a change of rows);
//! 2. appends the new keys and values on the device (the attention gets
//!    `[b, kv_heads, len + t, d]`) and queues their copy into the host rows after `len`, on the
//!    model's stream, without waiting;
//! 3. queues the copy of the next layer's past on the side stream, after everything the model's
//!    stream has queued (that layer's host rows, the buffers it is copied into). The last layer
//!    queues the first layer of the next step.
//!
//! So the host never waits for the device in a step, and the device holds the keys and values of
//! at most three layers (the one attending, the one arriving, the one being freed) instead of
//! all of them. Nothing else touches the host buffers while copies may be in flight: a buffer
//! that grows, a crop or a change of rows first waits for both streams.

use candle_core::Tensor;

use crate::error::Result;

/// Keys and values of every layer in page-locked host memory, for a model on a GPU.
pub struct HostKv(imp::HostKv);

impl std::fmt::Debug for HostKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKv")
            .field("seq_len", &self.seq_len())
            .finish_non_exhaustive()
    }
}

impl HostKv {
    /// A store for keys and values like `k` (`[b, kv_heads, t, d]`), or `None` where `k` is not
    /// on a GPU (or the build has no CUDA). `fixed`: every layer holds exactly that many tokens
    /// per row (`offloaded_static`); an append past it is an error.
    pub fn for_tensor(k: &Tensor, fixed: Option<usize>) -> Result<Option<Self>> {
        Ok(imp::HostKv::new(k, fixed)?.map(Self))
    }

    /// [`crate::cache::KvCache::update`]: `k`, `v` `[b, kv_heads, t, d]` appended to `layer`; all
    /// of its keys and values on the device, `[b, kv_heads, past + t, d]`.
    pub fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.0.update(layer, k, v)
    }

    /// Tokens held (the first layer's).
    pub fn seq_len(&self) -> usize {
        self.0.seq_len()
    }

    /// Keeps the first `len` tokens of every layer.
    pub fn crop(&mut self, len: usize) -> Result<()> {
        self.0.crop(len)
    }

    /// Batch rows: row `i` becomes old row `rows[i]` (reorder, repeat, select).
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        self.0.select_rows(rows)
    }

    /// Rows of the batch (0 before the first update).
    pub fn batch(&self) -> usize {
        self.0.batch()
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    /// Never built without CUDA.
    pub enum HostKv {}

    impl HostKv {
        pub fn new(_: &Tensor, _: Option<usize>) -> Result<Option<Self>> {
            Ok(None)
        }
        pub fn update(&mut self, _: usize, _: &Tensor, _: &Tensor) -> Result<(Tensor, Tensor)> {
            match *self {}
        }
        pub fn seq_len(&self) -> usize {
            match *self {}
        }
        pub fn crop(&mut self, _: usize) -> Result<()> {
            match *self {}
        }
        pub fn select_rows(&mut self, _: &[usize]) -> Result<()> {
            match *self {}
        }
        pub fn batch(&self) -> usize {
            match *self {}
        }
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use std::sync::Arc;

    use candle_core::cuda_backend::cudarc::driver::{
        sys, CudaEvent, CudaStream, DevicePtr, PinnedHostSlice,
    };
    use candle_core::cuda_backend::CudaStorageSlice;
    use candle_core::{CudaDevice, DType, Device, Storage};

    use super::*;
    use crate::error::Error;

    /// Initial capacity in tokens, as the dynamic cache's.
    const MIN_CAPACITY: usize = 64;

    /// Page-locked bytes and their address (taken once: cudarc's accessors wait on the buffer's
    /// event, which the raw copies here never record).
    struct Pinned {
        _buf: PinnedHostSlice<u8>,
        addr: usize,
    }

    impl Pinned {
        fn new(stream: &CudaStream, bytes: usize) -> Result<Self> {
            // Cached memory (not write-combined): the host copies rows within it.
            let mut buf = unsafe {
                stream
                    .context()
                    .alloc_pinned_with_flags::<u8>(bytes.max(1), 0)
            }
            .map_err(candle_core::Error::wrap)?;
            let addr = buf.as_mut_ptr().map_err(candle_core::Error::wrap)? as usize;
            Ok(Self { _buf: buf, addr })
        }

        fn at(&self, offset: usize) -> *mut u8 {
            (self.addr + offset) as *mut u8
        }
    }

    /// One layer on the host: `[b, kv_heads, cap, d]` keys and values, `len` tokens held.
    struct Layer {
        k: Pinned,
        v: Pinned,
        b: usize,
        h: usize,
        d: usize,
        dtype: DType,
        cap: usize,
        len: usize,
    }

    impl Layer {
        /// Bytes of one head's token.
        fn row(&self) -> usize {
            self.d * self.dtype.size_in_bytes()
        }
    }

    /// A layer's past on its way to the device.
    struct Prefetch {
        layer: usize,
        len: usize,
        k: Tensor,
        v: Tensor,
        /// Recorded on the side stream after the copies.
        done: CudaEvent,
    }

    pub struct HostKv {
        device: Device,
        /// The model's stream (candle's).
        stream: Arc<CudaStream>,
        /// Where the next layer's past is copied.
        side: Arc<CudaStream>,
        layers: Vec<Option<Layer>>,
        fixed: Option<usize>,
        /// Whether a step went through every layer (so the next layer of each is known).
        wrapped: bool,
        prefetch: Option<Prefetch>,
    }

    /// One end of a copy: host or device memory, and its pitch (bytes between rows).
    enum End {
        Host(*mut u8, usize),
        Device(sys::CUdeviceptr, usize),
    }

    impl End {
        /// The driver's memory type, host and device addresses (the one not used null) and
        /// pitch of this end.
        fn parts(self) -> (sys::CUmemorytype, *mut u8, sys::CUdeviceptr, usize) {
            match self {
                End::Host(ptr, pitch) => (sys::CUmemorytype::CU_MEMORYTYPE_HOST, ptr, 0, pitch),
                End::Device(ptr, pitch) => (
                    sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
                    std::ptr::null_mut(),
                    ptr,
                    pitch,
                ),
            }
        }
    }

    /// `height` rows of `width` bytes from `src` to `dst`, queued on `stream`.
    fn copy_rows(
        stream: &CudaStream,
        src: End,
        dst: End,
        width: usize,
        height: usize,
    ) -> Result<()> {
        if width == 0 || height == 0 {
            return Ok(());
        }
        let (src_type, src_host, src_device, src_pitch) = src.parts();
        let (dst_type, dst_host, dst_device, dst_pitch) = dst.parts();
        let p = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: src_type,
            srcHost: src_host as *const std::ffi::c_void,
            srcDevice: src_device,
            srcArray: std::ptr::null_mut(),
            srcPitch: src_pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: dst_type,
            dstHost: dst_host as *mut std::ffi::c_void,
            dstDevice: dst_device,
            dstArray: std::ptr::null_mut(),
            dstPitch: dst_pitch,
            WidthInBytes: width,
            Height: height,
        };
        stream
            .context()
            .bind_to_thread()
            .map_err(candle_core::Error::wrap)?;
        // SAFETY: both ends hold `height` rows of `width` bytes at their pitch (the callers size
        // them), and stay allocated until the copy is done (host buffers outlive every copy:
        // both streams are synchronized before one is freed; device tensors are freed in stream
        // order after the copy, or waited for first).
        unsafe { sys::cuMemcpy2DAsync_v2(&p, stream.cu_stream()) }
            .result()
            .map_err(candle_core::Error::wrap)?;
        Ok(())
    }

    /// The device address of `t`'s first element (a contiguous f32, f16 or bf16 CUDA tensor).
    fn device_ptr(t: &Tensor, stream: &CudaStream) -> Result<sys::CUdeviceptr> {
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(c) = &*storage else {
            return Err(Error::unsupported(
                "the offloaded cache's GPU path got a CPU tensor",
            ));
        };
        let base = match &c.slice {
            CudaStorageSlice::F32(s) => s.device_ptr(stream).0,
            CudaStorageSlice::F16(s) => s.device_ptr(stream).0,
            CudaStorageSlice::BF16(s) => s.device_ptr(stream).0,
            _ => {
                return Err(Error::unsupported(format!(
                    "the offloaded cache holds f32, f16 or bf16 keys and values, not {:?}",
                    t.dtype()
                )))
            }
        };
        Ok(base + (layout.start_offset() * t.dtype().size_in_bytes()) as u64)
    }

    impl HostKv {
        pub fn new(k: &Tensor, fixed: Option<usize>) -> Result<Option<Self>> {
            let Device::Cuda(cuda) = k.device() else {
                return Ok(None);
            };
            let stream = CudaDevice::cuda_stream(cuda);
            let side = stream.fork().map_err(candle_core::Error::wrap)?;
            Ok(Some(Self {
                device: k.device().clone(),
                stream,
                side,
                layers: Vec::new(),
                fixed,
                wrapped: false,
                prefetch: None,
            }))
        }

        pub fn seq_len(&self) -> usize {
            self.layers.iter().flatten().next().map_or(0, |l| l.len)
        }

        pub fn batch(&self) -> usize {
            self.layers.iter().flatten().next().map_or(0, |l| l.b)
        }

        pub fn update(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
            let (b, h, t, d) = k.dims4()?;
            let dtype = k.dtype();
            let (k, v) = (k.contiguous()?, v.contiguous()?);
            if self.layers.len() <= layer {
                self.layers.resize_with(layer + 1, || None);
            } else if self.layers[layer].is_some() {
                self.wrapped = true;
            }
            let len = match &self.layers[layer] {
                Some(e) if (e.b, e.h, e.d, e.dtype) != (b, h, d, dtype) => {
                    return Err(Error::input(format!(
                        "layer {layer} of the offloaded cache holds [{}, {}, _, {}] {:?} keys; \
                         this step gives {:?} {dtype:?}",
                        e.b,
                        e.h,
                        e.d,
                        e.dtype,
                        k.dims()
                    )))
                }
                Some(e) => e.len,
                None => {
                    let cap = match self.fixed {
                        Some(fixed) => fixed,
                        None => t.max(MIN_CAPACITY),
                    };
                    let bytes = b * h * cap * d * dtype.size_in_bytes();
                    self.layers[layer] = Some(Layer {
                        k: Pinned::new(&self.stream, bytes)?,
                        v: Pinned::new(&self.stream, bytes)?,
                        b,
                        h,
                        d,
                        dtype,
                        cap,
                        len: 0,
                    });
                    0
                }
            };
            self.make_room(layer, len + t)?;
            let past = self.past(layer, len)?;
            let (all_k, all_v) = match past {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k.clone(), v.clone()),
            };
            // The new tokens into the host rows after `len`, queued behind the forward.
            let e = self.layers[layer].as_mut().expect("made above");
            let row = e.row();
            for (src, dst) in [(&k, &e.k), (&v, &e.v)] {
                copy_rows(
                    &self.stream,
                    End::Device(device_ptr(src, &self.stream)?, t * row),
                    End::Host(dst.at(len * row), e.cap * row),
                    t * row,
                    b * h,
                )?;
            }
            e.len += t;
            if self.wrapped {
                self.prefetch_after(layer)?;
            }
            Ok((all_k, all_v))
        }

        /// Grows `layer`'s buffers (doubling) to hold `needed` tokens, after both streams are
        /// done with them.
        fn make_room(&mut self, layer: usize, needed: usize) -> Result<()> {
            let e = self.layers[layer].as_ref().expect("present");
            if needed <= e.cap {
                return Ok(());
            }
            if let Some(fixed) = self.fixed {
                return Err(crate::cache::dynamic::static_full(fixed, needed));
            }
            self.quiesce()?;
            let e = self.layers[layer].as_mut().expect("present");
            let cap = (2 * e.cap).max(needed);
            let row = e.row();
            let bytes = e.b * e.h * cap * row;
            let (k, v) = (
                Pinned::new(&self.stream, bytes)?,
                Pinned::new(&self.stream, bytes)?,
            );
            for (old, new) in [(&e.k, &k), (&e.v, &v)] {
                for r in 0..e.b * e.h {
                    // SAFETY: row r of both buffers holds at least `len` tokens; no copy is in
                    // flight (quiesce above).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            old.at(r * e.cap * row),
                            new.at(r * cap * row),
                            e.len * row,
                        )
                    };
                }
            }
            (e.k, e.v, e.cap) = (k, v, cap);
            Ok(())
        }

        /// `layer`'s first `len` tokens on the device: the prefetched copy (waited for on the
        /// model's stream), else copied now in the model's stream order; `None` for no tokens.
        fn past(&mut self, layer: usize, len: usize) -> Result<Option<(Tensor, Tensor)>> {
            if let Some(p) = self.prefetch.take() {
                // Whether used or dropped, its copies finish before the model's stream reads or
                // frees its buffers.
                self.stream
                    .wait(&p.done)
                    .map_err(candle_core::Error::wrap)?;
                if p.layer == layer && p.len == len {
                    return Ok(Some((p.k, p.v)));
                }
            }
            if len == 0 {
                return Ok(None);
            }
            Ok(Some(self.upload(layer, len, false)?))
        }

        /// Queues the copy of `layer`'s first `len` tokens to new device buffers, on the side
        /// stream (after everything the model's stream queued so far, the buffers' allocation
        /// included) or on the model's stream.
        fn upload(&self, layer: usize, len: usize, on_side: bool) -> Result<(Tensor, Tensor)> {
            let e = self.layers[layer].as_ref().expect("present");
            let shape = (e.b, e.h, len, e.d);
            let k = Tensor::zeros(shape, e.dtype, &self.device)?;
            let v = Tensor::zeros(shape, e.dtype, &self.device)?;
            let stream = if on_side {
                let ready = self
                    .stream
                    .record_event(None)
                    .map_err(candle_core::Error::wrap)?;
                self.side.wait(&ready).map_err(candle_core::Error::wrap)?;
                &self.side
            } else {
                &self.stream
            };
            let row = e.row();
            for (src, dst) in [(&e.k, &k), (&e.v, &v)] {
                copy_rows(
                    stream,
                    End::Host(src.at(0), e.cap * row),
                    End::Device(device_ptr(dst, &self.stream)?, len * row),
                    len * row,
                    e.b * e.h,
                )?;
            }
            Ok((k, v))
        }

        /// Queues the past of the layer after `layer` (the first layer after the last) on the
        /// side stream.
        fn prefetch_after(&mut self, layer: usize) -> Result<()> {
            let held = |j: &usize| self.layers[*j].as_ref().is_some_and(|e| e.len > 0);
            let next = (layer + 1..self.layers.len())
                .find(held)
                .or_else(|| (0..=layer).find(held));
            let Some(next) = next else {
                return Ok(());
            };
            let len = self.layers[next].as_ref().expect("held").len;
            let (k, v) = self.upload(next, len, true)?;
            let done = self
                .side
                .record_event(None)
                .map_err(candle_core::Error::wrap)?;
            self.prefetch = Some(Prefetch {
                layer: next,
                len,
                k,
                v,
                done,
            });
            Ok(())
        }

        /// Drops any prefetch and waits for both streams: no copy touches the host buffers.
        fn quiesce(&mut self) -> Result<()> {
            if let Some(p) = self.prefetch.take() {
                self.stream
                    .wait(&p.done)
                    .map_err(candle_core::Error::wrap)?;
            }
            self.stream
                .synchronize()
                .map_err(candle_core::Error::wrap)?;
            self.side.synchronize().map_err(candle_core::Error::wrap)?;
            Ok(())
        }

        pub fn crop(&mut self, len: usize) -> Result<()> {
            self.quiesce()?;
            for e in self.layers.iter_mut().flatten() {
                e.len = e.len.min(len);
            }
            Ok(())
        }

        pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
            self.quiesce()?;
            for e in self.layers.iter_mut().flatten() {
                if let Some(&bad) = rows.iter().find(|&&r| r >= e.b) {
                    return Err(Error::input(format!(
                        "row {bad} selected from a cache of {} rows",
                        e.b
                    )));
                }
                let row = e.row();
                let bytes = rows.len() * e.h * e.cap * row;
                let (k, v) = (
                    Pinned::new(&self.stream, bytes)?,
                    Pinned::new(&self.stream, bytes)?,
                );
                for (old, new) in [(&e.k, &k), (&e.v, &v)] {
                    for (i, &r) in rows.iter().enumerate() {
                        for head in 0..e.h {
                            // SAFETY: both rows hold `cap` tokens; no copy is in flight.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    old.at((r * e.h + head) * e.cap * row),
                                    new.at((i * e.h + head) * e.cap * row),
                                    e.len * row,
                                )
                            };
                        }
                    }
                }
                (e.k, e.v, e.b) = (k, v, rows.len());
            }
            Ok(())
        }
    }

    impl Drop for HostKv {
        fn drop(&mut self) {
            // The host buffers are freed after this: no copy may still be using them.
            let _ = self.quiesce();
        }
    }
}
