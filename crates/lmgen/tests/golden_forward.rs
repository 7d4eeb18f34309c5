//! Full-prompt logits of every golden checkpoint against transformers' (`forward.safetensors`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, LoadOptions};

mod common;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

#[test]
fn full_prompt_logits_match_transformers() -> anyhow::Result<()> {
    let tensors =
        candle_core::safetensors::load(golden().join("forward.safetensors"), &Device::Cpu)?;
    let mut names: Vec<String> = tensors
        .keys()
        .map(|k| k.split('.').next().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        7,
        "expected the seven golden models, got {names:?}"
    );
    for name in &names {
        let checkpoint = Checkpoint::open(&golden().join("models").join(name))?;
        let model = load_model(&checkpoint, &LoadOptions::default())?;
        for i in 0..2 {
            let ids: Vec<u32> = tensors[&format!("{name}.{i}.input_ids")]
                .to_dtype(DType::U32)?
                .to_vec1()?;
            let want = &tensors[&format!("{name}.{i}.logits")]; // [T, vocab]
            let got = common::all_logits(model.as_ref(), &ids)?;
            assert_eq!(got.dims(), want.dims(), "{name}.{i}: shape");
            let diff = (got - want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(
                diff <= 1e-4,
                "{name}.{i}: max |logit difference| {diff} > 1e-4"
            );
        }
    }
    Ok(())
}
