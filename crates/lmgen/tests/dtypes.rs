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
