//! Kernel launches through the driver's `cuLaunchKernelEx`, so that a decode kernel can be
//! launched as a programmatic dependent of the kernel before it (Hopper and later: PDL).
//!
//! A dependent launch may start its blocks while the kernel before it is still running: the
//! kernel does what needs nothing from its predecessor (the product kernels load their first
//! weights, which no kernel of a step writes), then waits in `pdl_wait()` (`griddepcontrol.wait`
//! in `kernels/common.cuh`) for the predecessor to finish and its writes to be visible, and lets
//! its own dependent start with `pdl_trigger()`. A batch-1 decode step is a chain of ~130 short
//! kernels; with plain launches each waits for the one before to drain before its blocks are even
//! scheduled. Only kernels that call `pdl_wait()` before touching their inputs or outputs may be
//! launched this way ([`Launch::dependent`]); the others (candle's, cuBLAS's) are unchanged.
//!
//! On where the kernels are built for sm_90 or later (`tools/build_cuda.sh`), unless
//! `LMGEN_CUDA_PDL=0`. Graph capture records a dependent launch as a programmatic edge, so a
//! replayed decode step keeps the overlap.

use candle_core::cuda_backend::cudarc::driver::sys;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DriverError,
    LaunchConfig, SyncOnDrop,
};

/// Whether dependent launches are on: the kernels were compiled with `griddepcontrol` (PTX for
/// compute capability 9.0 or later) and `LMGEN_CUDA_PDL` is not `0`.
pub(crate) fn dependent_launches() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let cap: u32 = env!("LMGEN_CUDA_PTX_CAP").parse().unwrap_or(0);
        cap >= 90 && std::env::var("LMGEN_CUDA_PDL").map_or(true, |v| v != "0")
    })
}

/// One launch's arguments, read as the kernel's parameters in order.
pub(crate) struct Launch<'a> {
    stream: &'a CudaStream,
    func: &'a CudaFunction,
    /// Each parameter's value: a device pointer, or a scalar of at most 8 bytes in the low bytes.
    words: Vec<u64>,
    /// The operands' read/write records (cudarc's event tracking), kept until the launch is queued.
    guards: Vec<SyncOnDrop<'a>>,
    dependent: bool,
    cooperative: bool,
}

/// A kernel parameter: a device buffer (its pointer) or a scalar.
pub(crate) trait KernelArg {
    fn push<'a>(&'a self, launch: &mut Launch<'a>);
}

macro_rules! scalar_arg {
    ($($t:ty => |$v:ident| $word:expr),* $(,)?) => {
        $(impl KernelArg for $t {
            fn push<'a>(&'a self, launch: &mut Launch<'a>) {
                let $v = *self;
                launch.words.push($word);
            }
        })*
    };
}

// Little-endian: a 4-byte parameter is read from the word's low bytes.
scalar_arg!(
    i32 => |v| v as u32 as u64,
    u32 => |v| v as u64,
    f32 => |v| v.to_bits() as u64,
    i64 => |v| v as u64,
    u64 => |v| v,
);

macro_rules! buffer_arg {
    ($($t:ty),*) => {
        $(impl<T> KernelArg for $t {
            fn push<'a>(&'a self, launch: &mut Launch<'a>) {
                let (ptr, guard) = self.device_ptr(launch.stream);
                launch.words.push(ptr);
                launch.guards.push(guard);
            }
        })*
    };
}

buffer_arg!(CudaSlice<T>, CudaView<'_, T>, CudaViewMut<'_, T>);

impl<'a> Launch<'a> {
    /// A launch of `func` on `stream` (the pair [`super::func`] returns).
    pub fn new(stream: &'a CudaStream, func: &'a CudaFunction) -> Self {
        Self {
            stream,
            func,
            words: Vec::with_capacity(20),
            guards: Vec::new(),
            dependent: false,
            cooperative: false,
        }
    }

    pub fn arg<A: KernelArg + ?Sized>(&mut self, a: &'a A) -> &mut Self {
        a.push(self);
        self
    }

    /// Launched as a programmatic dependent of the kernel before it where
    /// [`dependent_launches`] are on. The kernel must call `pdl_wait()` before it reads or
    /// writes anything another kernel writes or reads.
    pub fn dependent(&mut self) -> &mut Self {
        self.dependent = dependent_launches();
        self
    }

    /// Launched cooperatively: the driver refuses the launch where the grid's blocks cannot all
    /// be resident at once (a kernel whose blocks wait for each other needs them all running).
    pub fn cooperative(&mut self) -> &mut Self {
        self.cooperative = true;
        self
    }

    /// Queues the kernel.
    ///
    /// # Safety
    /// The arguments must be the kernel's parameters, in order and of its types, and the grid
    /// must keep its accesses inside the buffers (as cudarc's `launch`).
    pub unsafe fn launch(mut self, cfg: LaunchConfig) -> Result<(), DriverError> {
        self.stream.context().bind_to_thread()?;
        let mut params: Vec<*mut std::ffi::c_void> = self
            .words
            .iter_mut()
            .map(|w| w as *mut u64 as *mut std::ffi::c_void)
            .collect();
        let mut attrs = Vec::with_capacity(2);
        if self.dependent {
            attrs.push(sys::CUlaunchAttribute {
                id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
                pad: [0; 4],
                value: sys::CUlaunchAttributeValue {
                    programmaticStreamSerializationAllowed: 1,
                },
            });
        }
        if self.cooperative {
            attrs.push(sys::CUlaunchAttribute {
                id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE,
                pad: [0; 4],
                value: sys::CUlaunchAttributeValue { cooperative: 1 },
            });
        }
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: attrs.as_mut_ptr(),
            numAttrs: attrs.len() as u32,
        };
        // SAFETY: `params` points at one word per kernel parameter, alive across the call (the
        // driver copies them before returning); the caller vouches for their types.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                self.func.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        // Dropping `self` now records the operands' uses (cudarc's event tracking).
    }
}
