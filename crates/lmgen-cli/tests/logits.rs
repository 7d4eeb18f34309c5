//! `lmgen logits --request -` on transformers' golden processor cases
//! (`crates/lmgen/tests/fixtures/golden/processors.json`): one processor by its class name, or the
//! list a generation config builds over the golden Llama; a bad line answers an error and the
//! others still run.

use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{json, Value};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/golden"
);

/// Answers of `lmgen logits --request FILE` to `lines`, one JSON value per line (a file: the
/// answers are larger than a pipe holds while the requests are still being written).
fn logits(lines: &[Value]) -> Result<Vec<Value>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("requests.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text)?;
    let out = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .arg("logits")
        .arg("--request")
        .arg(&path)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("LMGEN_LOG")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// A score as the CLI writes it: a number, `null` (-inf), `"nan"` or `"inf"`.
fn score(v: &Value) -> f64 {
    match v {
        Value::Null => f64::NEG_INFINITY,
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        v => v.as_f64().unwrap_or(f64::NAN),
    }
}

fn close(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(g, w)| close(g, w))
        }
        (g, w) => {
            let (g, w) = (score(g), score(w));
            (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-4 * (1.0 + w.abs())
        }
    }
}

#[test]
fn logits_requests_match_transformers_and_a_bad_line_answers_an_error() -> Result<()> {
    let text = std::fs::read_to_string(format!("{GOLDEN}/processors.json"))?;
    let cases: Vec<Value> = serde_json::from_str(&text)?;
    let mut lines: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut line = json!({"input_ids": c["input_ids"], "scores": c["scores"]});
            if c.get("processor").is_some() {
                line["processor"] = json!({"name": c["processor"], "args": c["args"]});
            } else {
                line["generation_config"] = c["generation_config"].clone();
                line["prompt_length"] = c["prompt_length"].clone();
                line["model"] = json!(format!("{GOLDEN}/models/llama"));
            }
            line
        })
        .collect();
    lines.insert(
        1,
        json!({"input_ids": [[1]], "scores": [[0.0]], "processor": {"name": "Nope"}}),
    );
    let answers = logits(&lines)?;
    assert_eq!(answers.len(), lines.len());
    let message = answers[1]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Nope"), "{}", answers[1]);
    let answers = answers.iter().take(1).chain(answers.iter().skip(2));
    for (case, answer) in cases.iter().zip(answers) {
        assert!(
            close(&answer["output"], &case["output"]),
            "{}: {answer}",
            case["name"]
        );
    }
    Ok(())
}
