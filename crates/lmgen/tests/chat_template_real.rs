//! Real chat templates of the golden-arch families (Qwen3 / 3.5 / 2.5, Llama 3.1 / 3.2, Mistral Small
//! 3.2, Ministral 3, Devstral, Gemma 4, Phi-3.5-mini, SmolLM3, LFM2 / 2.5, Granite 3.3 / 4,
//! DeepSeek-R1-Distill-Qwen) rendered as transformers 5.17 renders them:
//! `fixtures/chat_templates/real/FAMILY.json`, made by `tools/make_chat_template_goldens.py` with
//! transformers' `render_jinja_template` (plain chat, system prompts, tools, tool-call round trips,
//! thinking on and off, list content, and conversations the template refuses).
//!
//! A render transformers completes must give the same text byte for byte. Where the template calls
//! `raise_exception`, lmgen must fail with the same message; where Python itself fails inside the
//! template (`TypeError`, `UndefinedError`: `None + str`, `len(None)`, `messages[0]` of an empty
//! list), lmgen must fail too.

use std::path::{Path, PathBuf};

use lmgen::chat_template::ChatTemplate;
use lmgen::Error;
use serde_json::{Map, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates/real")
}

/// The families' golden files, sorted.
fn goldens() -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixtures())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let family = path.file_stem().unwrap_or_default().to_string_lossy();
            let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            out.push((family.into_owned(), golden));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The template variables of one case: its keywords (special tokens, `enable_thinking`, ...) and
/// the file's `tools` when the case passes them.
fn vars(golden: &Value, case: &Value) -> Map<String, Value> {
    let mut vars = case["kwargs"].as_object().cloned().unwrap_or_default();
    if case["tools"].as_bool() == Some(true) {
        vars.insert("tools".into(), golden["tools"].clone());
    }
    vars
}

/// `None` when lmgen's answer is transformers', else what differs.
fn compare(case: &Value, got: &lmgen::Result<String>) -> Option<String> {
    let ok = match (got, case.get("rendered"), case.get("error")) {
        (Ok(text), Some(want), _) => want.as_str() == Some(text.as_str()),
        (Err(Error::ChatTemplate(msg)), None, Some(want)) => {
            // raise_exception's message is the template's own text: it must match. Errors of
            // Python inside the template only have to be errors.
            case["error_type"] != "TemplateError" || want.as_str() == Some(msg.as_str())
        }
        _ => false,
    };
    (!ok).then(|| {
        format!(
            "  transformers: {}\n  lmgen:        {got:?}",
            case.get("rendered")
                .or(case.get("error"))
                .unwrap_or(&Value::Null)
        )
    })
}

#[test]
fn real_templates_of_every_family_render_as_transformers_renders_them() -> anyhow::Result<()> {
    let goldens = goldens()?;
    assert!(goldens.len() >= 16, "only {} families", goldens.len());
    let mut failures = Vec::new();
    let mut checked = 0;
    for (family, golden) in &goldens {
        let file = golden["template"].as_str().unwrap_or_default();
        let template = ChatTemplate::new(&std::fs::read_to_string(fixtures().join(file))?)?;
        template.pin_clock(golden["clock"].as_i64());
        for case in golden["cases"].as_array().into_iter().flatten() {
            let messages = case["messages"].as_array().cloned().unwrap_or_default();
            let add = case["add_generation_prompt"].as_bool().unwrap_or(false);
            let got = template.render(&messages, add, vars(golden, case));
            if let Some(diff) = compare(case, &got) {
                failures.push(format!("{family}: {}\n{diff}", case["name"]));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 250, "only {checked} cases");
    Ok(())
}
