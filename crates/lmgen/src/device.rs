//! Devices by name (`cpu`, `cuda`, `cuda:N`, as torch spells them) and the errors a device raises
//! that callers must be able to tell apart (running out of GPU memory).
//!
//! CUDA needs a build with the `cuda` feature (`tools/build_cuda.sh`); without it `cuda` is a clear
//! error, not a silent fall-back to the CPU.

use crate::error::{Error, Result};

pub use candle_core::Device;

/// Parses a device name: `cpu`, `cuda` (GPU 0) or `cuda:N`.
///
/// ```
/// let cpu = lmgen::device::parse("cpu")?;
/// assert!(cpu.is_cpu());
/// assert!(lmgen::device::parse("tpu").is_err());
/// # Ok::<(), lmgen::Error>(())
/// ```
pub fn parse(name: &str) -> Result<Device> {
    match gpu_index(name)? {
        None => Ok(Device::Cpu),
        Some(ordinal) => cuda(ordinal).map_err(|message| Error::Device {
            name: name.to_string(),
            message,
        }),
    }
}

/// The GPU a device name means without opening it: `None` for `cpu`, `Some(N)` for `cuda:N`
/// (`cuda`: 0); an error naming it for anything else.
///
/// ```
/// assert_eq!(lmgen::device::gpu_index("cuda:3")?, Some(3));
/// assert_eq!(lmgen::device::gpu_index("cpu")?, None);
/// # Ok::<(), lmgen::Error>(())
/// ```
pub fn gpu_index(name: &str) -> Result<Option<usize>> {
    let error = |message: &str| Error::Device {
        name: name.to_string(),
        message: message.to_string(),
    };
    match name {
        "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        other => match other.strip_prefix("cuda:") {
            Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
                error("is not a device: expected `cuda:N` with N a GPU index (0, 1, ...)")
            }),
            None => Err(error("is not a device; use cpu, cuda or cuda:N")),
        },
    }
}

/// Opens GPU `ordinal`. Unless lmgen's CUDA fast paths are off ([`crate::cuda::set_enabled`]),
/// without cudarc's event tracking: that creates two CUDA events for every allocation (every op's
/// output) and destroys them with it, a cost on every op, and only synchronises work across
/// streams, while lmgen runs all of a device's work on the one stream candle opens it with.
#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> std::result::Result<Device, String> {
    let device = Device::new_cuda(ordinal).map_err(|e| format!("could not be opened: {e}"))?;
    if let (Device::Cuda(gpu), true) = (&device, crate::cuda::enabled()) {
        // SAFETY: cudarc's contract for turning tracking off is that the caller orders work
        // across streams itself; every tensor of this device is made and used on its one stream
        // (candle's per-thread default stream; lmgen creates no other).
        #[allow(unsafe_code)]
        unsafe {
            gpu.disable_event_tracking()
        };
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> std::result::Result<Device, String> {
    Err(
        "is not available: this lmgen was built without CUDA; build it with `--features cuda` \
         (tools/build_cuda.sh)"
            .into(),
    )
}

/// A short name for messages: `cpu`, `cuda:0`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Free and total memory of `device` in bytes, as the driver reports them (`cuMemGetInfo`: memory
/// other processes hold counts as used); `None` on the CPU.
pub fn memory_info(device: &Device) -> Option<(usize, usize)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(gpu) => gpu.cuda_stream().context().mem_get_info().ok(),
        _ => None,
    }
}

/// Whether a tensor error is the GPU running out of memory (a failed allocation in the driver,
/// cuBLAS or cuRAND). candle passes these on as opaque backend errors, so the message is what
/// tells them apart.
pub(crate) fn is_out_of_memory(err: &candle_core::Error) -> bool {
    let text = err.to_string();
    [
        "CUDA_ERROR_OUT_OF_MEMORY",
        "CUBLAS_STATUS_ALLOC_FAILED",
        "CURAND_STATUS_ALLOCATION_FAILED",
        "cudaErrorMemoryAllocation",
    ]
    .iter()
    .any(|code| text.contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert!(parse("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("device `{bad}` is not a device")),
                "{err}"
            );
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let err = parse("cuda:1").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn out_of_memory_is_recognised_by_its_code() {
        let oom = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        assert!(is_out_of_memory(&oom));
        assert!(!is_out_of_memory(&candle_core::Error::Msg(
            "shape mismatch".into()
        )));
    }
}
