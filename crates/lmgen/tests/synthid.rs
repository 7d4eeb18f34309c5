//! SynthID text watermarking against transformers 5.17 (`tests/fixtures/synthid/cases.json`, made by
//! `tools/make_synthid_golden.py`): the sampling tables, the processor's scores step by step
//! (its state carried across calls; repeated contexts, skipped first calls, `-inf` scores, debug
//! mode; within 1e-5, or within transformers' own float32 error where that is larger), `generate()` with it on the golden checkpoints (greedy and beam search,
//! batches with padding: token for token, the best processed scores within 1e-5), and the
//! detector side (g-values, both masks exactly, the Bayesian detector's posterior within 1e-5).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lmgen::engine::{generate_batch, BatchOptions};
use lmgen::generation::config::UnknownFields;
use lmgen::generation::logits::{
    BayesianDetectorModel, SynthIDTextWatermarkDetector, SynthIDTextWatermarkLogitsProcessor,
    SynthIDTextWatermarkingConfig,
};
use lmgen::generation::{LogitsProcessor, Scores};
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde::Deserialize;
use serde_json::Value;

/// Processed scores: `|got - want| <= TOL * max(|want|, 1)`.
const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(Deserialize)]
struct Golden {
    tables: Vec<Table>,
    processor: Vec<ProcessorCase>,
    generate: Vec<GenerateCase>,
    detector: Vec<DetectorCase>,
}

#[derive(Deserialize)]
struct Table {
    seed: u64,
    size: usize,
    sum: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
}

#[derive(Deserialize)]
struct ProcessorCase {
    name: String,
    config: Value,
    vocab: usize,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    input_ids: Vec<Vec<u32>>,
    scores: Vec<Vec<Value>>,
    processed: Vec<Vec<Value>>,
    /// `|processed - the same in float64|`: transformers' own float32 error.
    f32_error: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct GenerateCase {
    name: String,
    model: String,
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u8>>,
    watermarking_config: Value,
    generation_config: Value,
    sequences: Vec<Vec<u32>>,
    /// `[step][row]` -> the best `[id, score]` pairs.
    top_scores: Vec<Vec<Vec<(usize, f32)>>>,
}

#[derive(Deserialize)]
struct DetectorCase {
    name: String,
    config: Value,
    eos_token_id: u32,
    input_ids: Vec<Vec<u32>>,
    g_values: Vec<Vec<Vec<u8>>>,
    context_repetition_mask: Vec<Vec<u8>>,
    eos_token_mask: Vec<Vec<bool>>,
    posterior: Option<Vec<f32>>,
}

fn golden() -> Result<Golden> {
    let text = std::fs::read_to_string(fixtures().join("synthid/cases.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// A golden float: a number, or `"-inf"` / `"inf"`.
fn float(v: &Value) -> Result<f32> {
    match v {
        Value::Number(n) => Ok(n.as_f64().context("number")? as f32),
        Value::String(s) if s == "-inf" => Ok(f32::NEG_INFINITY),
        Value::String(s) if s == "inf" => Ok(f32::INFINITY),
        _ => bail!("not a float: {v}"),
    }
}

fn close(got: f32, want: f32) -> bool {
    got == want || (got - want).abs() <= TOL * want.abs().max(1.0)
}

fn processor(config: &Value) -> Result<SynthIDTextWatermarkLogitsProcessor> {
    Ok(SynthIDTextWatermarkLogitsProcessor::new(
        SynthIDTextWatermarkingConfig::from_json(config)?,
    )?)
}

#[test]
fn sampling_tables_match_torch_randint() -> Result<()> {
    let g = golden()?;
    for t in &g.tables {
        let config = serde_json::json!({"ngram_len": 2, "keys": [1],
            "sampling_table_seed": t.seed, "sampling_table_size": t.size});
        let p = processor(&config)?;
        let table = p.sampling_table();
        assert_eq!(table.len(), t.size);
        assert_eq!(
            table.iter().map(|&b| b as usize).sum::<usize>(),
            t.sum,
            "seed {}",
            t.seed
        );
        assert_eq!(&table[..32], t.head.as_slice(), "seed {}", t.seed);
        assert_eq!(&table[t.size - 32..], t.tail.as_slice(), "seed {}", t.seed);
    }
    assert_eq!(g.tables.len(), 3);
    Ok(())
}

#[test]
fn processor_matches_transformers_step_by_step() -> Result<()> {
    let g = golden()?;
    let mut failures = Vec::new();
    let mut unchanged_rows = 0;
    for case in &g.processor {
        let p = processor(&case.config)?;
        for (s, step) in case.steps.iter().enumerate() {
            let batch = step.scores.len();
            let mut data = Vec::new();
            for row in &step.scores {
                for v in row {
                    data.push(float(v)?);
                }
            }
            let before = data.clone();
            let mut scores = Scores::new(data, batch, case.vocab);
            p.process(&step.input_ids, &mut scores)?;
            for (r, row) in step.processed.iter().enumerate() {
                let got = scores.row(r);
                unchanged_rows += usize::from(got == &before[r * case.vocab..][..case.vocab]);
                for (v, want) in row.iter().enumerate() {
                    let want = float(want)?;
                    // lmgen computes the tournament in float64: it may be off transformers by as
                    // much as transformers' float32 is off the float64 answer (tiny probabilities).
                    let own = step.f32_error[r][v];
                    if !(close(got[v], want)
                        || (got[v] - want).abs() <= TOL * want.abs().max(1.0) + own)
                    {
                        failures.push(format!(
                            "{} step {s} row {r} token {v}: got {} want {want}",
                            case.name, got[v]
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(g.processor.len() >= 8, "{} cases", g.processor.len());
    // The repeated-context and skip-first cases leave rows as they were.
    assert!(
        unchanged_rows >= 10,
        "{unchanged_rows} rows left unwatermarked"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn generate_with_synthid_matches_transformers() -> Result<()> {
    let g = golden()?;
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut failures = Vec::new();
    for case in &g.generate {
        if !pipes.contains_key(&case.model) {
            let dir = fixtures().join("golden/models").join(&case.model);
            let pipe = Pipeline::from_pretrained(dir.to_str().context("path")?)?;
            pipes.insert(case.model.clone(), pipe);
        }
        let pipe = &pipes[&case.model];
        let mut config = case.generation_config.clone();
        config["watermarking_config"] = case.watermarking_config.clone();
        config["output_scores"] = Value::Bool(true);
        config["return_dict_in_generate"] = Value::Bool(true);
        let overrides = GenerationConfig::from_json(&config, UnknownFields::Reject)?;
        let input = GenerateInput {
            input_ids: case.input_ids.clone(),
            attention_mask: Some(case.attention_mask.clone()),
        };
        let out = pipe.generate(&input, &overrides)?;
        if out.sequences != case.sequences {
            failures.push(format!(
                "{}: sequences\n  got  {:?}\n  want {:?}",
                case.name, out.sequences, case.sequences
            ));
            continue;
        }
        let scores = out.scores.as_ref().context("scores")?;
        assert_eq!(scores.len(), case.top_scores.len(), "{}", case.name);
        for (s, (got, want)) in scores.iter().zip(&case.top_scores).enumerate() {
            for (r, pairs) in want.iter().enumerate() {
                for &(id, value) in pairs {
                    let v = got.row(r)[id];
                    if !close(v, value) {
                        failures.push(format!(
                            "{} step {s} row {r} token {id}: got {v} want {value}",
                            case.name
                        ));
                    }
                }
            }
        }
    }
    assert!(g.generate.len() >= 6, "{} cases", g.generate.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn detector_side_matches_transformers() -> Result<()> {
    let g = golden()?;
    let detector = BayesianDetectorModel::from_pretrained(&fixtures().join("synthid/detector"))?;
    assert_eq!(detector.watermarking_depth(), 4);
    assert!(detector.watermarking_config.is_some());
    let mut posteriors = 0;
    for case in &g.detector {
        let p = processor(&case.config)?;
        let ids = &case.input_ids;
        assert_eq!(p.compute_g_values(ids)?, case.g_values, "{}", case.name);
        let rep: Vec<Vec<u8>> = p
            .compute_context_repetition_mask(ids)?
            .iter()
            .map(|r| r.iter().map(|&b| u8::from(b)).collect())
            .collect();
        assert_eq!(rep, case.context_repetition_mask, "{}", case.name);
        assert_eq!(
            p.compute_eos_token_mask(ids, case.eos_token_id)?,
            case.eos_token_mask,
            "{}",
            case.name
        );
        if let Some(want) = &case.posterior {
            let d = SynthIDTextWatermarkDetector::new(detector.clone(), p, case.eos_token_id)?;
            let got = d.detect(ids)?;
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(want) {
                assert!(
                    (a - b).abs() <= TOL,
                    "{}: posterior {got:?} want {want:?}",
                    case.name
                );
            }
            posteriors += got.len();
        }
    }
    assert!(
        g.detector.len() >= 6 && posteriors >= 9,
        "{posteriors} posteriors"
    );
    Ok(())
}

/// The detector's config holds the `watermarking_config` it was trained for; a depth that differs
/// from the processor's keys is refused.
#[test]
fn detector_and_processor_must_agree() -> Result<()> {
    let detector = BayesianDetectorModel::from_pretrained(&fixtures().join("synthid/detector"))?;
    let config = detector
        .watermarking_config
        .clone()
        .context("watermarking_config")?;
    let p = processor(&config)?;
    assert_eq!(p.config().keys.len(), 4);
    let three = processor(&serde_json::json!({"ngram_len": 2, "keys": [1, 2, 3]}))?;
    let e = SynthIDTextWatermarkDetector::new(detector, three, 2).unwrap_err();
    assert!(e.to_string().contains("`watermarking_depth` is 4"), "{e}");
    let short = p.compute_g_values(&[vec![1]]).unwrap_err();
    assert!(short.to_string().contains("`ngram_len`"), "{short}");
    let ragged = p
        .compute_g_values(&[vec![1, 2, 3], vec![1, 2]])
        .unwrap_err();
    assert!(ragged.to_string().contains("`input_ids`"), "{ragged}");
    Ok(())
}

/// The continuous batching engine builds a processor per request, so each request's SynthID
/// state is its own: three prompts generated together equal `generate()` on each alone, and the
/// watermark changed what greedy search picks.
#[test]
fn the_engine_keeps_a_watermark_state_per_request() -> Result<()> {
    let dir = fixtures().join("golden/models/llama");
    let pipe = Pipeline::from_pretrained(dir.to_str().context("path")?)?;
    let config = |watermark: bool| -> Result<GenerationConfig> {
        let mut v = serde_json::json!({"max_new_tokens": 10, "do_sample": false});
        if watermark {
            v["watermarking_config"] = serde_json::json!(
                {"ngram_len": 3, "keys": [654, 400, 836, 123], "context_history_size": 4});
        }
        Ok(pipe.config_with(&GenerationConfig::from_json(&v, UnknownFields::Reject)?))
    };
    let (marked, plain) = (config(true)?, config(false)?);
    let prompts: Vec<Vec<u32>> = vec![vec![1, 15, 27, 300, 42], vec![1, 99, 7], vec![5; 6]];
    let model: std::sync::Arc<dyn lmgen::models::CausalLM> =
        std::sync::Arc::from(Pipeline::from_pretrained(dir.to_str().context("path")?)?.model);
    let outs = generate_batch(model, &prompts, &marked, BatchOptions::default())?;
    let mut differs = 0;
    for (prompt, out) in prompts.iter().zip(&outs) {
        let input = GenerateInput::single(prompt.clone());
        let alone = lmgen::generate(pipe.model.as_ref(), &input, &marked)?;
        assert_eq!(
            out.generated_tokens,
            alone.generated(0),
            "prompt {prompt:?}"
        );
        let unmarked = lmgen::generate(pipe.model.as_ref(), &input, &plain)?;
        differs += usize::from(unmarked.generated(0) != alone.generated(0));
    }
    assert!(differs > 0, "the watermark changed no greedy output");
    Ok(())
}
