//! Chat template semantics transformers relies on, the limits that stop a hostile template, and
//! real templates (gpt-oss's harmony format) rendered byte for byte as transformers renders them.

use std::path::{Path, PathBuf};

use lmgen::chat_template::{ChatTemplate, ChatTemplateLimits};
use lmgen::{Error, Tokenizer};
use serde_json::{json, Map, Value};

fn render(source: &str, messages: Value, vars: Value) -> lmgen::Result<String> {
    let messages: Vec<Value> = serde_json::from_value(messages).unwrap_or_default();
    let vars = match vars {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    ChatTemplate::new(source)?.render(&messages, true, vars)
}

fn message(e: Error) -> String {
    match e {
        Error::ChatTemplate(m) => m,
        other => panic!("not a chat template error: {other}"),
    }
}

#[test]
fn raise_exception_carries_the_message() {
    let err = render(
        "{{ raise_exception('No system role') }}",
        json!([]),
        json!({}),
    );
    assert_eq!(message(err.unwrap_err()), "No system role");
}

#[test]
fn tojson_is_python_json_dumps_without_html_escaping() -> lmgen::Result<()> {
    let vars = json!({"tools": [{"d": "<a & 'b'>", "n": 1.5, "name": "f", "ü": null}]});
    let out = render("{{ tools[0] | tojson }}", json!([]), vars.clone())?;
    assert_eq!(
        out,
        r#"{"d": "<a & 'b'>", "n": 1.5, "name": "f", "ü": null}"#
    );
    let out = render("{{ tools | tojson(indent=2) }}", json!([]), vars.clone())?;
    assert!(
        out.starts_with("[\n  {\n    \"d\": \"<a & 'b'>\",\n"),
        "{out}"
    );
    let out = render(
        "{{ tools[0]['ü'] | tojson }}{{ 'ü' | tojson(ensure_ascii=True) }}",
        json!([]),
        vars,
    )?;
    assert_eq!(out, "null\"\\u00fc\"");
    Ok(())
}

#[test]
fn trim_blocks_loop_vars_loop_controls_and_python_methods() -> lmgen::Result<()> {
    let source = "{% for m in messages %}\n  {% if loop.index0 == 2 %}{% break %}{% endif %}\n{{ loop.index }}:{{ m.content.strip().upper() }}{% if m.content.startswith(' ') %}*{% endif %};\n{% endfor %}{{ add_generation_prompt }}{{ tools is none }}";
    let msgs = json!([{"role": "user", "content": " a "}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]);
    assert_eq!(render(source, msgs, json!({}))?, "1:A*;\n2:B;\nTrueTrue");
    Ok(())
}

#[test]
fn strftime_now_formats_the_date() -> lmgen::Result<()> {
    let out = render("{{ strftime_now('%Y-%m-%d') }}", json!([]), json!({}))?;
    assert_eq!(out.len(), 10, "{out}");
    assert!(out.starts_with("20"), "{out}");
    Ok(())
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let err = message(render(source, json!([]), json!({})).unwrap_err());
    assert!(err.contains("fuel"), "{err}");
}

#[test]
fn huge_output_is_cut_off() {
    // Little work, much text: the output cap stops it, not the fuel.
    let err = message(render("{{ 'x' * 50000000 }}", json!([]), json!({})).unwrap_err());
    assert!(err.contains("exceeds the limit"), "{err}");
    let limits = ChatTemplateLimits {
        max_output_bytes: 1000,
        ..Default::default()
    };
    let tmpl = ChatTemplate::from_named(
        vec![(
            "default".into(),
            "{% for i in range(10000) %}{{ i }}{% endfor %}".into(),
        )],
        limits,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = message(tmpl.render(&[], false, Map::new()).unwrap_err());
    assert!(err.contains("1000 bytes"), "{err}");
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    let source = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    let err = message(render(source, json!([]), json!({})).unwrap_err());
    assert!(err.contains("recursion"), "{err}");
}

#[test]
fn a_syntax_error_fails_at_load() {
    let err = message(ChatTemplate::new("{% for %}").unwrap_err());
    assert!(err.contains("does not compile"), "{err}");
}

/// A copy of the golden llama tokenizer with `tokenizer_config.json` changed by `edit`.
fn llama_with(
    edit: impl FnOnce(&mut Map<String, Value>),
) -> anyhow::Result<(tempfile::TempDir, Tokenizer)> {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        src.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )?;
    let mut cfg: Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer_config.json"))?)?;
    edit(&mut cfg);
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::to_string(&cfg)?,
    )?;
    let tok = Tokenizer::from_dir(dir.path())?;
    Ok((dir, tok))
}

#[test]
fn named_templates_pick_default_or_tool_use() -> anyhow::Result<()> {
    let (_dir, tok) = llama_with(|cfg| {
        cfg.insert(
            "chat_template".into(),
            json!([{"name": "default", "template": "D{{ bos_token }}"}, {"name": "tool_use", "template": "T{{ tools | length }}"}]),
        );
    })?;
    assert_eq!(tok.apply_chat_template(&[], false, &Map::new())?, "D<s>");
    let mut extra = Map::new();
    extra.insert("tools".into(), json!([{"name": "f"}]));
    assert_eq!(tok.apply_chat_template(&[], false, &extra)?, "T1");
    let (_dir, tok) = llama_with(|cfg| {
        cfg.insert(
            "chat_template".into(),
            json!([{"name": "other", "template": "x"}]),
        );
    })?;
    assert!(tok.apply_chat_template(&[], false, &Map::new()).is_err());
    Ok(())
}

#[test]
fn extra_special_tokens_marked_not_special_are_kept_on_decode() -> anyhow::Result<()> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    let tok = Tokenizer::from_dir(&dir)?;
    // `<|system|>` is `special: false` in tokenizer.json but listed in extra_special_tokens:
    // transformers 5.17 keeps it with skip_special_tokens (golden streaming.json shows it), and
    // drops the named BOS/EOS.
    let ids = tok.encode("<|system|>\nHi</s>")?;
    assert_eq!(tok.decode(&ids, false)?, "<s><|system|>\nHi</s>");
    assert_eq!(tok.decode(&ids, true)?, "<|system|>\nHi");
    Ok(())
}

#[test]
fn add_bos_and_eos_flags_rebuild_the_post_processor() -> anyhow::Result<()> {
    let (_dir, tok) = llama_with(|cfg| {
        cfg.insert("add_eos_token".into(), json!(true));
    })?;
    let ids = tok.encode("Hi")?;
    assert_eq!((ids.first(), ids.last()), (Some(&1), Some(&2)), "{ids:?}");
    let (_dir, tok) = llama_with(|cfg| {
        cfg.insert("add_bos_token".into(), json!(false));
    })?;
    assert_ne!(tok.encode("Hi")?.first(), Some(&1));
    Ok(())
}

#[test]
fn add_prefix_space_false_stops_the_metaspace_prefix() -> anyhow::Result<()> {
    let (_dir, plain) = llama_with(|_| {})?;
    let (_dir, no_prefix) = llama_with(|cfg| {
        cfg.insert("add_prefix_space".into(), json!(false));
    })?;
    assert_eq!(plain.encode("Hello")?[1], 686, "`▁` first");
    assert_ne!(no_prefix.encode("Hello")?[1], 686);
    Ok(())
}

/// Real chat templates rendered as transformers renders them (`fixtures/chat_templates/cases.json`,
/// made by `make.py` there with transformers' `render_jinja_template`): the text byte for byte,
/// or the message of the exception the template raises. The first is gpt-oss's harmony format.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

#[test]
fn real_templates_render_as_transformers_renders_them() -> anyhow::Result<()> {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json"))?)?;
    let clock = golden["clock"].as_i64().expect("clock");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in golden["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or_default();
        let file = case["template"].as_str().unwrap_or_default();
        let template = ChatTemplate::new(&std::fs::read_to_string(fixtures().join(file))?)?;
        template.pin_clock(Some(clock));
        let messages = case["messages"].as_array().cloned().unwrap_or_default();
        let mut vars: Map<String, Value> = case["kwargs"].as_object().cloned().unwrap_or_default();
        if !case["tools"].is_null() {
            vars.insert("tools".into(), case["tools"].clone());
        }
        let add = case["add_generation_prompt"].as_bool().unwrap_or(false);
        let got = template.render(&messages, add, vars);
        let ok = match (&got, case.get("rendered"), case.get("error")) {
            (Ok(text), Some(want), _) => want.as_str() == Some(text.as_str()),
            (Err(Error::ChatTemplate(msg)), _, Some(want)) => want.as_str() == Some(msg.as_str()),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{file}: {name}\n  transformers: {}\n  lmgen:        {got:?}",
                case.get("rendered")
                    .or(case.get("error"))
                    .unwrap_or(&Value::Null)
            ));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 15, "only {checked} cases");
    Ok(())
}

#[test]
fn pinned_clock_is_what_strftime_now_prints_and_unpinning_restores_the_system_clock(
) -> anyhow::Result<()> {
    let template = ChatTemplate::new("{{ strftime_now('%Y-%m-%d %H:%M %A') }}")?;
    template.pin_clock(Some(1_785_931_200));
    assert_eq!(
        template.render(&[], false, Map::new())?,
        "2026-08-05 12:00 Wednesday"
    );
    let shared = template.clone();
    template.pin_clock(None);
    let year: i32 = shared.render(&[], false, Map::new())?[..4].parse()?;
    assert!(year >= 2026, "system clock gave year {year}");
    Ok(())
}
