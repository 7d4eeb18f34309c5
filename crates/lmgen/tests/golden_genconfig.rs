//! GenerationConfig fields of issue 19 against transformers 5.17 on the golden checkpoints
//! (`fixtures/genconfig`, made by `tools/make_genconfig_golden.py`): `prefill_chunk_size`,
//! `output_hidden_states` / `output_attentions` and `cache_implementation`. Sequences token for
//! token; scores within 1e-4 (relative to `max(|x|, 1)`); hidden states and attention weights
//! within 1e-4 absolute. Where transformers refuses a setting, lmgen must refuse it too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use lmgen::generation::config::UnknownFields;
use lmgen::models::{AttnImplementation, LoadOptions};
use lmgen::{GenerateInput, GenerateOutput, GenerationConfig, Pipeline};
use serde_json::Value;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Pipelines by (model, attention implementation), loaded once.
#[derive(Default)]
struct Pipes(HashMap<(String, String), Pipeline>);

impl Pipes {
    fn get(&mut self, case: &Value) -> anyhow::Result<&Pipeline> {
        let model = case["model"].as_str().unwrap_or_default().to_string();
        let attn = case["attn_implementation"]
            .as_str()
            .unwrap_or("sdpa")
            .to_string();
        let key = (model.clone(), attn.clone());
        if !self.0.contains_key(&key) {
            let dir = fixtures().join("golden/models").join(&model);
            let options = LoadOptions {
                attn_implementation: match attn.as_str() {
                    "eager" => AttnImplementation::Eager,
                    _ => AttnImplementation::Sdpa,
                },
                ..LoadOptions::default()
            };
            let pipe = Pipeline::load(dir.to_str().unwrap_or_default(), &options)?;
            self.0.insert(key.clone(), pipe);
        }
        Ok(&self.0[&key])
    }
}

fn cases(file: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(fixtures().join("genconfig").join(file))?;
    let value: Value = serde_json::from_str(&text)?;
    Ok(value["cases"].as_array().cloned().unwrap_or_default())
}

fn label(case: &Value) -> String {
    format!("{}/{}", case["model"], case["name"].as_str().unwrap_or(""))
}

/// Runs `case` with `extra` fields on top of its generation config.
fn run(pipes: &mut Pipes, case: &Value, extra: &Value) -> anyhow::Result<GenerateOutput> {
    let pipe = pipes.get(case)?;
    let mut overrides =
        GenerationConfig::from_json(&case["generation_config"], UnknownFields::Reject)?;
    overrides.update(&GenerationConfig::from_json(extra, UnknownFields::Reject)?);
    let input = GenerateInput {
        input_ids: serde_json::from_value(case["input_ids"].clone())?,
        attention_mask: Some(serde_json::from_value(case["attention_mask"].clone())?),
    };
    Ok(pipe.generate(&input, &overrides)?)
}

/// A case transformers refuses: lmgen refuses it too, with a message naming `field`.
fn check_refused(pipes: &mut Pipes, case: &Value, field: &str, failures: &mut Vec<String>) {
    match run(pipes, case, &Value::Object(Default::default())) {
        Ok(_) => failures.push(format!(
            "{}: transformers refuses it ({}), lmgen ran it",
            label(case),
            case["error"]
        )),
        Err(e) if e.to_string().contains(field) => {}
        Err(e) => failures.push(format!("{}: error does not name {field}: {e}", label(case))),
    }
}

#[test]
fn prefill_chunk_size_matches_transformers() -> anyhow::Result<()> {
    let mut pipes = Pipes::default();
    let mut failures = Vec::new();
    let (mut ran, mut refused) = (0, 0);
    for case in cases("prefill_chunk.json")? {
        if case.get("error").is_some() {
            check_refused(&mut pipes, &case, "prefill_chunk", &mut failures);
            refused += 1;
            continue;
        }
        let expected = &case["expected"];
        let scores = expected.get("scores").and_then(Value::as_array);
        let extra = match scores {
            Some(_) => serde_json::json!({"output_scores": true, "return_dict_in_generate": true}),
            None => serde_json::json!({}),
        };
        let out = run(&mut pipes, &case, &extra)?;
        ran += 1;
        if !common::check_sequences(&label(&case), &out, expected, &mut failures)? {
            continue;
        }
        // The first steps' scores: the prompt's last logits after the chunks, then one step.
        for (b, row) in scores.into_iter().flatten().enumerate() {
            for (s, step) in row.as_array().into_iter().flatten().enumerate() {
                let got = out.scores.as_ref().map(|all| all[s].row(b).to_vec());
                let got = got.unwrap_or_default();
                let want: Vec<f32> = step
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(common::float)
                    .collect();
                let bad = got.len() != want.len()
                    || got
                        .iter()
                        .zip(&want)
                        .any(|(&g, &w)| !common::close(g, w, 1e-4));
                if bad {
                    failures.push(format!("{}: scores [{b}][{s}] differ", label(&case)));
                }
            }
        }
    }
    assert!(
        ran >= 40 && refused == 2,
        "ran {ran} cases, refused {refused}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// `[steps][layers]` of tensors against transformers' nested lists, every position, padding
/// included (a padding query's output is what transformers gives it: uniform attention in eager,
/// zero in sdpa; see `models/layers/mask.rs`).
fn check_per_step(
    what: &str,
    got: Option<&Vec<Vec<Tensor>>>,
    want: &Value,
    failures: &mut Vec<String>,
    label: &str,
) -> anyhow::Result<usize> {
    let want = want.as_array().cloned().unwrap_or_default();
    let Some(got) = got else {
        failures.push(format!("{label}: no {what} returned"));
        return Ok(0);
    };
    if got.len() != want.len() {
        failures.push(format!(
            "{label}: {what} has {} steps, want {}",
            got.len(),
            want.len()
        ));
        return Ok(0);
    }
    let mut compared = 0;
    for (s, (got_step, want_step)) in got.iter().zip(&want).enumerate() {
        let want_step = want_step.as_array().cloned().unwrap_or_default();
        if got_step.len() != want_step.len() {
            failures.push(format!(
                "{label}: {what}[{s}] has {} layers, want {}",
                got_step.len(),
                want_step.len()
            ));
            continue;
        }
        for (l, (g, w)) in got_step.iter().zip(&want_step).enumerate() {
            let w: Vec<Vec<Value>> = serde_json::from_value(w.clone())?; // [b][...]
            let g = g.to_dtype(candle_core::DType::F32)?;
            if g.dim(0)? != w.len() {
                failures.push(format!("{label}: {what}[{s}][{l}] batch differs"));
                continue;
            }
            for (b, w_row) in w.iter().enumerate() {
                let g_row = g.get(b)?;
                let shape = g_row.dims().to_vec();
                let g_flat: Vec<f32> = g_row.flatten_all()?.to_vec1()?;
                let w_flat = flatten(&Value::Array(w_row.clone()));
                if g_flat.len() != w_flat.len() {
                    failures.push(format!(
                        "{label}: {what}[{s}][{l}][{b}] shape {shape:?} has {} values, want {}",
                        g_flat.len(),
                        w_flat.len()
                    ));
                    continue;
                }
                for (i, (&gv, &wv)) in g_flat.iter().zip(&w_flat).enumerate() {
                    compared += 1;
                    if (gv - wv).abs() > 1e-4 {
                        failures.push(format!(
                            "{label}: {what}[{s}][{l}][{b}] flat {i}: {gv} != {wv}"
                        ));
                        break;
                    }
                }
            }
        }
    }
    Ok(compared)
}

fn flatten(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![common::float(other)],
    }
}

#[test]
fn hidden_states_and_attentions_match_transformers() -> anyhow::Result<()> {
    let mut pipes = Pipes::default();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases("outputs.json")? {
        let expected = &case["expected"];
        let extra = serde_json::json!({"return_dict_in_generate": true});
        let out = run(&mut pipes, &case, &extra)?;
        ran += 1;
        let name = label(&case);
        if !common::check_sequences(&name, &out, expected, &mut failures)? {
            continue;
        }
        let hidden = check_per_step(
            "hidden_states",
            out.hidden_states.as_ref(),
            &expected["hidden_states"],
            &mut failures,
            &name,
        )?;
        let attentions = check_per_step(
            "attentions",
            out.attentions.as_ref(),
            &expected["attentions"],
            &mut failures,
            &name,
        )?;
        if hidden == 0 {
            failures.push(format!("{name}: no hidden state compared"));
        }
        let eager = case["attn_implementation"] == "eager";
        if (attentions > 0) != eager {
            failures.push(format!("{name}: {attentions} attention weights compared"));
        }
    }
    assert!(ran >= 11, "ran {ran} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn step_outputs_are_kept_only_when_asked() -> anyhow::Result<()> {
    let mut pipes = Pipes::default();
    let case = &cases("outputs.json")?[0];
    // transformers keeps them only with `return_dict_in_generate`.
    let out = run(
        &mut pipes,
        case,
        &serde_json::json!({"return_dict_in_generate": false}),
    )?;
    assert!(out.hidden_states.is_none() && out.attentions.is_none());
    let out = run(
        &mut pipes,
        case,
        &serde_json::json!({"return_dict_in_generate": true, "output_hidden_states": false}),
    )?;
    assert!(out.hidden_states.is_none() && out.attentions.is_some());
    // Modes that do not return them say so rather than return nothing.
    let err = run(
        &mut pipes,
        case,
        &serde_json::json!({"return_dict_in_generate": true, "num_beams": 2}),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("`output_hidden_states` with beam-search decoding"),
        "{err}"
    );
    Ok(())
}

/// Assisted decoding (prompt lookup) and contrastive search over every static cache kind are
/// refused before they run: transformers 5.17 refuses assisted generation ("assisted generate is
/// not supported with Static cache classes", checked on the device machine on CPU and CUDA), and
/// transformers 4.47's contrastive search fails on a Llama `StaticCache` with a `TypeError`
/// (checked on the golden checkpoints). The dynamic and offloaded caches give the golden tokens.
#[test]
fn static_caches_refuse_assisted_and_contrastive_decoding() -> anyhow::Result<()> {
    let golden = |file: &str, name: &str| -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(fixtures().join("golden").join(file))?;
        let all: Vec<Value> = serde_json::from_str(&text)?;
        all.into_iter()
            .find(|c| c["model"] == "llama" && c["name"] == name)
            .ok_or_else(|| anyhow::anyhow!("no llama {name} case in {file}"))
    };
    let cases = [
        (
            "assisted generate",
            golden("generate.json", "prompt_lookup")?,
        ),
        ("contrastive search", golden("legacy.json", "contrastive")?),
    ];
    let mut pipes = Pipes::default();
    let mut failures = Vec::new();
    for (what, case) in &cases {
        for name in [
            "static",
            "offloaded_static",
            "sliding_window",
            "hybrid_chunked",
            "offloaded_hybrid",
            "offloaded_hybrid_chunked",
        ] {
            let extra = serde_json::json!({ "cache_implementation": name });
            let err = match run(&mut pipes, case, &extra) {
                Ok(_) => anyhow::bail!("{what} over {name}: lmgen ran it"),
                Err(e) => e.to_string(),
            };
            anyhow::ensure!(
                err.contains(&format!(
                    "{what} is not supported with Static cache classes"
                )) && err.contains(name),
                "{what} over {name}: {err}"
            );
        }
        for name in ["dynamic", "offloaded"] {
            let extra = serde_json::json!({ "cache_implementation": name });
            let out = run(&mut pipes, case, &extra)?;
            common::check_sequences(
                &format!("{what} {name}"),
                &out,
                &case["expected"],
                &mut failures,
            )?;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Each `cache_implementation` transformers 5.17 accepts gives its tokens: `static` and the
/// deprecated names it maps to a static cache, with `max_cache_len`, in beam search too. The
/// offloaded kinds fail in transformers on a CPU-only machine (offloading needs an accelerator,
/// the golden run answers a CUDA error); lmgen runs them on the host, where they are the inner
/// cache, so they must give the dynamic cache's golden tokens.
#[test]
fn cache_implementations_match_transformers() -> anyhow::Result<()> {
    let mut pipes = Pipes::default();
    let mut failures = Vec::new();
    let all = cases("caches.json")?;
    let (mut ran, mut offloaded) = (0, 0);
    for case in &all {
        let name = case["name"].as_str().unwrap_or_default();
        let expected = match case.get("error").and_then(Value::as_str) {
            Some(e) if e.contains("CUDA") => {
                offloaded += 1;
                let dynamic = all
                    .iter()
                    .find(|c| c["model"] == case["model"] && c["name"] == "batch_dynamic")
                    .map(|c| c["expected"].clone());
                dynamic.unwrap_or_default()
            }
            Some(_) => {
                check_refused(&mut pipes, case, "cache_implementation", &mut failures);
                continue;
            }
            None => case["expected"].clone(),
        };
        let out = run(&mut pipes, case, &serde_json::json!({}))?;
        ran += 1;
        common::check_sequences(
            &format!("{} {name}", case["model"]),
            &out,
            &expected,
            &mut failures,
        )?;
    }
    assert!(
        ran >= 50 && offloaded == 20,
        "ran {ran}, offloaded {offloaded}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// A static cache too small for the call is an error naming `max_cache_len`, never a wrong
/// answer; a larger `max_cache_len` changes nothing.
#[test]
fn a_static_cache_is_sized_from_max_length() -> anyhow::Result<()> {
    let dir = fixtures().join("golden/models/llama");
    let pipe = Pipeline::from_pretrained(dir.to_str().unwrap_or_default())?;
    let input = GenerateInput::single(vec![1, 15, 27, 300]);
    let config = |value: Value| GenerationConfig::from_json(&value, UnknownFields::Reject);
    let dynamic = pipe.generate(&input, &config(serde_json::json!({"max_new_tokens": 6}))?)?;
    let big = config(
        serde_json::json!({"max_new_tokens": 6, "cache_implementation": "static", "max_cache_len": 100}),
    )?;
    assert_eq!(pipe.generate(&input, &big)?.sequences, dynamic.sequences);
    let mut cache = lmgen::cache::StaticCache::new(3);
    let k = Tensor::zeros(
        (1, 2, 4, 16),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let err = lmgen::cache::KvCache::update(&mut cache, 0, &k, &k).unwrap_err();
    assert!(err.to_string().contains("`max_cache_len`"), "{err}");
    Ok(())
}

/// `cache_implementation="quantized"` against transformers' `QuantizedCache` with both backends
/// it supports (optimum-quanto, HQQ): 2, 3, 4 and 8 bits, both axes, group sizes and residual
/// lengths, padded batches, token-exact (the quantization changes the tokens, so this checks
/// its semantics: grouping, rounding, when the residual is flushed), plus its refusals.
///
/// Each row is compared over its `stable_new_tokens`: the tokens transformers itself keeps when
/// its weights are perturbed by 1e-6 (16 seeds). At 2 to 4 bits a float32 rounding difference can
/// move a value across a code boundary, and the tokens after that depend on rounding, not on the
/// cache's semantics; 90% of the generated tokens are stable.
#[test]
fn quantized_cache_matches_transformers() -> anyhow::Result<()> {
    let mut pipes = Pipes::default();
    let mut failures = Vec::new();
    let (mut ran, mut refused, mut compared, mut total) = (0, 0, 0, 0);
    for case in cases("quantized.json")? {
        let name = case["name"].as_str().unwrap_or_default();
        if case.get("error").is_some() {
            let field = match name {
                "refused_sliding" => "only full attention layers",
                _ => "`nbits` for",
            };
            check_refused(&mut pipes, &case, field, &mut failures);
            refused += 1;
            continue;
        }
        let out = run(&mut pipes, &case, &serde_json::json!({}))?;
        ran += 1;
        let want: Vec<Vec<u32>> = serde_json::from_value(case["expected"]["sequences"].clone())?;
        let stable: Vec<usize> = serde_json::from_value(case["stable_new_tokens"].clone())?;
        let prompt = want[0].len() - 12;
        for (r, (got, want)) in out.sequences.iter().zip(&want).enumerate() {
            let n = prompt + stable[r];
            compared += stable[r];
            if got.get(..n) != want.get(..n) {
                failures.push(format!(
                    "{} row {r}: first {} new tokens\n  got  {got:?}\n  want {want:?}",
                    label(&case),
                    stable[r]
                ));
            }
        }
        total += 12 * want.len();
    }
    assert!(ran == 23 && refused == 3, "ran {ran}, refused {refused}");
    assert!(
        compared * 10 >= total * 8,
        "only {compared} of {total} tokens are stable"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// `is_assistant` with `assistant_confidence_threshold` (transformers' `ConfidenceCriteria`):
/// every row stops once row 0's chosen token had a probability below the threshold; 0 turns it
/// off; unset, the threshold is 0.4. Thresholds between the tiny models' token probabilities, so
/// the stops fall at different steps.
#[test]
fn the_assistant_confidence_criterion_matches_transformers() -> anyhow::Result<()> {
    let mut pipes = Pipes::default();
    let mut failures = Vec::new();
    let mut lengths = std::collections::BTreeSet::new();
    for case in cases("confidence.json")? {
        let expected = &case["expected"];
        let out = run(&mut pipes, &case, &serde_json::json!({}))?;
        common::check_sequences(&label(&case), &out, expected, &mut failures)?;
        lengths.insert(out.sequences[0].len() - out.prompt_len);
        let stopped = out
            .finish_reasons
            .iter()
            .all(|r| matches!(r, Some(lmgen::generation::FinishReason::Confidence)));
        let full = out.sequences[0].len() - out.prompt_len == 16;
        if !stopped && !full && !case["name"].as_str().unwrap_or("").ends_with("_off") {
            failures.push(format!(
                "{}: finish reasons {:?}",
                label(&case),
                out.finish_reasons
            ));
        }
    }
    assert!(lengths.len() >= 6, "stops at too few steps: {lengths:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Beam search would feed it beams' scores: refused by name.
    let case = &cases("confidence.json")?[0];
    let err = run(&mut pipes, case, &serde_json::json!({"num_beams": 2}))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("`is_assistant`"), "{err}");
    Ok(())
}
