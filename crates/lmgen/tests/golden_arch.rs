//! The 2026 architectures against transformers 5.17 (`tests/fixtures/golden-arch`, copied from
//! `shared/golden-arch`): full-prompt logits within 1e-4, and every generate case token for
//! token (greedy, a left-padded batch, 48 new tokens, repetition penalty, beam search with its
//! scores, a third prompt, prompt lookup), for each model lmgen runs. The `_mm` folders are the
//! same language models as shipped inside vision-language checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use lmgen::generation::config::UnknownFields;
use lmgen::load::Checkpoint;
use lmgen::models::{load_model, LoadOptions};
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

/// The golden-arch models this build runs.
const MODELS: &[&str] = &[
    "qwen3",
    "gemma3_text",
    "phi3",
    "smollm3",
    "olmo2",
    "granite",
    "ministral3",
    "gemma3_mm",
    "mistral3_mm",
    "qwen3_moe",
    "mixtral",
    "gpt_oss",
    "qwen3_5_text",
    "qwen3_5_mm",
    "qwen3_next",
    "lfm2",
    "gemma4_text",
];

/// The seven cases every model has.
const CASES: &[&str] = &[
    "greedy",
    "greedy_batch_left_padded",
    "greedy_long",
    "repetition_penalty",
    "beam",
    "greedy_prompt3",
    "prompt_lookup",
];

mod common;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-arch")
}

#[test]
fn full_prompt_logits_match_transformers() -> anyhow::Result<()> {
    let tensors =
        candle_core::safetensors::load(golden().join("forward.safetensors"), &Device::Cpu)?;
    let mut failures = Vec::new();
    for name in MODELS {
        let checkpoint = Checkpoint::open(&golden().join("models").join(name))?;
        let model = load_model(&checkpoint, &LoadOptions::default())?;
        for i in 0..2 {
            let key = |k: &str| format!("{name}.{i}.{k}");
            let (Some(ids), Some(want)) =
                (tensors.get(&key("input_ids")), tensors.get(&key("logits")))
            else {
                anyhow::bail!(
                    "forward.safetensors has no {} / {}",
                    key("input_ids"),
                    key("logits")
                );
            };
            let ids: Vec<u32> = ids.to_dtype(DType::U32)?.to_vec1()?;
            let got = common::all_logits(model.as_ref(), &ids)?;
            assert_eq!(got.dims(), want.dims(), "{name}.{i}: shape");
            failures.extend(logits_failures(
                &format!("{name}.{i}"),
                &checkpoint,
                &ids,
                &got,
                want,
            )?);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn generate_cases_match_transformers() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(golden().join("generate.json"))?;
    let cases: Vec<Value> = serde_json::from_str(&text)?;
    let mut pipes: HashMap<&str, Pipeline> = HashMap::new();
    let mut checked = HashMap::<(&str, &str), usize>::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let model = case["model"].as_str().unwrap_or_default();
        let (Some(&model), Some(&name)) = (
            MODELS.iter().find(|&&m| m == model),
            CASES.iter().find(|&&c| c == name),
        ) else {
            continue;
        };
        if !pipes.contains_key(model) {
            let dir = golden().join("models").join(model);
            pipes.insert(
                model,
                Pipeline::from_pretrained(dir.to_str().unwrap_or_default())?,
            );
        }
        let pipe = &pipes[model];
        let expected = &case["expected"];
        let overrides =
            GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject)?;
        let input = GenerateInput {
            input_ids: serde_json::from_value(case["input_ids"].clone())?,
            attention_mask: Some(serde_json::from_value(case["attention_mask"].clone())?),
        };
        let out = pipe.generate(&input, &overrides)?;
        *checked.entry((model, name)).or_default() += 1;
        common::check_sequences(&format!("{model}/{name}"), &out, expected, &mut failures)?;
    }
    for model in MODELS {
        for case in CASES {
            assert_eq!(
                checked.get(&(*model, *case)).copied().unwrap_or(0),
                1,
                "golden case {model}/{case} missing"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Full-prompt logits within 1e-4 of transformers'. Past 1e-4, a position must be one where
/// transformers' own float32 result is off the exact value (the model run in float64) by at
/// least as much as ours: an ill-conditioned position (the gated DeltaNet L2-normalises small
/// queries and keys), not a different computation.
fn logits_failures(
    label: &str,
    checkpoint: &Checkpoint,
    ids: &[u32],
    got: &candle_core::Tensor,
    want: &candle_core::Tensor,
) -> anyhow::Result<Vec<String>> {
    let diff = (got - want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    if diff <= 1e-4 {
        return Ok(Vec::new());
    }
    let want: Vec<Vec<f32>> = want.to_vec2()?;
    let got: Vec<Vec<f32>> = got.to_vec2()?;
    let exact_model = load_model(
        checkpoint,
        &LoadOptions {
            dtype: Some(DType::F64),
            ..LoadOptions::default()
        },
    )?;
    let exact: Vec<Vec<f32>> = common::all_logits(exact_model.as_ref(), ids)?.to_vec2()?;
    let row_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let mut failures = Vec::new();
    for (p, ((g, w), e)) in got.iter().zip(&want).zip(&exact).enumerate() {
        let (ours, theirs) = (row_diff(g, w), row_diff(e, w));
        let ours_to_exact = row_diff(g, e);
        if ours > 1e-4 && ours_to_exact > theirs {
            failures.push(format!(
                "{label} position {p}: max |logit difference| {ours} > 1e-4, and ours is \
                 {ours_to_exact} from the float64 result where transformers' is {theirs}"
            ));
        }
    }
    Ok(failures)
}

/// Every new knob also runs in half precision: f16 and bf16 logits stay close to f32's on the
/// golden prompts, and their argmax mostly agrees (as `dtypes.rs` checks for Llama).
#[test]
fn half_precision_stays_close_to_f32() -> anyhow::Result<()> {
    let tensors =
        candle_core::safetensors::load(golden().join("forward.safetensors"), &Device::Cpu)?;
    let mut report = Vec::new();
    for name in MODELS {
        let checkpoint = Checkpoint::open(&golden().join("models").join(name))?;
        let ids: Vec<u32> = tensors[&format!("{name}.0.input_ids")]
            .to_dtype(DType::U32)?
            .to_vec1()?;
        let f32_model = load_model(&checkpoint, &LoadOptions::default())?;
        let reference: Vec<Vec<f32>> = common::all_logits(f32_model.as_ref(), &ids)?.to_vec2()?;
        let scale = reference.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
        for (half, tol) in [(DType::F16, 0.02), (DType::BF16, 0.1)] {
            // Not bf16 on the gated DeltaNet models: this random checkpoint has positions whose
            // query or key is near zero before its L2 norm (see the float64 check above), where
            // bf16's 8-bit rounding of `in_proj_qkv` (which transformers does too) turns into
            // another direction; f16 is checked, but for Qwen3-Next, where f16's rounding of
            // the weights alone moves the logits by 0.32 (on the CPU, half-precision weights
            // compute in f32, and `dtypes.rs` checks that every golden model, Qwen3-Next
            // included, then gives the f32 model's logits on the rounded weights within 1e-4).
            let rounding_bound = name.starts_with("qwen3_5") || *name == "qwen3_next";
            if rounding_bound && (half == DType::BF16 || *name == "qwen3_next") {
                continue;
            }
            let options = LoadOptions {
                dtype: Some(half),
                ..LoadOptions::default()
            };
            let model = load_model(&checkpoint, &options)?;
            let got: Vec<Vec<f32>> = common::all_logits(model.as_ref(), &ids)?.to_vec2()?;
            let diff = common::max_abs_diff(&reference, &got);
            let agree = common::argmax_agreement(&reference, &got);
            report.push(format!(
                "{name} {half:?}: max diff {diff:.4} of max |logit| {scale:.2}, argmax {agree}/{}",
                reference.len()
            ));
            assert!(diff <= tol * scale, "{}", report.join("\n"));
            assert!(agree * 4 >= reference.len() * 3, "{}", report.join("\n"));
        }
    }
    println!("{}", report.join("\n"));
    Ok(())
}

/// gpt-oss as published: experts stored as MXFP4 blocks and scales (`tools/make_gpt_oss_mxfp4.py`
/// wrote a tiny one and transformers' logits for it, loaded with `Mxfp4Config(dequantize=True)`).
#[test]
fn gpt_oss_mxfp4_experts_match_transformers() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mxfp4");
    let tensors = candle_core::safetensors::load(dir.join("forward.safetensors"), &Device::Cpu)?;
    let checkpoint = Checkpoint::open(&dir.join("gpt_oss_mxfp4"))?;
    let model = load_model(&checkpoint, &LoadOptions::default())?;
    let ids: Vec<u32> = tensors["input_ids"].to_dtype(DType::U32)?.to_vec1()?;
    let got = common::all_logits(model.as_ref(), &ids)?;
    let diff = (got - &tensors["logits"])?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(diff <= 1e-4, "max |logit difference| {diff}");
    Ok(())
}

/// Qwen3.5-MoE's text model (Qwen3.5-35B-A3B's shape in small: gated DeltaNet, gated attention,
/// routed experts and a shared expert on every layer), saved by transformers with its logits
/// and greedy tokens (`tools/make_qwen3_5_moe.py`).
#[test]
fn qwen3_5_moe_matches_transformers() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3_5_moe");
    let tensors = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)?;
    let checkpoint = Checkpoint::open(&dir.join("qwen3_5_moe_text"))?;
    let model = load_model(&checkpoint, &LoadOptions::default())?;
    let ids: Vec<u32> = tensors["input_ids"].to_dtype(DType::U32)?.to_vec1()?;
    let got = common::all_logits(model.as_ref(), &ids)?;
    let failures = logits_failures("qwen3_5_moe", &checkpoint, &ids, &got, &tensors["logits"])?;
    let want: Vec<u32> = tensors["greedy"].to_dtype(DType::U32)?.to_vec1()?;
    let config = GenerationConfig {
        max_new_tokens: Some(want.len() - ids.len()),
        min_new_tokens: Some(want.len() - ids.len()),
        do_sample: Some(false),
        ..GenerationConfig::default()
    };
    let out = lmgen::generate(model.as_ref(), &GenerateInput::single(ids), &config)?;
    assert_eq!(out.sequences[0], want);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// The recurrent state through the other paths that touch a cache, on the hybrid models: a draft
/// model with its own cache (the same model: drafts accepted, its state rolling forward), early
/// exit (the target's first 2 layers draft and disagree, so drafts are rejected and the state
/// returns to its checkpoint), and contrastive search with a negligible penalty (rows repeated
/// for the candidates, then one kept): all give greedy's tokens.
#[test]
fn recurrent_state_in_every_decoding_mode_gives_greedys_tokens() -> anyhow::Result<()> {
    let config = |fields: Value| GenerationConfig::from_json(&fields, UnknownFields::Reject);
    for name in ["qwen3_5_text", "lfm2", "qwen3_next"] {
        let dir = golden().join("models").join(name);
        let pipe = Pipeline::from_pretrained(dir.to_str().unwrap())?;
        let input = GenerateInput::single(vec![5, 17, 250, 3, 99, 512, 42, 7]);
        let base = json!({"max_new_tokens": 24, "min_new_tokens": 24, "do_sample": false});
        let greedy = pipe.generate(&input, &config(base.clone())?)?;
        let with = |extra: Value| -> anyhow::Result<GenerationConfig> {
            let mut v = base.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Ok(config(v)?)
        };
        let same_model = pipe.generate_with(
            &input,
            &with(json!({"num_assistant_tokens": 4, "assistant_confidence_threshold": 0.0}))?,
            pipe.assisted_by(&pipe),
        )?;
        assert_eq!(
            same_model.sequences, greedy.sequences,
            "{name}: draft model"
        );
        let early_exit = pipe.generate(&input, &with(json!({"assistant_early_exit": 2}))?)?;
        assert_eq!(early_exit.sequences, greedy.sequences, "{name}: early exit");
        let stats = early_exit.assisted.unwrap();
        assert!(
            stats.drafted > stats.accepted,
            "{name}: no draft rejected {stats:?}"
        );
        let contrastive =
            pipe.generate(&input, &with(json!({"penalty_alpha": 1e-6, "top_k": 4}))?)?;
        assert_eq!(
            contrastive.sequences, greedy.sequences,
            "{name}: contrastive"
        );
    }
    Ok(())
}
