//! Weights stored in f16 / bf16 load exactly, and f16 / bf16 compute stays close to f32.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, CausalLM, LoadOptions};

const PROMPT: [u32; 8] = [1, 56, 386, 225, 462, 340, 79, 297];

/// A copy of the golden llama with its weights stored as `dtype` (or as f32 values rounded through `dtype`).
fn copy_as(dtype: DType, store: DType) -> anyhow::Result<tempfile::TempDir> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    let dir = tempfile::tempdir()?;
    std::fs::copy(src.join("config.json"), dir.path().join("config.json"))?;
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)?;
    let converted = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(dtype)?.to_dtype(store)?)))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    candle_core::safetensors::save(&converted, dir.path().join("model.safetensors"))?;
    Ok(dir)
}

fn logits(model: &dyn CausalLM) -> anyhow::Result<Vec<Vec<f32>>> {
    Ok(common::all_logits(model, &PROMPT)?.to_vec2()?)
}

fn load(dir: &Path, dtype: DType) -> anyhow::Result<Box<dyn CausalLM>> {
    let options = LoadOptions {
        dtype: Some(dtype),
        ..LoadOptions::default()
    };
    Ok(load_model(&Checkpoint::open(dir)?, &options)?)
}

#[test]
fn half_precision_weights_on_disk_load_exactly() -> anyhow::Result<()> {
    for half in [DType::F16, DType::BF16] {
        let on_disk = copy_as(half, half)?;
        let rounded = copy_as(half, DType::F32)?;
        let a = logits(load(on_disk.path(), DType::F32)?.as_ref())?;
        let b = logits(load(rounded.path(), DType::F32)?.as_ref())?;
        assert_eq!(
            common::max_abs_diff(&a, &b),
            0.0,
            "{half:?} weights must convert to f32 exactly"
        );
    }
    Ok(())
}

#[test]
fn half_precision_compute_stays_close_to_f32() -> anyhow::Result<()> {
    for (half, tol) in [(DType::F16, 0.05), (DType::BF16, 0.5)] {
        let dir = copy_as(half, half)?;
        let reference = logits(load(dir.path(), DType::F32)?.as_ref())?;
        let got = logits(load(dir.path(), half)?.as_ref())?;
        let diff = common::max_abs_diff(&reference, &got);
        assert!(diff < tol, "{half:?} compute differs from f32 by {diff}");
        let agree = common::argmax_agreement(&reference, &got);
        assert!(
            agree * 4 >= reference.len() * 3,
            "{half:?}: argmax agrees at only {agree}/{} positions",
            reference.len()
        );
    }
    Ok(())
}

/// Every golden checkpoint (old and 2026 architectures) with its float tensors stored as `half`
/// (and the same values stored as f32, for the reference): the half-precision copy loaded as
/// `half` on the CPU computes in f32 over half weights, so its logits are the f32 model's on the
/// rounded weights. Before, CPU activations were f16/bf16 (within 0.05 / 0.5 of f32, above); a
/// layer that still computed in half precision would miss 1e-4 by orders of magnitude.
#[test]
fn half_precision_weights_compute_in_f32_on_the_cpu() -> anyhow::Result<()> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs = Vec::new();
    for set in ["golden/models", "golden-arch/models"] {
        for entry in std::fs::read_dir(fixtures.join(set))? {
            dirs.push(entry?.path());
        }
    }
    dirs.sort();
    let mut failures = Vec::new();
    for dir in &dirs {
        let vocab = vocab_size(dir)?;
        for half in [DType::F16, DType::BF16] {
            let diffs = (|| -> anyhow::Result<Vec<f32>> {
                let stored = rounded_copy(dir, half, half)?;
                let reference = rounded_copy(dir, half, DType::F32)?;
                let got = load(stored.path(), half)?;
                anyhow::ensure!(got.dtype() == DType::F32, "compute dtype {:?}", got.dtype());
                let want = load(reference.path(), DType::F32)?;
                // 8 tokens: the decode kernels (few rows); 80: the prefill products.
                [8u32, 80]
                    .iter()
                    .map(|&len| {
                        let ids: Vec<u32> = (0..len).map(|i| (i * 37 + 1) % vocab).collect();
                        let a = common::all_logits(got.as_ref(), &ids)?.to_vec2::<f32>()?;
                        let b = common::all_logits(want.as_ref(), &ids)?.to_vec2::<f32>()?;
                        Ok(common::max_abs_diff(&a, &b))
                    })
                    .collect()
            })();
            match diffs {
                Ok(d) if d.iter().all(|d| *d <= 1e-4) => {}
                Ok(d) => failures.push(format!("{dir:?} {half:?}: max differences {d:?}")),
                Err(e) => failures.push(format!("{dir:?} {half:?}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

/// `vocab_size` of a checkpoint's config (or of its `text_config`).
fn vocab_size(dir: &Path) -> anyhow::Result<u32> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let v = config["vocab_size"]
        .as_u64()
        .or_else(|| config["text_config"]["vocab_size"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("{dir:?}: no vocab_size"))?;
    Ok(u32::try_from(v)?)
}

/// A copy of the checkpoint in `dir` whose float tensors are rounded through `dtype` and stored
/// as `store` (other tensors, such as MXFP4 blocks, and other files as they are).
fn rounded_copy(dir: &Path, dtype: DType, store: DType) -> anyhow::Result<tempfile::TempDir> {
    let out = tempfile::tempdir()?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
            let converted = tensors
                .into_iter()
                .map(|(k, t)| {
                    let t = if t.dtype().is_float() {
                        t.to_dtype(dtype)?.to_dtype(store)?
                    } else {
                        t
                    };
                    Ok((k, t))
                })
                .collect::<anyhow::Result<HashMap<_, _>>>()?;
            candle_core::safetensors::save(
                &converted,
                out.path().join(path.file_name().unwrap_or_default()),
            )?;
        } else if path.is_file() {
            std::fs::copy(&path, out.path().join(path.file_name().unwrap_or_default()))?;
        }
    }
    Ok(out)
}
