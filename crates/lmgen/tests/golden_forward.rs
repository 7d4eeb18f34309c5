//! Full-prompt logits of every golden checkpoint against transformers' (`forward.safetensors`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lmgen::cache::DynamicCache;
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, ForwardInput, LoadOptions, LogitsToKeep};

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
            let t = ids.len();
            let input_ids = Tensor::new(vec![ids], &Device::Cpu)?;
            let positions = Tensor::new(vec![(0..t as u32).collect::<Vec<_>>()], &Device::Cpu)?;
            let out = model.forward(
                &ForwardInput {
                    input_ids: &input_ids,
                    position_ids: &positions,
                    attention_mask: None,
                    logits_to_keep: LogitsToKeep::All,
                    output_hidden_states: false,
                    num_hidden_layers: None,
                },
                &mut DynamicCache::new(),
            )?;
            let got = out.logits.squeeze(0)?;
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
