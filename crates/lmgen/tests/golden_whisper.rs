//! Whisper against transformers 5.17 (`tests/fixtures/golden-seq2seq`, the `whisper` checkpoint):
//! the encoder's output and the decoder's logits within 1e-4, and every whisper case of
//! `generate.json` token for token, through `generate_seq2seq` (transformers'
//! `GenerationMixin.generate` with an explicit decoder prompt) or Whisper's own generate
//! (`WhisperForConditionalGeneration.generate`: language, task, detection, timestamps).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use lmgen::cache::{DynamicCache, EncoderDecoderCache};
use lmgen::generation::config::UnknownFields;
use lmgen::generation::whisper::{self, PromptConditionType, WhisperOptions};
use lmgen::generation::{generate_seq2seq, EncoderInputs, Seq2SeqInput};
use lmgen::load::Checkpoint;
use lmgen::models::seq2seq::{EncoderInput, EncoderOutput};
use lmgen::models::{load_model, CausalLM, ForwardInput, LoadOptions, LogitsToKeep};
use lmgen::GenerationConfig;
use serde_json::Value;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-seq2seq")
}

fn load(dtype: DType) -> anyhow::Result<Box<dyn CausalLM>> {
    let checkpoint = Checkpoint::open(&golden().join("models/whisper"))?;
    let options = LoadOptions {
        dtype: Some(dtype),
        ..LoadOptions::default()
    };
    Ok(load_model(&checkpoint, &options)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// The decoder's `[b, t, vocab]` logits of `ids` over `encoded` (`[b, s, d]`).
fn decode(model: &dyn CausalLM, encoded: EncoderOutput, ids: &Tensor) -> anyhow::Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let pos = Tensor::new((0..t as u32).collect::<Vec<_>>(), &Device::Cpu)?
        .unsqueeze(0)?
        .repeat((b, 1))?;
    let mut cache = EncoderDecoderCache::new(Box::new(DynamicCache::new()), encoded);
    let out = model.forward(
        &ForwardInput {
            input_ids: ids,
            position_ids: &pos,
            attention_mask: None,
            logits_to_keep: LogitsToKeep::All,
            output_hidden_states: true,
            output_attentions: false,
            num_hidden_layers: None,
            device_positions: None,
        },
        &mut cache,
    )?;
    let states = out.hidden_states.as_ref().map_or(0, Vec::len);
    anyhow::ensure!(
        states == model.config().num_hidden_layers + 1,
        "{states} hidden states"
    );
    Ok(out.logits.to_dtype(DType::F32)?)
}

/// The encoder's output `[b, s, d]` of `features`.
fn encode(model: &dyn CausalLM, features: &Tensor) -> anyhow::Result<EncoderOutput> {
    let encoder = model.encoder().expect("Whisper has an encoder");
    let features = features.to_dtype(model.dtype())?;
    Ok(encoder.encode(&EncoderInput::Features(&features))?)
}

/// How far float32 results may be from the exact ones, relative to the largest value. The golden
/// checkpoint's wide random weights make it ill-conditioned: moving its input features by one
/// float32 rounding (a relative 1e-7) moves the exact encoder output by up to 8e-5 and the logits
/// by up to 2.4e-4, and transformers' own float32 logits are up to 4.3e-4 from the exact ones.
/// An encoder output that differs from transformers' by rounding (in any direction) comes out of
/// the decoder's cross-attention several times larger.
const F32_NOISE: f32 = 5e-5;

/// The decoder on transformers' encoder output gives transformers' logits within 1e-4 (the
/// decoder alone is well conditioned). The encoder's output, and the logits of the whole model,
/// are within 1e-4 of transformers', or as close to the exact values (this model run in float64,
/// which matches transformers' float64 run to 1e-6) as transformers' float32 result is, or within
/// [`F32_NOISE`] of the largest value: float32 rounding, amplified by this checkpoint.
#[test]
fn encoder_output_and_logits_match_transformers() -> anyhow::Result<()> {
    let tensors =
        candle_core::safetensors::load(golden().join("forward.safetensors"), &Device::Cpu)?;
    let model = load(DType::F32)?;
    let exact = load(DType::F64)?;
    let mut failures = Vec::new();
    for i in 0..2 {
        let key = |k: &str| format!("whisper.{i}.{k}");
        let get = |k: &str| {
            tensors
                .get(&key(k))
                .ok_or_else(|| anyhow::anyhow!("forward.safetensors has no {}", key(k)))
        };
        let features = get("input_features")?;
        let ids = get("decoder_input_ids")?.to_dtype(DType::U32)?; // [b, t]
        let theirs_encoded = EncoderOutput {
            last_hidden_state: get("encoder_last_hidden_state")?.clone(),
            attention_mask: None,
        };
        let diff = max_diff(
            &decode(model.as_ref(), theirs_encoded, &ids)?,
            get("logits")?,
        )?;
        if diff > 1e-4 {
            failures.push(format!(
                "whisper.{i}: the decoder over transformers' encoder output: logits differ by {diff}"
            ));
        }
        let encoded = encode(model.as_ref(), features)?;
        let hidden = encoded.last_hidden_state.clone();
        let logits = decode(model.as_ref(), encoded, &ids)?;
        let exact_encoded = encode(exact.as_ref(), features)?;
        let exact_hidden = exact_encoded.last_hidden_state.to_dtype(DType::F32)?;
        let exact_logits = decode(exact.as_ref(), exact_encoded, &ids)?;
        for (what, got, want, exact) in [
            (
                "encoder output",
                &hidden,
                get("encoder_last_hidden_state")?,
                &exact_hidden,
            ),
            ("logits", &logits, get("logits")?, &exact_logits),
        ] {
            assert_eq!(got.dims(), want.dims(), "whisper.{i}: {what} shape");
            let ours = max_diff(got, want)?;
            if ours <= 1e-4 {
                continue;
            }
            let (ours_to_exact, theirs) = (max_diff(got, exact)?, max_diff(want, exact)?);
            let scale = exact.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            if ours_to_exact > theirs.max(F32_NOISE * scale) {
                failures.push(format!(
                    "whisper.{i}: {what} differ by {ours} > 1e-4, and ours is {ours_to_exact} \
                     from the float64 result (largest |value| {scale}) where transformers' is \
                     {theirs}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Whisper's generate arguments among a case's `generation_config`; the rest are
/// `GenerationConfig` fields.
fn whisper_options(kwargs: &Value) -> anyhow::Result<(WhisperOptions, GenerationConfig)> {
    let mut rest = kwargs.as_object().cloned().unwrap_or_default();
    let mut take = |k: &str| rest.remove(k).filter(|v| !v.is_null());
    let language = take("language").map(|v| match v {
        Value::Array(a) => a
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_string())
            .collect(),
        v => vec![v.as_str().unwrap_or_default().to_string()],
    });
    let options = WhisperOptions {
        language,
        task: take("task").and_then(|v| v.as_str().map(str::to_string)),
        return_timestamps: take("return_timestamps").and_then(|v| v.as_bool()),
        is_multilingual: take("is_multilingual").and_then(|v| v.as_bool()),
        condition_on_prev_tokens: take("condition_on_prev_tokens").and_then(|v| v.as_bool()),
        temperature: take("temperature").map(|v| match v {
            Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
            v => v.as_f64().into_iter().collect(),
        }),
        compression_ratio_threshold: take("compression_ratio_threshold").and_then(|v| v.as_f64()),
        logprob_threshold: take("logprob_threshold").and_then(|v| v.as_f64()),
        no_speech_threshold: take("no_speech_threshold").and_then(|v| v.as_f64()),
        prompt_ids: take("prompt_ids").map(serde_json::from_value).transpose()?,
        prompt_condition_type: take("prompt_condition_type").map(|v| match v.as_str() {
            Some("all-segments") => PromptConditionType::AllSegments,
            _ => PromptConditionType::FirstSegment,
        }),
        // The attention mask says how many frames of each row are audio.
        num_frames: take("attention_mask")
            .map(|v| token_rows(&v))
            .transpose()?
            .map(|rows| {
                rows.iter()
                    .map(|r| r.iter().map(|&m| m as usize).sum())
                    .collect()
            }),
        ..WhisperOptions::default()
    };
    take("return_segments");
    let config = GenerationConfig::from_json(&Value::Object(rest), UnknownFields::Reject)?;
    Ok((options, config))
}

/// Token rows of a golden case (transformers writes them as floats when a row was empty).
fn token_rows(v: &Value) -> anyhow::Result<Vec<Vec<u32>>> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone())?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().map(|t| t as u32).collect())
        .collect())
}

#[test]
fn generate_cases_match_transformers() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(golden().join("generate.json"))?;
    let cases: Vec<Value> = serde_json::from_str(&text)?;
    let inputs = candle_core::safetensors::load(golden().join("inputs.safetensors"), &Device::Cpu)?;
    let dir = golden().join("models/whisper");
    let model = load(DType::F32)?;
    let base = GenerationConfig::from_pretrained(&dir)?;
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases.iter().filter(|c| c["model"] == "whisper") {
        let name = case["name"].as_str().unwrap_or_default();
        let key = case["input_features"]["key"].as_str().unwrap_or_default();
        let features = inputs
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("{name}: inputs.safetensors has no {key}"))?;
        let expected = &case["expected"];
        let want = token_rows(&expected["sequences"])?;
        match case["entry"].as_str() {
            Some("GenerationMixin.generate") => {
                let overrides =
                    GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject)?;
                let mut config = base.clone();
                config.update(&overrides);
                let input = Seq2SeqInput {
                    encoder: EncoderInputs::Features(features.clone()),
                    decoder_input_ids: Some(serde_json::from_value(
                        case["decoder_input_ids"].clone(),
                    )?),
                    decoder_attention_mask: None,
                };
                let out = generate_seq2seq(model.as_ref(), &input, &config, Default::default())?;
                if out.sequences != want {
                    failures.push(format!(
                        "{name}: sequences\n  got  {:?}\n  want {want:?}",
                        out.sequences
                    ));
                }
            }
            Some("WhisperForConditionalGeneration.generate") => {
                let (options, overrides) = whisper_options(&case["generation_config"])?;
                let mut config = base.clone();
                config.update(&overrides);
                let out = whisper::generate(
                    model.as_ref(),
                    features,
                    &options,
                    &config,
                    Default::default(),
                )?;
                if out.sequences != want {
                    failures.push(format!(
                        "{name}: sequences\n  got  {:?}\n  want {want:?}",
                        out.sequences
                    ));
                }
                if let Some(first) = case.get("inner_calls").and_then(|c| c.get(0)) {
                    // The first window's prompt: any earlier text, then the row's own prompt.
                    let prompt = token_rows(&first["decoder_input_ids"])?;
                    let same = prompt.len() == out.init_tokens.len()
                        && prompt
                            .iter()
                            .zip(&out.init_tokens)
                            .all(|(p, i)| p.ends_with(i));
                    if !same {
                        failures.push(format!(
                            "{name}: decoder prompt {:?}, transformers' {prompt:?}",
                            out.init_tokens
                        ));
                    }
                }
                if let Some(rows) = expected.get("segments").and_then(Value::as_array) {
                    for (r, (got, want)) in out.segments.iter().zip(rows).enumerate() {
                        let want = want.as_array().cloned().unwrap_or_default();
                        let same = got.len() == want.len()
                            && got.iter().zip(&want).all(|(g, w)| {
                                let tokens: Vec<u32> =
                                    serde_json::from_value(w["tokens"].clone()).unwrap_or_default();
                                g.tokens == tokens
                                    && (g.start - w["start"].as_f64().unwrap_or(f64::NAN)).abs()
                                        < 1e-9
                                    && (g.end - w["end"].as_f64().unwrap_or(f64::NAN)).abs() < 1e-9
                            });
                        if !same {
                            failures.push(format!(
                                "{name}: row {r} segments\n  got  {got:?}\n  want {want:?}"
                            ));
                        }
                    }
                }
            }
            other => anyhow::bail!("{name}: unknown entry {other:?}"),
        }
        checked += 1;
    }
    assert!(checked > 0, "no whisper case in generate.json");
    println!("{checked} whisper cases checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// f16 and bf16 run the whole model (the convolutions included): logits close to f32's and the
/// same argmax mostly, on a random checkpoint of the golden config written by `init_random`
/// (which also checks that it lists every tensor Whisper loads). The golden checkpoint is too
/// ill-conditioned for this: transformers' own bf16 logits are 11.4 off its f32 ones (of 30).
#[test]
fn half_precision_stays_close_to_f32() -> anyhow::Result<()> {
    let tensors =
        candle_core::safetensors::load(golden().join("forward.safetensors"), &Device::Cpu)?;
    let features = &tensors["whisper.1.input_features"];
    let ids = tensors["whisper.1.decoder_input_ids"].to_dtype(DType::U32)?;
    let text = std::fs::read_to_string(golden().join("models/whisper/config.json"))?;
    let mut config: Value = serde_json::from_str(&text)?;
    config["initializer_range"] = serde_json::json!(0.2);
    let dir = tempfile::tempdir()?;
    lmgen::init::init_random(&config, DType::F32, dir.path(), 7)?;
    let checkpoint = Checkpoint::open(dir.path())?;
    let with = |dtype| {
        load_model(
            &checkpoint,
            &LoadOptions {
                dtype: Some(dtype),
                ..LoadOptions::default()
            },
        )
    };
    let f32_model = with(DType::F32)?;
    let reference = decode(
        f32_model.as_ref(),
        encode(f32_model.as_ref(), features)?,
        &ids,
    )?;
    let scale = reference.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let want: Vec<u32> = reference.argmax(2)?.flatten_all()?.to_vec1()?;
    for (half, tol) in [(DType::F16, 0.02), (DType::BF16, 0.1)] {
        let model = with(half)?;
        let got = decode(model.as_ref(), encode(model.as_ref(), features)?, &ids)?;
        let diff = max_diff(&got, &reference)?;
        let argmax: Vec<u32> = got.argmax(2)?.flatten_all()?.to_vec1()?;
        let agree = argmax.iter().zip(&want).filter(|(a, b)| a == b).count();
        println!(
            "{half:?}: max diff {diff} of {scale}, argmax {agree}/{}",
            want.len()
        );
        assert!(
            diff <= tol * scale,
            "{half:?}: max diff {diff} of max |logit| {scale}"
        );
        assert!(
            agree * 4 >= want.len() * 3,
            "{half:?}: argmax {agree}/{}",
            want.len()
        );
    }
    Ok(())
}
