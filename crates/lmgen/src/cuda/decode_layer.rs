//! One decoder layer of a batch-1 decode step in one launch (`kernels/decode_layer.cu`): the
//! residual add and RMSNorm, q/k/v with its bias, the heads' rotation, the cache write, the
//! attention, o_proj, the second add and RMSNorm, gate/up with SwiGLU and down, for the layers
//! of Llama's shape (pre-norms only, dense gated MLP, no per-head norms, no residual multiplier).
//!
//! A small model's decode step is ~9 short launches a layer, each bound by its latency rather than
//! its bytes (BENCHMARKS.md: a Qwen2.5-0.5B layer's kernels take ~37 us for ~10 us of weights at
//! the copy rate). Here one grid of resident blocks runs the phases in turn with a grid-wide
//! barrier between them, each warp loading its next weight row while it waits. Every product
//! sums in the order of the kernels it replaces ([`super::gemv`], [`super::gemv_swiglu`]) and
//! rounds at the same places; the attention always splits its keys across the grid's blocks and
//! combines the splits as [`super::decode_attention_at`] does for long caches.
//!
//! On by default for layers whose weights take at most [`AUTO_MAX_LAYER_BYTES`]
//! ([`LayerMode::Auto`]). On an H100 it gives transformers' tokens on every golden case (f32,
//! with the default and with it on everywhere) and passes its kernel checks; batch-1 bf16 decode
//! against the separate launches (BENCHMARKS.md, two rounds alternated) is +1.2% and +1.7% on the
//! Qwen2.5-0.5B shape (29 MB of weights a layer) and +4.3% and +5.8% on Llama-3.2-1B (122 MB),
//! but -3.6% on Llama-3.2-3B (201 MB) and -2.5% on Llama-3.1-8B (436 MB), whose products the
//! separate kernels stream faster. `LMGEN_CUDA_LAYER=0` (or `off`) turns it off, `1` (or `coop`)
//! on for every size with the cooperative attribute, `plain` without it (the grid still fits the
//! GPU at once), `pdl` as a programmatic dependent of the kernel before.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// A layer's weights, as [`crate::models::decoder`] hands them over.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    /// The attention's input RMSNorm: weight `[H]` and eps.
    pub attn_norm: (&'a Tensor, f32),
    /// The fused q/k/v projection `[(nh + 2 nkv) d, H]` and its bias.
    pub qkv: (&'a Tensor, Option<&'a Tensor>),
    /// Query heads, key/value heads, head size.
    pub heads: (usize, usize, usize),
    /// The attention's score scale.
    pub scale: f64,
    /// `o_proj` `[H, nh d]` and its bias.
    pub o_proj: (&'a Tensor, Option<&'a Tensor>),
    /// The MLP's input RMSNorm.
    pub mlp_norm: (&'a Tensor, f32),
    /// The fused gate/up projection `[2 inter, H]` (gate rows first) and its bias.
    pub gate_up: (&'a Tensor, Option<&'a Tensor>),
    /// `down_proj` `[H, inter]` and its bias.
    pub down: (&'a Tensor, Option<&'a Tensor>),
}

/// A step's inputs to one layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerStep<'a> {
    /// The residual stream `[1, 1, H]`.
    pub x: &'a Tensor,
    /// The previous layer's MLP output `[1, 1, H]`, not yet added to `x` (`None` for the first).
    pub pending: Option<&'a Tensor>,
    /// `(cos, sin)`, each `[1, 1, r / 2]`: rotate_half RoPE over each head's first `r` features.
    pub rope: Option<(&'a Tensor, &'a Tensor)>,
    /// `[1]` u32: the slot the token's keys and values go to, read on the device.
    pub slots: &'a Tensor,
    /// `[1]` u32, zero: the grid's barrier count (one per layer and step, see [`barriers`]).
    pub barrier: &'a Tensor,
}

/// The layer kernel's modes (`LMGEN_CUDA_LAYER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerMode {
    /// Every layer as separate launches.
    Off,
    /// Launched with the cooperative attribute: the driver refuses a grid that cannot all be
    /// resident at once instead of letting its barrier wait forever.
    Cooperative,
    /// A plain launch of a grid sized to fit the GPU at once.
    Plain,
    /// A plain launch as a programmatic dependent of the kernel before.
    Dependent,
    /// [`LayerMode::Cooperative`] for layers whose weights take at most
    /// [`AUTO_MAX_LAYER_BYTES`], the separate launches for larger ones (the default).
    Auto,
}

/// The largest layer (its q/k/v, o, gate/up and down weights, in bytes) [`LayerMode::Auto`]
/// runs in one launch: between the Llama-3.2-1B shape's 122 MB (faster in one launch) and
/// Llama-3.2-3B's 201 MB (slower), see the module's doc.
pub const AUTO_MAX_LAYER_BYTES: usize = 128 << 20;

fn mode_cell() -> &'static std::sync::atomic::AtomicU8 {
    static MODE: std::sync::OnceLock<std::sync::atomic::AtomicU8> = std::sync::OnceLock::new();
    MODE.get_or_init(|| {
        let mode = match std::env::var("LMGEN_CUDA_LAYER").as_deref() {
            Ok("1" | "coop") => LayerMode::Cooperative,
            Ok("plain") => LayerMode::Plain,
            Ok("pdl") => LayerMode::Dependent,
            Ok("0" | "off") => LayerMode::Off,
            _ => LayerMode::Auto,
        };
        std::sync::atomic::AtomicU8::new(mode as u8)
    })
}

impl LayerMode {
    const ALL: [LayerMode; 5] = [
        LayerMode::Off,
        LayerMode::Cooperative,
        LayerMode::Plain,
        LayerMode::Dependent,
        LayerMode::Auto,
    ];
}

/// Sets the layer kernel's mode for the whole process; returns the mode before.
pub fn set_layer_mode(mode: LayerMode) -> LayerMode {
    let before = mode_cell().swap(mode as u8, std::sync::atomic::Ordering::Relaxed);
    LayerMode::ALL[before as usize]
}

/// The layer kernel's mode now.
pub fn layer_mode() -> LayerMode {
    LayerMode::ALL[mode_cell().load(std::sync::atomic::Ordering::Relaxed) as usize]
}

/// Whether a step of `rows` rows of `x`'s dtype and device may take the layer kernel: one row,
/// a CUDA tensor of f32/f16/bf16, the kernel on. The model checks this before it asks the cache
/// for its buffers and builds [`barriers`].
pub fn layer_applies(x: &Tensor, rows: usize) -> bool {
    rows == 1 && super::applies(x) && layer_mode() != LayerMode::Off
}

/// Whether the layer kernel's mode takes a layer of these weights: any but
/// [`LayerMode::Auto`] does (when on), `Auto` where its products' weights take at most
/// [`AUTO_MAX_LAYER_BYTES`].
pub fn layer_wanted(w: &LayerWeights<'_>) -> bool {
    let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
    match layer_mode() {
        LayerMode::Off => false,
        LayerMode::Auto => {
            bytes(w.qkv.0) + bytes(w.o_proj.0) + bytes(w.gate_up.0) + bytes(w.down.0)
                <= AUTO_MAX_LAYER_BYTES
        }
        _ => true,
    }
}

/// `layers` zeroed barrier counts `[layers]` u32 on `x`'s device, one a layer for a step.
pub fn barriers(x: &Tensor, layers: usize) -> Result<Tensor> {
    Ok(Tensor::zeros(layers, DType::U32, x.device())?)
}

/// Runs the layer: writes the token's keys and values into `k_cache` and `v_cache` (`[1, nkv,
/// cap, d]`, contiguous) at `slots[0]` and returns `(x + pending + attention, mlp)`, each
/// `[1, 1, H]`: the residual stream after the attention and the MLP's output, not yet added (the
/// next layer adds it, as [`crate::models::decoder`]'s `pending`). `None` where the kernel does
/// not apply (see [`LayerWeights`]; shapes, dtypes, devices, 16-byte rows, the shared memory),
/// before anything is written.
pub fn decode_layer(
    w: &LayerWeights<'_>,
    step: &LayerStep<'_>,
    k_cache: &Tensor,
    v_cache: &Tensor,
) -> Result<Option<(Tensor, Tensor)>> {
    let Some(shape) = LayerShape::of(w, step, k_cache, v_cache) else {
        return Ok(None);
    };
    imp::run(w, step, (k_cache, v_cache), shape)
}

/// The sizes a launch needs, checked.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct LayerShape {
    hidden: usize,
    heads: (usize, usize, usize),
    /// Rotated features a head.
    rotated: usize,
    inter: usize,
    cap: usize,
}

impl LayerShape {
    fn of(w: &LayerWeights<'_>, step: &LayerStep<'_>, k: &Tensor, v: &Tensor) -> Option<Self> {
        let x = step.x;
        if !layer_applies(x, x.dims3().ok()?.0) {
            return None;
        }
        let (nh, nkv, d) = w.heads;
        let hidden = x.dims3().ok()?.2;
        let inter = w.gate_up.0.dim(0).ok()? / 2;
        let elem = x.dtype().size_in_bytes();
        let whole = |n: usize| (n * elem).is_multiple_of(16);
        let like = |t: &Tensor| super::rope_kv_write::like(x, t);
        let vector = |t: &Tensor, n: usize| like(t) && t.dims1().ok() == Some(n);
        let matrix = |(t, bias): (&Tensor, Option<&Tensor>), rows: usize, cols: usize| {
            like(t) && t.dims2().ok() == Some((rows, cols)) && bias.is_none_or(|b| vector(b, rows))
        };
        let cap = k.dim(2).ok()?;
        if !layer_wanted(w) {
            return None;
        }
        let rotated = match step.rope {
            Some((cos, sin)) => {
                let half = cos.dim(2).ok()?;
                let fits = cos.dims3().ok() == Some((1, 1, half))
                    && sin.dims() == cos.dims()
                    && like(cos)
                    && like(sin)
                    && half > 0
                    && 2 * half <= d;
                fits.then_some(2 * half)?
            }
            None => d,
        };
        let u32_one = |t: &Tensor| {
            t.dtype() == DType::U32
                && t.dims1().ok() == Some(1)
                && t.is_contiguous()
                && t.device().same_device(x.device())
        };
        let fits = x.dims3().ok() == Some((1, 1, hidden))
            && x.is_contiguous()
            && step.pending.is_none_or(|p| like(p) && p.dims() == x.dims())
            && nkv > 0
            && nh.is_multiple_of(nkv)
            && d > 0
            && d.is_multiple_of(2)
            && inter > 0
            && whole(hidden)
            && whole(nh * d)
            && whole(inter)
            && vector(w.attn_norm.0, hidden)
            && vector(w.mlp_norm.0, hidden)
            && matrix(w.qkv, (nh + 2 * nkv) * d, hidden)
            && matrix(w.o_proj, hidden, nh * d)
            && matrix(w.gate_up, 2 * inter, hidden)
            && matrix(w.down, hidden, inter)
            && like(k)
            && like(v)
            && k.dims4().ok() == Some((1, nkv, cap, d))
            && v.dims() == k.dims()
            && (1..=super::DECODE_MAX_KEYS).contains(&cap)
            && u32_one(step.slots)
            && u32_one(step.barrier);
        fits.then_some(Self {
            hidden,
            heads: w.heads,
            rotated,
            inter,
            cap,
        })
    }
}

/// Threads a block (`LAYER_THREADS` in `kernels/decode_layer.cu`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const THREADS: usize = 512;

/// The kernel's dynamic shared memory for `splits` shares of the keys a head: the stage (the
/// largest product input row; one share's attention: the query, the scores and each thread
/// group's partial sums, as `attend_rows` lays them out; or every share, f32, beside the
/// combined attention row) then the residual row, each rounded up to 16 bytes. Returns
/// `(stage bytes, total bytes)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn shared_bytes(shape: &LayerShape, elem: usize, splits: usize) -> (usize, usize) {
    let (nh, _, d) = shape.heads;
    let row = shape.hidden.max(nh * d).max(shape.inter) * elem;
    let attention =
        super::decode_attention::attend_shared_bytes(d, shape.cap.div_ceil(splits), elem, THREADS);
    let combine = (4 * nh * splits * (d + 2)).next_multiple_of(16) + nh * d * elem;
    let stage = row.max(attention).max(combine).next_multiple_of(16);
    (stage, stage + (shape.hidden * elem).next_multiple_of(16))
}

/// The grid barrier's arrival: a release fence and a reduction (1, the default), or a full
/// fence and an atomic add (0: `LMGEN_CUDA_LAYER_BARRIER=atomic`, a diagnosis).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn red_barrier() -> i32 {
    static RED: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *RED.get_or_init(|| {
        i32::from(std::env::var("LMGEN_CUDA_LAYER_BARRIER").map_or(true, |v| v != "atomic"))
    })
}

/// `LMGEN_CUDA_LAYER_TRACE=1`: each launch outside a graph capture (a decode call's first,
/// eager step) waits, then prints block 0's SM clocks between its phases to stderr (a
/// diagnosis: where a layer's time goes).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn trace_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LMGEN_CUDA_LAYER_TRACE").is_ok_and(|v| v == "1"))
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn run(
        _: &LayerWeights<'_>,
        _: &LayerStep<'_>,
        _: (&Tensor, &Tensor),
        _: LayerShape,
    ) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
}

#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::sys::{self, CUdevice_attribute};
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaDevice, Layout, Shape, WithDType};

    use super::*;
    use crate::cuda::flash_attention::imp::{allow_shared, max_shared};
    use crate::cuda::launch::Launch;
    use crate::cuda::{hold, Held, Module};

    pub fn run(
        w: &LayerWeights<'_>,
        step: &LayerStep<'_>,
        (k, v): (&Tensor, &Tensor),
        shape: LayerShape,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Ok(dev) = step.x.device().as_cuda_device() else {
            return Ok(None);
        };
        let elem = step.x.dtype().size_in_bytes();
        let Some(grid) = Grid::new(dev, step.x.dtype(), &shape, elem)? else {
            return Ok(None);
        };
        let own = |t: &Tensor| t.clone();
        let pair = |(t, b): (&Tensor, Option<&Tensor>)| (t.clone(), b.cloned());
        let op = DecodeLayer {
            pending: step.pending.map(own),
            norms: (own(w.attn_norm.0), own(w.mlp_norm.0)),
            eps: (w.attn_norm.1, w.mlp_norm.1),
            qkv: pair(w.qkv),
            rope: step.rope.map(|(c, s)| (own(c), own(s))),
            o_proj: pair(w.o_proj),
            gate_up: pair(w.gate_up),
            down: pair(w.down),
            caches: (own(k), own(v)),
            slots: own(step.slots),
            barrier: own(step.barrier),
            scale: w.scale as f32,
            shape,
            grid,
        };
        let out = step.x.apply_op1_no_bwd(&op)?; // [2, 1, 1, H]
        Ok(Some((out.get(0)?, out.get(1)?)))
    }

    /// The launch's grid: every block resident at once.
    #[derive(Debug, Clone, Copy)]
    struct Grid {
        blocks: usize,
        splits: usize,
        stage_bytes: usize,
        shared_bytes: usize,
    }

    impl Grid {
        /// As many blocks as the GPU holds at once with this shared memory (`None` if none fits):
        /// the keys of each query head split so that the heads' shares about fill the grid.
        fn new(
            dev: &CudaDevice,
            dtype: DType,
            shape: &LayerShape,
            elem: usize,
        ) -> Result<Option<Self>> {
            let sms = dev
                .cuda_stream()
                .context()
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .w()? as usize;
            // LMGEN_CUDA_LAYER_BLOCKS: fewer blocks (a diagnosis: the barriers' cost).
            let most = std::env::var("LMGEN_CUDA_LAYER_BLOCKS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            // Each query head's keys in about as many shares as the grid has blocks for it (a
            // block loops over the shares past the grid's).
            let splits = (sms.min(most) / shape.heads.0).max(1);
            let (stage_bytes, shared_bytes) = shared_bytes(shape, elem, splits);
            if shared_bytes > max_shared(dev)? {
                return Ok(None);
            }
            let func = match dtype {
                DType::F32 => launcher::<f32>(dev)?.1,
                DType::F16 => launcher::<half::f16>(dev)?.1,
                _ => launcher::<half::bf16>(dev)?.1,
            };
            if shared_bytes > 48 * 1024 {
                allow_shared(&func, shared_bytes)?;
            }
            let per_sm = func
                .occupancy_max_active_blocks_per_multiprocessor(THREADS as u32, shared_bytes, None)
                .w()? as usize;
            let blocks = (per_sm * sms).min(most);
            Ok((blocks > 0).then_some(Self {
                blocks,
                splits,
                stage_bytes,
                shared_bytes,
            }))
        }
    }

    fn launcher<T: WithDType>(dev: &CudaDevice) -> candle_core::Result<crate::cuda::Launcher> {
        crate::cuda::func_in::<T>(dev, "lmgen_decode_layer", Module::Layer)
    }

    /// The tensors the launch reads or writes besides `x`, held by the op.
    struct DecodeLayer {
        pending: Option<Tensor>,
        norms: (Tensor, Tensor),
        eps: (f32, f32),
        qkv: (Tensor, Option<Tensor>),
        rope: Option<(Tensor, Tensor)>,
        o_proj: (Tensor, Option<Tensor>),
        gate_up: (Tensor, Option<Tensor>),
        down: (Tensor, Option<Tensor>),
        caches: (Tensor, Tensor),
        slots: Tensor,
        barrier: Tensor,
        scale: f32,
        shape: LayerShape,
        grid: Grid,
    }

    /// For errors: what the launch needs of the tensors it holds.
    const WHAT: &str = "decode_layer (CUDA tensors)";

    fn held(t: &Option<Tensor>) -> Option<Held<'_>> {
        t.as_ref().map(hold)
    }

    fn opt_view<'a, T: CudaDType>(
        h: &'a Option<Held<'_>>,
    ) -> candle_core::Result<Option<CudaView<'a, T>>> {
        h.as_ref().map(|h| h.view::<T>(WHAT)).transpose()
    }

    impl DecodeLayer {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            x: &CudaSlice<T>,
            lx: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<(CudaSlice<T>, Shape)> {
            let LayerShape {
                hidden,
                heads: (nh, nkv, d),
                rotated,
                inter,
                cap,
            } = self.shape;
            let Grid {
                blocks,
                splits,
                stage_bytes,
                shared_bytes,
            } = self.grid;
            let x = x.slice(lx.start_offset()..);
            let out = unsafe { dev.alloc::<T>(2 * hidden)? };
            let q_buf = unsafe { dev.alloc::<T>(nh * d)? };
            let part = unsafe { dev.alloc::<f32>(nh * splits * (d + 2))? };
            let o_buf = unsafe { dev.alloc::<T>(hidden)? };
            let act = unsafe { dev.alloc::<T>(inter)? };
            let (pending, b_qkv, b_o) =
                (held(&self.pending), held(&self.qkv.1), held(&self.o_proj.1));
            let (b_gu, b_down) = (held(&self.gate_up.1), held(&self.down.1));
            let rope = self.rope.as_ref().map(|(c, s)| (hold(c), hold(s)));
            let (n1, n2) = (hold(&self.norms.0), hold(&self.norms.1));
            let (w_qkv, w_o) = (hold(&self.qkv.0), hold(&self.o_proj.0));
            let (w_gu, w_down) = (hold(&self.gate_up.0), hold(&self.down.0));
            let (k_cache, v_cache) = (hold(&self.caches.0), hold(&self.caches.1));
            let (slots, barrier) = (hold(&self.slots), hold(&self.barrier));
            let view = opt_view::<T>;
            let (pending, b_qkv, b_o, b_gu, b_down) = (
                view(&pending)?,
                view(&b_qkv)?,
                view(&b_o)?,
                view(&b_gu)?,
                view(&b_down)?,
            );
            let rope = match &rope {
                Some((c, s)) => Some((c.view::<T>(WHAT)?, s.view::<T>(WHAT)?)),
                None => None,
            };
            let (n1, n2) = (n1.view::<T>(WHAT)?, n2.view::<T>(WHAT)?);
            let (w_qkv, w_o) = (w_qkv.view::<T>(WHAT)?, w_o.view::<T>(WHAT)?);
            let (w_gu, w_down) = (w_gu.view::<T>(WHAT)?, w_down.view::<T>(WHAT)?);
            let (k_cache, v_cache) = (k_cache.view::<T>(WHAT)?, v_cache.view::<T>(WHAT)?);
            let (slots, barrier) = (slots.view::<u32>(WHAT)?, barrier.view::<u32>(WHAT)?);
            let (stream, func) = launcher::<T>(dev)?;
            let null = 0u64;
            let ints =
                [hidden, nh, nkv, d, rotated, inter, cap, splits, stage_bytes].map(|n| n as i32);
            let capturing = stream.capture_status().w()?
                != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
            let trace = match trace_on() && !capturing {
                true => Some(dev.alloc_zeros::<i64>(16)?),
                false => None,
            };
            let red = red_barrier();
            let mut bld = Launch::new(&stream, &func);
            bld.arg(&x);
            match &pending {
                Some(p) => bld.arg(p),
                None => bld.arg(&null), // the first layer: nothing to add
            };
            bld.arg(&n1)
                .arg(&n2)
                .arg(&self.eps.0)
                .arg(&self.eps.1)
                .arg(&w_qkv);
            match &b_qkv {
                Some(b) => bld.arg(b),
                None => bld.arg(&null),
            };
            match &rope {
                Some((c, s)) => bld.arg(c).arg(s),
                None => bld.arg(&null).arg(&null), // no rotation
            };
            bld.arg(&w_o);
            match &b_o {
                Some(b) => bld.arg(b),
                None => bld.arg(&null),
            };
            bld.arg(&w_gu);
            match &b_gu {
                Some(b) => bld.arg(b),
                None => bld.arg(&null),
            };
            bld.arg(&w_down);
            match &b_down {
                Some(b) => bld.arg(b),
                None => bld.arg(&null),
            };
            bld.arg(&k_cache)
                .arg(&v_cache)
                .arg(&slots)
                .arg(&out)
                .arg(&q_buf)
                .arg(&part)
                .arg(&o_buf)
                .arg(&act)
                .arg(&barrier);
            for n in &ints {
                bld.arg(n);
            }
            bld.arg(&self.scale).arg(&red);
            match &trace {
                Some(t) => bld.arg(t),
                None => bld.arg(&null),
            };
            match layer_mode() {
                LayerMode::Cooperative | LayerMode::Auto => {
                    bld.cooperative();
                }
                LayerMode::Dependent => {
                    bld.dependent();
                }
                _ => {}
            }
            let cfg = LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (THREADS as u32, 1, 1),
                shared_mem_bytes: shared_bytes as u32,
            };
            unsafe { bld.launch(cfg) }.w()?;
            if let Some(t) = &trace {
                let clocks = stream.clone_dtoh(t).w()?;
                let phases: Vec<i64> = clocks[..13].windows(2).map(|w| w[1] - w[0]).collect();
                eprintln!("lmgen decode_layer trace (SM clocks a phase): {phases:?}");
            }
            Ok((out, Shape::from((2, 1, 1, hidden))))
        }
    }

    cuda_op1!(DecodeLayer, "lmgen-decode-layer", "decode_layer", launch);
}
