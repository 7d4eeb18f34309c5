//! With the `cuda` feature, compiles lmgen's own CUDA kernels (`src/cuda/kernels/*.cu`) to PTX in
//! `OUT_DIR`, which `src/cuda/mod.rs` embeds and loads at run time. The default (CPU-only) build
//! does nothing here and needs no CUDA toolkit.
//!
//! nvcc is `$NVCC`, else `$CUDA_ROOT/bin/nvcc` (as tools/build_cuda.sh sets them), else `nvcc` on
//! the `PATH`; the PTX targets `compute_$CUDA_COMPUTE_CAP` (default 80: bf16 needs sm_80). Three
//! small sources: a few seconds of nvcc.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &["fused", "flash", "decode_layer"];

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["NVCC", "CUDA_ROOT", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CUDA_ROOT").map(|r| PathBuf::from(r).join("bin/nvcc")))
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    // src/cuda/launch.rs: dependent launches need the kernels' `griddepcontrol` (sm_90 and later).
    println!("cargo:rustc-env=LMGEN_CUDA_PTX_CAP={cap}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for header in ["common", "attend"] {
        println!("cargo:rerun-if-changed=src/cuda/kernels/{header}.cuh");
    }
    for name in KERNELS {
        let src = format!("src/cuda/kernels/{name}.cu");
        println!("cargo:rerun-if-changed={src}");
        let mut cmd = Command::new(&nvcc);
        cmd.args(["-ptx", "-O3", &format!("-arch=compute_{cap}"), "-o"])
            .arg(out.join(format!("{name}.ptx")))
            .arg(&src);
        if let Some(root) = std::env::var_os("CUDA_ROOT") {
            cmd.arg("-I").arg(PathBuf::from(root).join("include"));
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("could not run nvcc ({}): {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on {src}");
    }
}
