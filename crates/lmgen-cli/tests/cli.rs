//! The `lmgen` binary on good and bad input: a bad model path, flag, file or request line is a
//! message on stderr (or an `{"error": ...}` line) that names what was wrong, never a panic.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};
use serde_json::{json, Value};

const LLAMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/golden/models/llama"
);
/// Tokens of one prompt the shipped llama checkpoint does not end within a few steps.
const PROMPT: [u32; 3] = [1, 15, 27];

/// Runs `lmgen args...` with `stdin`, in an environment with an empty Hugging Face cache.
fn lmgen(args: &[&str], stdin: &str) -> Result<Output> {
    lmgen_with_cache(args, stdin, tempfile::tempdir()?.path())
}

/// Runs `lmgen args...` with `stdin`, `HF_HUB_CACHE=cache` and `HF_HUB_OFFLINE=1` (no test
/// downloads; `tests/hub.rs` serves a fake Hub for that).
fn lmgen_with_cache(args: &[&str], stdin: &str, cache: &Path) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(args)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("LMGEN_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    Ok(child.wait_with_output()?)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failed run whose stderr names every one of `parts` and shows no panic.
#[track_caller]
fn assert_fails_naming(out: &Output, parts: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for part in parts {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}

/// Answers of `lmgen generate --request - extra...` to `lines`, one JSON value per line.
fn requests(lines: &[Value], extra: &[&str]) -> Result<Vec<Value>> {
    let stdin: String = lines.iter().map(|l| format!("{l}\n")).collect();
    requests_raw(&stdin, extra)
}

fn requests_raw(stdin: &str, extra: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec!["generate", "--model", LLAMA, "--request", "-"];
    args.extend_from_slice(extra);
    let out = lmgen(&args, stdin)?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// The `error.message` of a response line (empty when the line is not an error).
fn error_message(response: &Value) -> &str {
    response["error"]["message"].as_str().unwrap_or_default()
}

/// New tokens in each row of a response.
fn new_tokens(response: &Value, prompt_len: usize) -> Vec<usize> {
    let rows = response["sequences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .map(|r| r.as_array().map_or(0, Vec::len).saturating_sub(prompt_len))
        .collect()
}

#[test]
fn help_mentions_generate() -> Result<()> {
    let out = lmgen(&["--help"], "")?;
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)?.contains("generate"));
    Ok(())
}

#[test]
fn default_model_prints_text() -> Result<()> {
    let out = lmgen(&["generate"], "")?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.is_empty());
    let out = lmgen(
        &["generate", "--prompt", "Hello", "--max-new-tokens", "4"],
        "",
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.starts_with("Hello") && text.len() > "Hello\n".len(),
        "{text:?}"
    );
    Ok(())
}

/// The README's run command, greedy: the default model (`models/tiny-austen`) prints the prompt
/// and the continuation transformers produced (golden case `greedy_0` of `shipped_model.json`).
#[test]
fn default_model_continues_as_transformers() -> Result<()> {
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/shipped_model.json"
    ))?)?;
    let case = golden["cases"]
        .as_array()
        .context("cases")?
        .iter()
        .find(|c| c["name"] == "greedy_0")
        .context("greedy_0")?;
    let prompt = case["prompts"][0].as_str().context("prompt")?;
    let text = case["texts"][0].as_str().context("text")?;
    let max_new = case["generation_config"]["max_new_tokens"].to_string();
    let args = [
        "generate",
        "--prompt",
        prompt,
        "--do-sample",
        "false",
        "--max-new-tokens",
        &max_new,
    ];
    let out = lmgen(&args, "")?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout)?.trim_end(),
        format!("{prompt}{text}")
    );
    Ok(())
}

#[test]
fn a_missing_model_directory_is_named() -> Result<()> {
    let out = lmgen(
        &["generate", "--model", "/nonexistent", "--prompt", "Hi"],
        "",
    )?;
    assert_fails_naming(&out, &["`/nonexistent`", "not found"]);
    Ok(())
}

#[test]
fn offline_a_model_id_not_in_the_cache_lists_where_it_looked() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let args = ["generate", "--model", "org/name", "--prompt", "Hi"];
    let out = lmgen_with_cache(&args, "", cache.path())?;
    let repo = cache.path().join("models--org--name");
    assert_fails_naming(
        &out,
        &[
            "model `org/name` not found",
            "looked in",
            &repo.join("refs/main").display().to_string(),
            &repo.join("snapshots").display().to_string(),
            "offline mode is on (HF_HUB_OFFLINE=1",
        ],
    );
    Ok(())
}

#[test]
fn bad_flags_and_files_are_named() -> Result<()> {
    let out = lmgen(&["generate", "--device", "tpu"], "")?;
    assert_fails_naming(&out, &["`--device tpu` is not a device"]);
    let out = lmgen(&["generate", "--device", "cuda:x"], "")?;
    assert_fails_naming(&out, &["`--device cuda:x` is not a device", "GPU index"]);
    if !cfg!(feature = "cuda") {
        let out = lmgen(&["generate", "--device", "cuda"], "")?;
        assert_fails_naming(
            &out,
            &["`--device cuda` is not available", "--features cuda"],
        );
    }
    let out = lmgen(&["generate", "--max-new-tokens", "0", "--prompt", "Hi"], "")?;
    assert_fails_naming(&out, &["`max_new_tokens` must be greater than 0"]);
    let out = lmgen(&["generate", "--request", "/nonexistent.jsonl"], "")?;
    assert_fails_naming(&out, &["cannot open `/nonexistent.jsonl`"]);

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("gen.json");
    std::fs::write(&file, "{\"max_new")?;
    let path = file.to_str().context("utf-8")?;
    let out = lmgen(&["generate", "--generation-config", path], "")?;
    assert_fails_naming(&out, &[path, "is not valid JSON"]);
    std::fs::write(&file, r#"{"top_k": "many"}"#)?;
    let out = lmgen(&["generate", "--generation-config", path], "")?;
    assert_fails_naming(&out, &[path, "`top_k` must be"]);
    Ok(())
}

#[test]
fn a_bad_request_line_answers_an_error_and_the_others_still_run() -> Result<()> {
    let good = json!({"input_ids": [PROMPT], "generation_config": {"max_new_tokens": 2}});
    let unknown = json!({"input_ids": [PROMPT], "foo": 1});
    let answers = requests(&[good.clone(), unknown, good], &[])?;
    assert_eq!(answers.len(), 3);
    assert!(
        error_message(&answers[1]).contains("unknown field `foo`"),
        "{}",
        answers[1]
    );
    assert!(answers[1].get("sequences").is_none());
    for i in [0, 2] {
        assert_eq!(new_tokens(&answers[i], PROMPT.len()), [2], "{}", answers[i]);
    }
    Ok(())
}

#[test]
fn bad_request_lines_name_the_field() -> Result<()> {
    let stdin = [
        json!({"input_ids": [PROMPT], "generation_config": {"max_new_tokens": "x"}}).to_string(),
        "{\"input_ids\": [[1, 2]".to_string(),
        json!({"input_ids": [[1, -5]]}).to_string(),
        json!({"input_ids": [[1, 800]]}).to_string(),
        json!({"input_ids": [PROMPT], "generation_config": {"max_new_token": 3}}).to_string(),
        json!({"input_ids": [PROMPT], "generation_config": {"num_beams": 2}, "return": {"stream_chunks": true}}).to_string(),
        json!({"input_ids": [PROMPT], "return": {"logit": true}}).to_string(),
        json!({"input_ids": [PROMPT], "prompts": ["Hi"]}).to_string(),
        json!({"input_ids": [PROMPT], "decoder_input_ids": [[1]]}).to_string(),
        json!({"model": "/nonexistent", "input_ids": [PROMPT]}).to_string(),
        "[1, 2]".to_string(),
    ];
    let expected = [
        "`max_new_tokens` must be a non-negative integer, got \"x\"",
        "invalid request: not valid JSON",
        "`input_ids[0][1]`: invalid value: integer `-5`",
        "token id 800 in row 0 is outside the vocabulary",
        "unknown generation config field `max_new_token`",
        "a streamer cannot be used with beam search",
        "`return.logit`: unknown field `logit`",
        "give one of `input_ids`, `prompts`, `encoder_input_ids` and `input_features`",
        "`decoder_input_ids` is for encoder-decoder models",
        "`/nonexistent`",
        "a request must be a JSON object",
    ];
    let answers = requests_raw(&(stdin.join("\n") + "\n"), &[])?;
    assert_eq!(answers.len(), expected.len());
    for (answer, want) in answers.iter().zip(expected) {
        let message = error_message(answer);
        assert!(message.contains(want), "{want:?} not in {answer}");
        assert!(!message.contains("panicked"), "{answer}");
    }
    Ok(())
}

#[test]
fn logits_have_shape_batch_steps_vocab() -> Result<()> {
    let request = json!({
        "input_ids": [[1, 15, 27], [1, 300, 42]],
        "generation_config": {"max_new_tokens": 3},
        "return": {"logits": true},
    });
    let answers = requests(&[request], &[])?;
    let logits = answers[0]["logits"].as_array().context("logits")?;
    assert_eq!(logits.len(), 2, "batch");
    for row in logits {
        let steps = row.as_array().context("steps")?;
        assert_eq!(steps.len(), 3, "steps");
        for step in steps {
            assert_eq!(step.as_array().map(Vec::len), Some(800), "vocab");
        }
    }
    Ok(())
}

#[test]
fn the_generation_config_file_and_flags_override_the_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("gen.json");
    let path = file.to_str().context("utf-8")?;
    let line = json!({"input_ids": [PROMPT]});
    let count = |extra: &[&str], line: &Value| -> Result<Vec<usize>> {
        Ok(new_tokens(
            &requests(std::slice::from_ref(line), extra)?[0],
            PROMPT.len(),
        ))
    };
    // Flags over the checkpoint (which sets no length: 20 new tokens).
    assert_eq!(count(&[], &line)?, [20]);
    assert_eq!(count(&["--max-new-tokens", "3"], &line)?, [3]);
    // The file over the checkpoint, flags over the file, the request line over both.
    std::fs::write(&file, r#"{"max_new_tokens": 2}"#)?;
    assert_eq!(count(&["--generation-config", path], &line)?, [2]);
    let both = ["--generation-config", path, "--max-new-tokens", "3"];
    assert_eq!(count(&both, &line)?, [3]);
    let per_line = json!({"input_ids": [PROMPT], "generation_config": {"max_new_tokens": 1}});
    assert_eq!(count(&both, &per_line)?, [1]);

    // A field the checkpoint sets (`eos_token_id`) is overridden by the file: stop on the 2nd token.
    let three = &requests(std::slice::from_ref(&line), &["--max-new-tokens", "3"])?[0];
    let second = three["sequences"][0][PROMPT.len() + 1].clone();
    std::fs::write(&file, json!({"eos_token_id": second}).to_string())?;
    let answer = &requests(&[line], &["--generation-config", path])?[0];
    assert_eq!(new_tokens(answer, PROMPT.len()), [2], "{answer}");
    assert_eq!(answer["finish_reasons"], json!(["stop"]));
    Ok(())
}

#[test]
fn text_mode_honours_max_new_tokens() -> Result<()> {
    // Through the text path: same tokens as the JSON-lines answer for the same prompt.
    let answer = &requests(
        &[json!({"prompts": ["Hello"], "generation_config": {"max_new_tokens": 3}})],
        &[],
    )?[0];
    let text = answer["text"][0].as_str().context("text")?;
    let out = lmgen(
        &[
            "generate",
            "--model",
            LLAMA,
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "3",
        ],
        "",
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout)?, format!("Hello{text}\n"));
    Ok(())
}

#[test]
fn contrastive_and_dola_flags_select_their_modes() -> Result<()> {
    let line = json!({"input_ids": [PROMPT], "generation_config": {"max_new_tokens": 6}});
    let with = |config: Value| json!({"input_ids": [PROMPT], "generation_config": config});
    let cases = [
        (
            vec!["--penalty-alpha", "0.6", "--top-k", "4"],
            json!({"max_new_tokens": 6, "penalty_alpha": 0.6, "top_k": 4}),
        ),
        (
            vec!["--dola-layers", "0,1"],
            json!({"max_new_tokens": 6, "dola_layers": [0, 1]}),
        ),
        (
            vec!["--dola-layers", "high"],
            json!({"max_new_tokens": 6, "dola_layers": "high"}),
        ),
    ];
    let greedy = &requests(std::slice::from_ref(&line), &[])?[0];
    for (flags, config) in cases {
        let by_flags = &requests(std::slice::from_ref(&line), &flags)?[0];
        let by_line = &requests(&[with(config)], &[])?[0];
        assert_eq!(by_flags["sequences"], by_line["sequences"], "{flags:?}");
        assert_ne!(by_flags["sequences"], greedy["sequences"], "{flags:?}");
    }
    let bad = &requests(std::slice::from_ref(&line), &["--dola-layers", "middle"])?[0];
    assert!(
        error_message(bad).contains("`dola_layers` must be either"),
        "{bad}"
    );
    Ok(())
}

/// `--gguf-file`: the golden llama's f32 GGUF (written by llama.cpp's gguf-py) generates what its
/// safetensors do; a missing file, or a bare `.gguf` path without a tokenizer beside it, is named.
#[test]
fn gguf_file_generates_as_the_safetensors_checkpoint() -> Result<()> {
    let gguf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/gguf/llama-f32.gguf"
    );
    let line = json!({"input_ids": [PROMPT], "generation_config": {"max_new_tokens": 8, "do_sample": false}});
    let want = requests(std::slice::from_ref(&line), &[])?;
    let got = requests(std::slice::from_ref(&line), &["--gguf-file", gguf])?;
    assert_eq!(new_tokens(&got[0], PROMPT.len()), [8], "{}", got[0]);
    assert_eq!(got[0]["sequences"], want[0]["sequences"]);

    let out = lmgen(
        &["generate", "--model", LLAMA, "--gguf-file", "missing.gguf"],
        "",
    )?;
    assert_fails_naming(&out, &["missing.gguf"]);
    let out = lmgen(&["generate", "--model", gguf], "")?;
    assert_fails_naming(&out, &["no tokenizer.json", "GGUF metadata"]);
    Ok(())
}

#[test]
fn structured_output_from_flags_and_requests_matches_the_grammar() -> Result<()> {
    // JSON-lines: a regex, a JSON schema and an invalid grammar (an error naming it).
    let schema = json!({
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
        "required": ["ok", "n"],
        "additionalProperties": false,
    });
    let answers = requests(
        &[
            json!({"prompts": ["Hello"], "seed": 1, "structured": {"regex": "(yes|no)!"},
                   "generation_config": {"do_sample": true, "max_new_tokens": 10}}),
            json!({"prompts": ["Hello"], "structured": {"json_schema": schema},
                   "generation_config": {"max_new_tokens": 60}}),
            json!({"prompts": ["Hello"], "structured": {"regex": "("}}),
            json!({"prompts": ["Hello"], "seed": 2, "structured": {"gbnf": "root ::= (\"yes\" | \"no\") \"!\"{1,2}\n"},
                   "generation_config": {"do_sample": true, "max_new_tokens": 10}}),
            json!({"prompts": ["Hello"], "structured": {"gbnf": "root ::= \"a\"\nroot ::= \"b\""}}),
        ],
        &[],
    )?;
    let text = answers[3]["text"][0].as_str().context("text")?;
    assert!(["yes!", "no!", "yes!!", "no!!"].contains(&text), "{text:?}");
    assert!(
        error_message(&answers[4])
            .contains("`gbnf`: line 2, column 1: rule `root` is defined twice"),
        "{}",
        answers[4]
    );
    let text = answers[0]["text"][0].as_str().context("text")?;
    assert!(text == "yes!" || text == "no!", "{text:?}");
    let value: Value = serde_json::from_str(answers[1]["text"][0].as_str().context("text")?)?;
    assert!(value["ok"].is_boolean() && [1, 2, 3].contains(&value["n"].as_i64().unwrap_or(0)));
    assert_eq!(value.as_object().map(|o| o.len()), Some(2), "{value}");
    assert!(
        error_message(&answers[2]).contains("`regex` does not compile"),
        "{}",
        answers[2]
    );
    // Flags: the same regex through the text path.
    let out = lmgen(
        &[
            "generate",
            "--model",
            LLAMA,
            "--prompt",
            "Hello",
            "--regex",
            "(yes|no)!",
            "--max-new-tokens",
            "10",
        ],
        "",
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout)?;
    assert!(
        printed == "Helloyes!\n" || printed == "Hellono!\n",
        "{printed:?}"
    );
    // `--gbnf FILE`: the same language as GBNF.
    let dir = tempfile::tempdir()?;
    let gbnf = dir.path().join("answer.gbnf");
    std::fs::write(
        &gbnf,
        "root ::= answer \"!\"\nanswer ::= \"yes\" | \"no\"\n",
    )?;
    let out = lmgen(
        &[
            "generate",
            "--model",
            LLAMA,
            "--prompt",
            "Hello",
            "--gbnf",
            gbnf.to_str().context("path")?,
            "--max-new-tokens",
            "10",
        ],
        "",
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout)?;
    assert!(
        printed == "Helloyes!\n" || printed == "Hellono!\n",
        "{printed:?}"
    );
    Ok(())
}

/// The Gemma 2 legacy-mode cases (transformers 4.47, `golden-legacy-gemma2/`) through the
/// JSON-lines interface: one `lmgen generate --attn-implementation eager --request -` run per
/// checkpoint, every case a line; sequences token for token, and a refused case answers an error.
#[test]
fn gemma2_legacy_cases_through_json_lines() -> Result<()> {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/golden-legacy-gemma2"
    );
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(format!(
        "{root}/legacy_gemma2.json"
    ))?)?;
    let mut by_model: std::collections::BTreeMap<&str, Vec<&Value>> = Default::default();
    for case in &cases {
        by_model
            .entry(case["model"].as_str().unwrap_or_default())
            .or_default()
            .push(case);
    }
    assert_eq!(by_model.len(), 3);
    for (model, cases) in by_model {
        let lines: String = cases
            .iter()
            .map(|case| {
                let mut line = json!({"generation_config": case["generation_config"]});
                if case.get("error").is_some() {
                    line["prompts"] = case["prompts"].clone();
                } else {
                    line["input_ids"] = case["input_ids"].clone();
                    line["attention_mask"] = case["attention_mask"].clone();
                }
                format!("{line}\n")
            })
            .collect();
        let dir = format!("{root}/models/{model}");
        let args = [
            "generate",
            "--model",
            &dir,
            "--attn-implementation",
            "eager",
            "--request",
            "-",
        ];
        let out = lmgen(&args, &lines)?;
        assert!(out.status.success(), "{}", stderr(&out));
        let answers: Vec<Value> = String::from_utf8(out.stdout)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(answers.len(), cases.len(), "{model}");
        for (case, answer) in cases.iter().zip(&answers) {
            let label = format!("{model}/{}", case["name"]);
            if case.get("error").is_some() {
                assert!(!error_message(answer).is_empty(), "{label}: {answer}");
            } else {
                assert_eq!(
                    answer["sequences"], case["expected"]["sequences"],
                    "{label}: {answer}"
                );
            }
        }
    }
    Ok(())
}

/// `token_healing` through JSON lines: the pipeline passes its tokenizer, so gemma2's golden batch
/// heals as in transformers; llama's tokenizer has no pad token, which transformers refuses too.
#[test]
fn token_healing_through_json_lines() -> Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../lmgen/tests/fixtures");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(format!(
        "{root}/token_healing/cases.json"
    ))?)?;
    let case = cases
        .iter()
        .find(|c| c["name"] == "gemma2_batch")
        .context("gemma2_batch")?;
    let mut config = case["generation_config"].clone();
    config["token_healing"] = json!(true);
    let line = json!({"input_ids": case["input_ids"], "attention_mask": case["attention_mask"],
                      "generation_config": config});
    let dir = format!("{root}/golden/models/gemma2");
    let out = lmgen(
        &["generate", "--model", &dir, "--request", "-"],
        &format!("{line}\n"),
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        answer["sequences"], case["expected"]["sequences"],
        "{answer}"
    );

    let line = json!({"input_ids": [PROMPT], "generation_config": {"token_healing": true}});
    let answers = requests(&[line], &[])?;
    let message = error_message(&answers[0]);
    assert!(
        message.contains("`token_healing`") && message.contains("`pad_token`"),
        "{}",
        answers[0]
    );
    Ok(())
}

/// A nested JSON array of numbers, flattened.
fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap_or(f64::NAN)],
    }
}

/// `"return": {"hidden_states": true, "attentions": true}` answers what transformers'
/// `generate(output_hidden_states=True, output_attentions=True)` returns, nested as it nests
/// them ([step][layer][b]...), within 1e-4: the golden case of Mistral (sliding window 12) with
/// eager attention and `prefill_chunk_size` 5, a prompt without padding.
#[test]
fn hidden_states_and_attentions_in_json_lines_match_transformers() -> Result<()> {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/genconfig/outputs.json"
    );
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(fixture)?)?;
    let case = cases["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["model"] == "mistral" && c["name"] == "eager_chunked")
        .context("the mistral eager_chunked case")?;
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/golden/models/mistral"
    );
    let request = json!({
        "model": model,
        "input_ids": case["input_ids"],
        "generation_config": case["generation_config"],
        "return": {"hidden_states": true, "attentions": true},
    });
    let answer = &requests(&[request], &["--attn-implementation", "eager"])?[0];
    assert_eq!(
        answer["sequences"], case["expected"]["sequences"],
        "{answer}"
    );
    for key in ["hidden_states", "attentions"] {
        let (got, want) = (&answer[key], &case["expected"][key]);
        let steps = |v: &Value| v.as_array().map(Vec::len);
        assert_eq!(steps(got), steps(want), "{key}: steps");
        for (s, (g, w)) in got
            .as_array()
            .into_iter()
            .flatten()
            .zip(want.as_array().into_iter().flatten())
            .enumerate()
        {
            assert_eq!(steps(g), steps(w), "{key}[{s}]: layers");
            let (g, w) = (flat(g), flat(w));
            assert_eq!(g.len(), w.len(), "{key}[{s}]: values");
            let worst = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst <= 1e-4, "{key}[{s}]: max |diff| {worst}");
        }
    }
    Ok(())
}

/// The JSON-lines interface runs the genconfig golden cases (made with transformers 5.17) through
/// `generation_config` alone: chunked prefill, static and quantized caches, the assistant's
/// confidence stop; token-exact (the quantized case is one transformers keeps under weight noise).
#[test]
fn genconfig_cases_in_json_lines_match_transformers() -> Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../lmgen/tests/fixtures");
    let pick = [
        ("prefill_chunk.json", "mistral", "batch_chunk3"),
        ("prefill_chunk.json", "gemma2", "beam_chunk4"),
        ("caches.json", "gemma2", "batch_sliding_window"),
        ("caches.json", "qwen2", "beam_static"),
        ("quantized.json", "llama", "quantized_quanto4"),
        ("quantized.json", "gpt2", "quantized_hqq2_axis1"),
        ("confidence.json", "qwen2", "batch_confidence_0.058"),
    ];
    let mut lines = Vec::new();
    let mut wanted = Vec::new();
    for (file, model, name) in pick {
        let text = std::fs::read_to_string(format!("{dir}/genconfig/{file}"))?;
        let cases: Value = serde_json::from_str(&text)?;
        let case = cases["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["model"] == model && c["name"] == name)
            .with_context(|| format!("{file}: {model}/{name}"))?;
        lines.push(json!({
            "model": format!("{dir}/golden/models/{model}"),
            "input_ids": case["input_ids"],
            "attention_mask": case["attention_mask"],
            "generation_config": case["generation_config"],
        }));
        wanted.push((name, case["expected"]["sequences"].clone()));
    }
    let answers = requests(&lines, &[])?;
    for ((name, want), got) in wanted.iter().zip(&answers) {
        assert_eq!(&got["sequences"], want, "{name}: {got}");
    }
    Ok(())
}

/// An encoder-decoder model from text prompts: each prompt is the encoder's input (a batch padded
/// on the right, as BART's tokenizer pads) and is not printed back; the output is transformers'
/// decoded decoder sequence (start token and special tokens skipped), streamed or not
/// (`tests/fixtures/bart_cli.json`, from the golden-seq2seq BART checkpoint's cases).
#[test]
fn encoder_decoder_prints_the_decoded_output_alone() -> Result<()> {
    const BART: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/golden-seq2seq/models/bart"
    );
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bart_cli.json"
    ))?)?;
    for case in golden["cases"].as_array().context("cases")? {
        let strings = |key: &str| -> Result<Vec<&str>> {
            Ok(case[key]
                .as_array()
                .with_context(|| key.to_string())?
                .iter()
                .filter_map(Value::as_str)
                .collect())
        };
        let (prompts, texts) = (strings("prompts")?, strings("texts")?);
        let mut args = vec!["generate", "--model", BART];
        for p in &prompts {
            args.extend(["--prompt", p]);
        }
        args.extend(strings("args")?);
        let want = match texts.as_slice() {
            [one] => one.to_string(),
            many => many
                .iter()
                .enumerate()
                .map(|(i, t)| format!("[{i}] {t}"))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        // One prompt streams unless `--no-stream`; a batch prints at the end either way.
        for stream in [true, false] {
            let mut args = args.clone();
            if !stream {
                args.push("--no-stream");
            }
            let out = lmgen(&args, "")?;
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(
                String::from_utf8(out.stdout)?.trim_end_matches('\n'),
                want,
                "{} (stream: {stream})",
                case["case"]
            );
        }
    }
    Ok(())
}

/// A Marian checkpoint, which ships sentencepiece models and vocab.json instead of tokenizer.json:
/// `lmgen generate --model <folder> --prompt <text>` prints transformers' decoded greedy output
/// (MarianTokenizer, `golden-seq2seq/marian-text/cases.json`), streamed or not.
#[test]
fn marian_checkpoint_translates_text_prompts() -> Result<()> {
    const MARIAN_TEXT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/golden-seq2seq/marian-text"
    );
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(format!(
        "{MARIAN_TEXT}/cases.json"
    ))?)?;
    let model = format!("{MARIAN_TEXT}/marian_text");
    for case in cases["generate"].as_array().context("generate")? {
        let prompt = case["prompt"].as_str().context("prompt")?;
        let want = case["text"].as_str().context("text")?;
        for extra in [&[][..], &["--no-stream"][..]] {
            let mut args = vec!["generate", "--model", &model, "--prompt", prompt];
            args.extend(extra);
            let out = lmgen(&args, "")?;
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(
                String::from_utf8(out.stdout)?.trim_end_matches('\n'),
                want,
                "{prompt:?} {extra:?}"
            );
        }
    }
    Ok(())
}

/// JSON lines on an encoder-decoder model: `encoder_input_ids` (+ mask) and `decoder_input_ids`,
/// or `input_ids` read as the encoder's input, give transformers' golden T5 sequences.
#[test]
fn encoder_decoder_requests_through_json_lines() -> Result<()> {
    const SEQ2SEQ: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/golden-seq2seq"
    );
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(format!(
        "{SEQ2SEQ}/generate.json"
    ))?)?;
    let model = format!("{SEQ2SEQ}/models/t5");
    let mut lines = Vec::new();
    let mut expected = Vec::new();
    for name in ["t5_decoder_prompt", "t5_batch_padded", "t5_beam"] {
        let case = cases
            .iter()
            .find(|c| c["name"] == name)
            .with_context(|| name.to_string())?;
        let mut gc = case["generation_config"].clone();
        if let Some(gc) = gc.as_object_mut() {
            gc.remove("output_scores");
            gc.remove("return_dict_in_generate");
        }
        let mut request = json!({"model": model, "generation_config": gc});
        if case["decoder_input_ids"].is_null() {
            // `input_ids` is the encoder's input, as in transformers.
            request["input_ids"] = case["encoder_input_ids"].clone();
            request["attention_mask"] = case["encoder_attention_mask"].clone();
        } else {
            request["encoder_input_ids"] = case["encoder_input_ids"].clone();
            request["encoder_attention_mask"] = case["encoder_attention_mask"].clone();
            request["decoder_input_ids"] = case["decoder_input_ids"].clone();
        }
        lines.push(request.to_string());
        expected.push((name, case["expected"]["sequences"].clone()));
    }
    let answers = requests_raw(&(lines.join("\n") + "\n"), &[])?;
    assert_eq!(answers.len(), expected.len());
    for (answer, (name, want)) in answers.iter().zip(expected) {
        assert_eq!(answer["sequences"], want, "{name}: {answer}");
    }
    Ok(())
}

/// `lmgen watermark --request -`: the golden SynthID detector cases (transformers 5.17) through
/// JSON lines, with the detector directory (its `watermarking_config` as the request's default);
/// a green-list config gets a z-score; a bad line answers an error naming the field.
#[test]
fn watermark_detection_through_json_lines() -> Result<()> {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/synthid"
    );
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/cases.json"))?)?;
    let case = golden["detector"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["name"] == "ngram2_eos_and_repeats"))
        .context("case")?;
    let lines = [
        json!({"input_ids": case["input_ids"], "detector": format!("{root}/detector"),
               "eos_token_id": case["eos_token_id"]}),
        json!({"input_ids": case["input_ids"], "watermarking_config": case["config"]}),
        json!({"input_ids": [[1, 5, 9, 5, 9, 7]], "watermarking_config": {"bias": 2.0},
               "vocab_size": 800}),
        json!({"input_ids": [[1, 5]], "watermarking_config": {"keys": [1], "ngram_len": 5}}),
    ];
    let stdin: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = lmgen(&["watermark", "--request", "-"], &stdin)?;
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(answers.len(), 4);
    let posterior: Vec<f64> = serde_json::from_value(answers[0]["posterior"].clone())?;
    let want: Vec<f64> = serde_json::from_value(case["posterior"].clone())?;
    assert_eq!(posterior.len(), want.len());
    for (got, want) in posterior.iter().zip(&want) {
        assert!((got - want).abs() <= 1e-5, "{posterior:?} vs {want:?}");
    }
    assert_eq!(answers[0]["g_values"], case["g_values"]);
    assert_eq!(
        answers[0]["context_repetition_mask"],
        case["context_repetition_mask"]
    );
    assert_eq!(answers[1]["g_values"], case["g_values"]);
    assert!(answers[1].get("posterior").is_none());
    assert_eq!(answers[2]["num_tokens_scored"], json!([5]));
    assert!(answers[2]["z_score"][0].is_number());
    assert!(
        error_message(&answers[3]).contains("`ngram_len`"),
        "{}",
        answers[3]
    );
    Ok(())
}
