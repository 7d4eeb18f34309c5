//! Bad generation settings (generation_config.json, caller overrides) and bad prompts.

use std::fs;

use anyhow::Result;
use lmgen::generation::config::UnknownFields;
use lmgen::models::CausalLM;
use lmgen::{generate, GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::{assert_mentions, copy_checkpoint, edit_json, error, golden, load, load_low_level};

/// A llama checkpoint whose generation_config.json gets `fields` added.
fn with_generation_config(fields: Value) -> Result<TempDir> {
    let tmp = copy_checkpoint("llama")?;
    edit_json(tmp.path(), "generation_config.json", |c| {
        if let Value::Object(fields) = fields {
            c.extend(fields);
        }
    })?;
    Ok(tmp)
}

fn prompt() -> GenerateInput {
    GenerateInput::single(vec![1, 15, 27, 300, 42])
}

#[test]
fn generation_config_json_wrong_types_fail_at_load() -> Result<()> {
    let cases = [
        (
            json!({"max_new_tokens": "ten"}),
            "`max_new_tokens` must be a non-negative integer, got \"ten\"",
        ),
        (
            json!({"early_stopping": "sometimes"}),
            "`early_stopping` must be `true`, `false` or \"never\", got \"sometimes\"",
        ),
        (json!({"eos_token_id": [2, "x"]}), "`eos_token_id` must be"),
    ];
    for (fields, expected) in cases {
        let tmp = with_generation_config(fields)?;
        let msg = error(load(tmp.path()));
        assert_mentions(&msg, &["generation_config.json", expected]);
    }
    let tmp = copy_checkpoint("llama")?;
    fs::write(tmp.path().join("generation_config.json"), "{\"max_new")?;
    let msg = error(load(tmp.path()));
    assert_mentions(&msg, &["generation_config.json", "is not valid"]);
    Ok(())
}

#[test]
fn generation_config_json_out_of_range_fails_at_generate() -> Result<()> {
    let cases = [
        (
            json!({"max_new_tokens": 0}),
            "`max_new_tokens` must be greater than 0",
        ),
        (
            json!({"repetition_penalty": -1.0}),
            "`repetition_penalty` has to be a strictly positive float, got -1",
        ),
        (
            json!({"num_return_sequences": 2}),
            "`num_return_sequences` must be 1 with greedy decoding",
        ),
    ];
    for (fields, expected) in cases {
        let tmp = with_generation_config(fields)?;
        let pipe = load(tmp.path())?;
        let msg = error(pipe.generate(&prompt(), &GenerationConfig::default()));
        assert_mentions(&msg, &["invalid generation config", expected]);
    }
    Ok(())
}

#[test]
fn unknown_keys_load_from_the_file_but_not_from_the_caller() -> Result<()> {
    let tmp = with_generation_config(json!({"my_custom_key": [1, 2], "max_new_tokens": 4}))?;
    let pipe = load(tmp.path())?;
    assert_eq!(
        pipe.generation_config.extra.get("my_custom_key"),
        Some(&json!([1, 2]))
    );
    let overrides = GenerationConfig {
        min_new_tokens: Some(4),
        ..GenerationConfig::default()
    };
    let out = pipe.generate(&prompt(), &overrides)?;
    assert_eq!(out.generated(0).len(), 4);

    let typo = json!({"max_new_token": 4});
    let msg = error(GenerationConfig::from_json(&typo, UnknownFields::Reject));
    assert_mentions(&msg, &["unknown generation config field `max_new_token`"]);
    Ok(())
}

#[test]
fn bad_synthid_watermarking_configs_are_rejected_naming_the_field() -> Result<()> {
    let pipe = Pipeline::from_pretrained(golden("llama").to_str().unwrap_or_default())?;
    let cases = [
        (
            json!({"keys": [1, 2]}),
            "`watermarking_config` for SynthID needs `ngram_len`",
        ),
        (
            json!({"keys": [1, 2], "ngram_len": 5, "sampling_table_size": 16_777_217}),
            "`sampling_table_size` should be < 2**24",
        ),
        (
            json!({"keys": [1, 2], "ngram_len": 5, "bias": 2.0}),
            "`bias`, which SynthIDTextWatermarkingConfig does not take",
        ),
        (
            json!({"keys": [], "ngram_len": 5}),
            "`watermarking_config.keys`",
        ),
    ];
    for (watermarking_config, expected) in cases {
        let fields = json!({ "watermarking_config": watermarking_config });
        let overrides = GenerationConfig::from_json(&fields, UnknownFields::Reject)?;
        let msg = error(pipe.generate(&prompt(), &overrides));
        assert_mentions(&msg, &[expected]);
    }
    Ok(())
}

#[test]
fn sampling_fields_while_not_sampling_change_nothing() -> Result<()> {
    let pipe = Pipeline::from_pretrained(golden("llama").to_str().unwrap_or_default())?;
    let plain = json!({"max_new_tokens": 6});
    let with_sampling = json!({"max_new_tokens": 6, "do_sample": false, "temperature": 0.3, "top_k": 5, "top_p": 0.5});
    let run = |fields: &Value| -> Result<Vec<Vec<u32>>> {
        let overrides = GenerationConfig::from_json(fields, UnknownFields::Reject)?;
        Ok(pipe.generate(&prompt(), &overrides)?.sequences)
    };
    assert_eq!(run(&with_sampling)?, run(&plain)?);
    Ok(())
}

/// The message of `generate` on `model` with `input` and `config`.
fn generate_error(
    model: &dyn CausalLM,
    input: &GenerateInput,
    config: &GenerationConfig,
) -> String {
    error(generate(model, input, config))
}

#[test]
fn prompts_longer_than_the_model_allows() -> Result<()> {
    let gpt2 = load_low_level(&golden("gpt2"))?; // n_positions 512
    let long = GenerateInput::single((0..600).map(|i| i % 800).collect());
    let msg = generate_error(gpt2.as_ref(), &long, &GenerationConfig::default());
    assert_mentions(&msg, &["600 tokens", "`max_position_embeddings` is 512"]);

    // Learned positions end at 512: asking for more new tokens than fit is an error, not garbage.
    let input = GenerateInput::single((0..500).map(|i| i % 800).collect());
    let past_the_end = GenerationConfig {
        max_new_tokens: Some(20),
        ..GenerationConfig::default()
    };
    let msg = generate_error(gpt2.as_ref(), &input, &past_the_end);
    assert_mentions(
        &msg,
        &[
            "`max_length` 520",
            "`max_position_embeddings` 512",
            "max_new_tokens",
        ],
    );

    // A RoPE model with a small `max_position_embeddings`.
    let tmp = copy_checkpoint("llama")?;
    edit_json(tmp.path(), "config.json", |c| {
        c.insert("max_position_embeddings".into(), json!(8));
    })?;
    let llama = load_low_level(tmp.path())?;
    let msg = generate_error(
        llama.as_ref(),
        &GenerateInput::single((10..20).collect()),
        &GenerationConfig::default(),
    );
    assert_mentions(&msg, &["10 tokens", "`max_position_embeddings` is 8"]);
    Ok(())
}

#[test]
fn bad_input_ids_and_attention_masks() -> Result<()> {
    let model = load_low_level(&golden("llama"))?; // vocab_size 800
    let config = GenerationConfig {
        max_new_tokens: Some(2),
        ..GenerationConfig::default()
    };
    let input = |ids: Vec<Vec<u32>>, mask: Option<Vec<Vec<u8>>>| GenerateInput {
        input_ids: ids,
        attention_mask: mask,
    };
    let cases = [
        (
            input(vec![vec![1, 800, 3]], None),
            vec!["token id 800 in row 0", "vocab_size 800"],
        ),
        (
            input(vec![vec![1, 2, 3], vec![4, 5]], None),
            vec!["`input_ids` rows must have one length", "row 1 has 2"],
        ),
        (
            input(vec![vec![1, 2, 3]], Some(vec![vec![1, 1]])),
            vec!["`attention_mask` must have the shape of `input_ids` [1, 3]"],
        ),
        (
            input(
                vec![vec![1, 2, 3]],
                Some(vec![vec![1, 1, 1], vec![1, 1, 1]]),
            ),
            vec!["`attention_mask` must have the shape"],
        ),
        (
            input(
                vec![vec![1, 2], vec![3, 4]],
                Some(vec![vec![1, 1], vec![0, 0]]),
            ),
            vec!["`attention_mask` row 1 has no real token"],
        ),
        (
            input(vec![vec![1, 2]], Some(vec![vec![1, 2]])),
            vec!["`attention_mask` values must be 0 or 1"],
        ),
        (input(vec![], None), vec!["`input_ids` is empty"]),
        (input(vec![vec![]], None), vec!["a prompt has no tokens"]),
        (
            input(vec![vec![], vec![]], None),
            vec!["a prompt has no tokens"],
        ),
    ];
    for (input, expected) in cases {
        let msg = generate_error(model.as_ref(), &input, &config);
        assert_mentions(&msg, &expected);
    }
    Ok(())
}

#[test]
fn prompt_already_at_max_length() -> Result<()> {
    let pipe = Pipeline::from_pretrained(golden("llama").to_str().unwrap_or_default())?;
    let overrides = GenerationConfig {
        max_length: Some(5),
        ..GenerationConfig::default()
    };
    let input = GenerateInput::single((10..20).collect());
    let msg = error(pipe.generate(&input, &overrides));
    assert_mentions(
        &msg,
        &[
            "input length of input_ids is 10",
            "`max_length` is set to 5",
            "max_new_tokens",
        ],
    );
    // Through the text path too: no prompts at all.
    let msg = error(
        pipe.encode_prompts(&[], &GenerationConfig::default())
            .and_then(|input| pipe.generate(&input, &GenerationConfig::default())),
    );
    assert_mentions(&msg, &["`input_ids` is empty"]);
    Ok(())
}

#[test]
fn a_pad_id_outside_the_vocabulary_is_named_before_it_reaches_the_model() -> Result<()> {
    let model = load_low_level(&golden("llama"))?; // vocab_size 800
    let input = GenerateInput {
        input_ids: vec![vec![1, 15, 27], vec![1, 300, 42]],
        attention_mask: None,
    };
    let parse = |fields: Value| GenerationConfig::from_json(&fields, UnknownFields::Reject);
    let greedy = generate(
        model.as_ref(),
        &input,
        &parse(json!({"max_new_tokens": 4}))?,
    )?;
    // Row 0 stops at its first new token; row 1 goes on, and row 0 is padded.
    let eos = greedy.generated(0)[0];
    assert!(!greedy.generated(1).contains(&eos), "pick other prompts");
    let cases = [
        (
            json!({"max_new_tokens": 4, "eos_token_id": eos, "pad_token_id": 5000}),
            "`pad_token_id` 5000 is outside the vocabulary (vocab_size 800)",
        ),
        (
            json!({"max_new_tokens": 4, "eos_token_id": [5000, eos]}),
            "`eos_token_id` (the pad id while `pad_token_id` is unset) 5000 is outside",
        ),
    ];
    for (fields, expected) in cases {
        let msg = generate_error(model.as_ref(), &input, &parse(fields)?);
        assert_mentions(&msg, &[expected]);
    }
    // As in transformers, a pad id that is never fed to the model is fine.
    let one_row = GenerateInput::single(vec![1, 15, 27]);
    let fields = json!({"max_new_tokens": 4, "eos_token_id": eos, "pad_token_id": 5000});
    let out = generate(model.as_ref(), &one_row, &parse(fields)?)?;
    assert_eq!(out.generated(0), [eos]);
    Ok(())
}
