//! Structured output: every sample drawn under a JSON schema, a regular expression or a Lark
//! grammar matches it (checked by an independent validator, the `jsonschema` crate, and the
//! `regex` semantics written out by hand), under sampling, beam search, assisted decoding and the
//! engine; invalid grammars are errors naming the grammar.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::Path;
use std::sync::OnceLock;

use lmgen::generation::config::UnknownFields;
use lmgen::generation::structured::{Grammar, StructuredOutput};
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

fn pipe(model: &str) -> &'static Pipeline {
    static LLAMA: OnceLock<Pipeline> = OnceLock::new();
    static GPT2: OnceLock<Pipeline> = OnceLock::new();
    let cell = match model {
        "llama" => &LLAMA,
        "gpt2" => &GPT2,
        _ => unreachable!(),
    };
    cell.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden/models")
            .join(model);
        Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
    })
}

fn compiler(model: &str) -> &'static StructuredOutput {
    static LLAMA: OnceLock<StructuredOutput> = OnceLock::new();
    static GPT2: OnceLock<StructuredOutput> = OnceLock::new();
    let cell = if model == "llama" { &LLAMA } else { &GPT2 };
    cell.get_or_init(|| {
        pipe(model)
            .structured_output(&GenerationConfig::default())
            .unwrap()
    })
}

fn config(fields: Value) -> GenerationConfig {
    GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap()
}

/// Generates under `grammar`; returns each returned sequence's text and whether it ended with EOS.
fn run(model: &str, grammar: &Grammar, fields: Value, seed: u64) -> Vec<(String, bool)> {
    let p = pipe(model);
    let input = p
        .encode_prompts(
            &["Answer in JSON:".to_string()],
            &GenerationConfig::default(),
        )
        .unwrap();
    run_input(model, grammar, fields, seed, &input)
}

fn run_input(
    model: &str,
    grammar: &Grammar,
    fields: Value,
    seed: u64,
    input: &GenerateInput,
) -> Vec<(String, bool)> {
    let p = pipe(model);
    let processor = compiler(model).processor(grammar).unwrap();
    let options = GenerateOptions {
        seed: Some(seed),
        logits_processors: vec![Box::new(processor)],
        ..Default::default()
    };
    let out = p.generate_with(input, &config(fields), options).unwrap();
    let eos_ids = p.config_with(&GenerationConfig::default()).eos_token_ids();
    (0..out.sequences.len())
        .map(|i| {
            let gen = out.generated(i);
            let end = gen.iter().position(|t| eos_ids.contains(t));
            let text = p
                .tokenizer
                .decode(&gen[..end.unwrap_or(gen.len())], false)
                .unwrap();
            (text, end.is_some())
        })
        .collect()
}

/// A nested object, an enum, an array with bounds, required and optional fields.
fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "role": {"enum": ["admin", "user", "guest"]},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 1, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 5}, "zip": {"type": "integer", "minimum": 1000, "maximum": 9999}},
                "required": ["city", "zip"],
                "additionalProperties": false
            },
            "active": {"type": "boolean"}
        },
        "required": ["name", "role", "tags", "address"],
        "additionalProperties": false,
        "x-guidance": {"whitespace_flexible": false}
    })
}

fn assert_valid(schema: &Value, outputs: &[(String, bool)]) {
    let mut schema = schema.clone();
    schema.as_object_mut().unwrap().remove("x-guidance");
    let validator = jsonschema::validator_for(&schema).unwrap();
    for (text, ended) in outputs {
        assert!(
            ended,
            "the grammar did not finish within max_new_tokens: {text:?}"
        );
        let value: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{text:?} does not validate: {errors:?}");
    }
}

#[test]
fn fifty_samples_at_temperature_one_all_validate_against_the_schema() {
    let schema = person_schema();
    let grammar = Grammar::JsonSchema(schema.clone());
    for model in ["llama", "gpt2"] {
        let mut outputs = Vec::new();
        for seed in 0..25 {
            outputs.extend(run(
                model,
                &grammar,
                json!({"do_sample": true, "temperature": 1.0, "top_k": 0, "max_new_tokens": 400}),
                seed,
            ));
        }
        assert_valid(&schema, &outputs);
        // Sampling explores: the samples are not all the same object.
        let distinct: std::collections::HashSet<_> = outputs.iter().map(|o| &o.0).collect();
        assert!(
            distinct.len() > 10,
            "{model}: only {} distinct samples",
            distinct.len()
        );
    }
}

#[test]
fn beam_search_and_greedy_under_a_schema_validate() {
    let schema = person_schema();
    let grammar = Grammar::JsonSchema(schema.clone());
    let beams = run(
        "llama",
        &grammar,
        json!({"num_beams": 4, "num_return_sequences": 4, "max_new_tokens": 400}),
        0,
    );
    assert_eq!(beams.len(), 4);
    assert_valid(&schema, &beams);
    let greedy = run("gpt2", &grammar, json!({"max_new_tokens": 400}), 0);
    assert_valid(&schema, &greedy);
}

#[test]
fn a_batch_with_left_padding_constrains_each_row_from_its_own_start() {
    let p = pipe("llama");
    let input = p
        .encode_prompts(
            &[
                "Hi".to_string(),
                "A much longer prompt than the first one".to_string(),
            ],
            &GenerationConfig::default(),
        )
        .unwrap();
    let schema = person_schema();
    let out = run_input(
        "llama",
        &Grammar::JsonSchema(schema.clone()),
        json!({"do_sample": true, "max_new_tokens": 400}),
        3,
        &input,
    );
    assert_eq!(out.len(), 2);
    assert_valid(&schema, &out);
}

#[test]
fn regex_and_lark_outputs_match() {
    let rx = Grammar::Regex(r"(yes|no), because [a-z]{1,8}\.".to_string());
    for seed in 0..10 {
        for (text, ended) in run(
            "llama",
            &rx,
            json!({"do_sample": true, "max_new_tokens": 64}),
            seed,
        ) {
            assert!(ended, "{text:?}");
            let rest = text
                .strip_prefix("yes, because ")
                .or_else(|| text.strip_prefix("no, because "))
                .unwrap_or_else(|| panic!("{text:?}"));
            let word = rest.strip_suffix('.').unwrap_or_else(|| panic!("{text:?}"));
            assert!(
                (1..=8).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_lowercase()),
                "{text:?}"
            );
        }
    }
    // Arithmetic over single digits: `expr: term (("+"|"-") term)*`, at most three terms.
    let lark = Grammar::Lark(
        r#"start: term (op term)? (op term)?
op: "+" | "-"
term: /[0-9]/ | "(" term op term ")"
"#
        .to_string(),
    );
    for seed in 0..10 {
        for (text, ended) in run(
            "gpt2",
            &lark,
            json!({"do_sample": true, "max_new_tokens": 64}),
            seed,
        ) {
            assert!(ended, "{text:?}");
            assert!(is_expr(&text), "{text:?} is not in the grammar");
        }
    }
}

/// The Lark grammar above, recognised by hand.
fn is_expr(s: &str) -> bool {
    fn term(s: &[u8]) -> Option<&[u8]> {
        match s.first()? {
            b'0'..=b'9' => Some(&s[1..]),
            b'(' => {
                let r = term(&s[1..])?;
                let r = op(r)?;
                let r = term(r)?;
                r.strip_prefix(b")")
            }
            _ => None,
        }
    }
    fn op(s: &[u8]) -> Option<&[u8]> {
        s.strip_prefix(b"+").or_else(|| s.strip_prefix(b"-"))
    }
    let Some(mut rest) = term(s.as_bytes()) else {
        return false;
    };
    for _ in 0..2 {
        if rest.is_empty() {
            return true;
        }
        let Some(r) = op(rest).and_then(term) else {
            return false;
        };
        rest = r;
    }
    rest.is_empty()
}

#[test]
fn the_mask_changes_the_output_and_json_object_gives_an_object() {
    // Without the grammar the tiny model's greedy text is not JSON: the constraint is doing work.
    let p = pipe("llama");
    let input = p
        .encode_prompts(
            &["Answer in JSON:".to_string()],
            &GenerationConfig::default(),
        )
        .unwrap();
    let free = p
        .generate(&input, &config(json!({"max_new_tokens": 20})))
        .unwrap();
    let free = p.tokenizer.decode(free.generated(0), true).unwrap();
    assert!(serde_json::from_str::<Value>(&free).is_err(), "{free:?}");
    for seed in 0..5 {
        for (text, ended) in run(
            "llama",
            &Grammar::JsonObject,
            json!({"do_sample": true, "max_new_tokens": 300}),
            seed,
        ) {
            if ended {
                let v: Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
                assert!(v.is_object(), "{text:?}");
            } else {
                assert!(text.trim_start().starts_with('{'), "{text:?}");
            }
        }
    }
}

#[test]
fn invalid_grammars_are_errors_naming_the_grammar() {
    let c = compiler("llama");
    let err = c
        .processor(&Grammar::Regex("(unclosed".into()))
        .unwrap_err();
    assert_eq!(err.field(), Some("regex"), "{err}");
    let err = c
        .processor(&Grammar::Lark("start: undefined_rule".into()))
        .unwrap_err();
    assert_eq!(err.field(), Some("grammar"), "{err}");
    let err = c
        .processor(&Grammar::JsonSchema(json!({"type": "no-such-type"})))
        .unwrap_err();
    assert_eq!(err.field(), Some("json_schema"), "{err}");
}

#[test]
fn min_new_tokens_that_forbid_the_end_of_a_complete_grammar_is_a_clear_error() {
    let p = pipe("llama");
    let input = p
        .encode_prompts(&["x".to_string()], &GenerationConfig::default())
        .unwrap();
    let processor = compiler("llama")
        .processor(&Grammar::Regex("a".into()))
        .unwrap();
    let options = GenerateOptions {
        logits_processors: vec![Box::new(processor)],
        ..Default::default()
    };
    let err = p
        .generate_with(
            &input,
            &config(json!({"max_new_tokens": 10, "min_new_tokens": 5})),
            options,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no token is allowed"), "{err}");
}

#[test]
fn prompt_lookup_under_a_grammar_gives_greedys_tokens() {
    // The prompt holds JSON the lookup can copy, so drafts are proposed, some accepted and some
    // rejected (rejected drafts leave the grammar's state behind them).
    let p = pipe("llama");
    let prompt =
        r#"{"name":"ab","role":"user","tags":["x"],"address":{"city":"Rome","zip":1234}} {"name":"#;
    let input = p
        .encode_prompts(&[prompt.to_string()], &GenerationConfig::default())
        .unwrap();
    let grammar = Grammar::JsonSchema(person_schema());
    let greedy = run_input("llama", &grammar, json!({"max_new_tokens": 400}), 0, &input);
    let lookup = run_input(
        "llama",
        &grammar,
        json!({"max_new_tokens": 400, "prompt_lookup_num_tokens": 4}),
        0,
        &input,
    );
    assert_eq!(greedy, lookup);
    assert_valid(&person_schema(), &lookup);
    // Drafts were proposed, and the grammar (or the model) rejected some of them.
    let options = GenerateOptions {
        logits_processors: vec![Box::new(compiler("llama").processor(&grammar).unwrap())],
        ..Default::default()
    };
    let out = p
        .generate_with(
            &input,
            &config(json!({"max_new_tokens": 400, "prompt_lookup_num_tokens": 4})),
            options,
        )
        .unwrap();
    let stats = out.assisted.unwrap();
    assert!(
        stats.drafted > stats.accepted && stats.accepted > 0,
        "{stats:?}"
    );
}

#[test]
fn the_engine_constrains_each_request_as_generate_does() {
    use lmgen::cache::paged::PagedCacheConfig;
    use lmgen::engine::{ContinuousBatchingManager, EngineConfig, Request};
    use lmgen::models::DType;
    use std::sync::Arc;
    use std::time::Duration;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
    let p = Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap();
    let model: Arc<dyn lmgen::models::CausalLM> = Arc::from(p.model);
    let reference = pipe("llama");
    let m = ContinuousBatchingManager::new(
        model,
        EngineConfig {
            cache: PagedCacheConfig {
                block_size: 4,
                num_blocks: 512,
            },
            max_batch_tokens: 32,
            ..EngineConfig::default()
        },
        DType::F32,
        Some(&reference.tokenizer),
    )
    .unwrap();
    m.start().unwrap();
    let grammars = [
        Grammar::JsonSchema(person_schema()),
        Grammar::Regex(r"(yes|no), because [a-z]{1,8}\.".into()),
        Grammar::JsonObject,
    ];
    let cfg = reference.config_with(&config(json!({"max_new_tokens": 300})));
    let mut ids = Vec::new();
    let mut want = Vec::new();
    for i in 0..6 {
        let grammar = &grammars[i % grammars.len()];
        let prompt: Vec<u32> = (0..3 + 2 * i as u32).map(|k| 10 + 7 * k).collect();
        let input = GenerateInput::single(prompt.clone());
        let options = GenerateOptions {
            logits_processors: vec![Box::new(compiler("llama").processor(grammar).unwrap())],
            ..Default::default()
        };
        want.push(
            reference
                .generate_with(&input, &cfg, options)
                .unwrap()
                .generated(0)
                .to_vec(),
        );
        let mut r = Request::new(prompt, cfg.clone());
        r.logits_processors = vec![Box::new(compiler("llama").processor(grammar).unwrap())];
        ids.push(m.add_request(r).unwrap());
    }
    let eos = reference
        .config_with(&GenerationConfig::default())
        .eos_token_ids();
    let mut schema_outputs = Vec::new();
    for (i, (id, want)) in ids.iter().zip(want).enumerate() {
        let got = m
            .get_result(Some(id), Some(Duration::from_secs(120)))
            .unwrap();
        let mut want = want;
        // generate() pads nothing for one row; the engine stops at EOS as well.
        while want.last().is_some_and(|&t| t == 0) && want.len() > got.generated_tokens.len() {
            want.pop();
        }
        assert_eq!(got.generated_tokens, want);
        if i % grammars.len() == 0 {
            let end = got.generated_tokens.iter().position(|t| eos.contains(t));
            let text = reference
                .tokenizer
                .decode(
                    &got.generated_tokens[..end.unwrap_or(got.generated_tokens.len())],
                    false,
                )
                .unwrap();
            schema_outputs.push((text, end.is_some()));
        }
    }
    // And the constraint held: the schema's outputs validate.
    assert_valid(&person_schema(), &schema_outputs);
}
