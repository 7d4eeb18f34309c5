//! Contrastive search and DoLa beyond the golden sequences (`golden_legacy.rs`): transformers 4.47's
//! errors for invalid combinations, settings it ignores, the sampling / streaming / scores paths,
//! and the hidden states the two modes read from the models.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use lmgen::cache::DynamicCache;
use lmgen::generation::config::UnknownFields;
use lmgen::generation::streamer::TokenStreamer;
use lmgen::generation::GenerateOptions;
use lmgen::models::{ForwardInput, LogitsToKeep};
use lmgen::{Error, GenerateInput, GenerateOutput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

const MODELS: &[&str] = &["gpt2", "llama", "llama3", "mistral", "qwen2", "gemma2"];

fn golden(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/models")
        .join(model)
}

/// One pipeline per golden model, loaded once for the whole file.
fn pipe(model: &str) -> &'static Pipeline {
    static PIPES: OnceLock<HashMap<&'static str, Pipeline>> = OnceLock::new();
    &PIPES.get_or_init(|| {
        MODELS
            .iter()
            .map(|&m| {
                let dir = golden(m);
                (m, Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap())
            })
            .collect()
    })[model]
}

fn prompt() -> GenerateInput {
    GenerateInput::single(vec![1, 15, 27, 300, 42, 7, 99])
}

fn config(fields: Value) -> GenerationConfig {
    GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap()
}

fn run(model: &str, fields: Value) -> lmgen::Result<GenerateOutput> {
    pipe(model).generate(&prompt(), &config(fields))
}

#[track_caller]
fn error_of(model: &str, fields: Value) -> Error {
    match run(model, fields.clone()) {
        Ok(out) => panic!("{fields}: expected an error, got {:?}", out.sequences),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} not in: {message}");
    }
}

#[test]
fn dola_outside_greedy_and_sampling_is_an_error() {
    let cases = [
        (
            json!({"dola_layers": "low", "num_beams": 2}),
            "beam-search decoding",
        ),
        (
            json!({"dola_layers": "low", "num_beams": 2, "do_sample": true}),
            "beam-search multinomial sampling",
        ),
        (
            json!({"dola_layers": [0], "penalty_alpha": 0.6, "top_k": 4}),
            "contrastive search",
        ),
        (
            json!({"dola_layers": "high", "prompt_lookup_num_tokens": 3}),
            "assisted decoding",
        ),
        (
            json!({"dola_layers": "high", "force_words_ids": [[5]], "num_beams": 2}),
            "constrained beam-search decoding",
        ),
    ];
    for (fields, mode) in cases {
        let e = error_of("llama", fields);
        assert!(matches!(e, Error::GenerationConfig { .. }), "{e:?}");
        assert_mentions(
            &e.to_string(),
            &[
                "`dola_layers` is set",
                "only extends greedy search and sampling",
                mode,
            ],
        );
    }
}

#[test]
fn bad_dola_layers_are_errors_naming_the_field() {
    for value in [
        json!("middle"),
        json!(1),
        json!([0.5, 1]),
        json!({"low": 1}),
    ] {
        let e = error_of("llama", json!({"dola_layers": value}));
        assert_mentions(
            &e.to_string(),
            &["`dola_layers` must be either \"low\", \"high\" or a list of integers"],
        );
    }
    // Two layers: indices >= 2 are dropped (as transformers), leaving nothing to contrast.
    let e = error_of("llama", json!({"dola_layers": [2, 5]}));
    assert_mentions(
        &e.to_string(),
        &[
            "`dola_layers` [2, 5] selects no premature layer",
            "2 layers",
        ],
    );
    let e = error_of("gpt2", json!({"dola_layers": []}));
    assert_mentions(&e.to_string(), &["selects no premature layer"]);
    // Three hidden states (embeddings + 2 layers): -3 is the embeddings, -4 does not exist.
    let e = error_of("llama", json!({"dola_layers": [-4]}));
    assert_mentions(
        &e.to_string(),
        &["`dola_layers` index -4 is out of range", "3 hidden states"],
    );
    let wrapped = run("llama", json!({"dola_layers": [-3], "max_new_tokens": 6})).unwrap();
    let first = run("llama", json!({"dola_layers": [0], "max_new_tokens": 6})).unwrap();
    assert_eq!(wrapped.sequences, first.sequences);
}

#[test]
fn dola_with_several_return_sequences_is_unsupported() {
    let e = error_of(
        "llama",
        json!({"dola_layers": "low", "do_sample": true, "num_return_sequences": 2}),
    );
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert_mentions(
        &e.to_string(),
        &["`num_return_sequences=2` with DoLa decoding"],
    );
}

#[test]
fn contrastive_search_errors() {
    let e = error_of(
        "llama",
        json!({"penalty_alpha": 0.6, "top_k": 4, "use_cache": false}),
    );
    assert_mentions(
        &e.to_string(),
        &["contrastive search", "requires `use_cache=true`"],
    );
    let e = error_of(
        "llama",
        json!({"penalty_alpha": 0.6, "top_k": 4, "num_return_sequences": 2}),
    );
    assert_mentions(&e.to_string(), &["`num_return_sequences` must be 1"]);
    let e = error_of("llama", json!({"penalty_alpha": 0.6, "top_k": 801}));
    assert_mentions(&e.to_string(), &["`top_k` (801)", "vocabulary size (800)"]);
}

/// transformers 4.47 selects beam search, sampling or greedy search over contrastive search in
/// these cases and ignores `penalty_alpha` (no error, no effect): so does lmgen.
#[test]
fn penalty_alpha_is_ignored_where_transformers_ignores_it() {
    let same = |with: Value, without: Value| {
        let a = run("llama", with.clone()).unwrap();
        let b = run("llama", without).unwrap();
        assert_eq!(a.sequences, b.sequences, "{with}");
    };
    same(
        json!({"penalty_alpha": 0.6, "top_k": 4, "num_beams": 3, "max_new_tokens": 6}),
        json!({"top_k": 4, "num_beams": 3, "max_new_tokens": 6}),
    );
    same(
        json!({"penalty_alpha": 0.6, "top_k": 1, "max_new_tokens": 6}),
        json!({"max_new_tokens": 6}),
    );
    same(
        json!({"penalty_alpha": 0.0, "top_k": 4, "max_new_tokens": 6}),
        json!({"max_new_tokens": 6}),
    );
    let seeded = |fields: Value| {
        let options = GenerateOptions {
            seed: Some(7),
            ..GenerateOptions::default()
        };
        pipe("llama")
            .generate_with(&prompt(), &config(fields), options)
            .unwrap()
            .sequences
    };
    assert_eq!(
        seeded(json!({"penalty_alpha": 0.6, "do_sample": true, "top_k": 4, "max_new_tokens": 6})),
        seeded(json!({"do_sample": true, "top_k": 4, "max_new_tokens": 6}))
    );
}

/// With a vanishing penalty, contrastive search ranks candidates by probability alone: greedy
/// search, on every architecture (gemma2 and llama3 have no transformers 4.47 reference).
#[test]
fn contrastive_search_without_penalty_is_greedy_on_every_model() {
    for model in MODELS {
        let greedy = run(model, json!({"max_new_tokens": 8, "do_sample": false})).unwrap();
        let contrastive = run(
            model,
            json!({"max_new_tokens": 8, "do_sample": false, "penalty_alpha": 1e-7, "top_k": 3}),
        )
        .unwrap();
        assert_eq!(contrastive.sequences, greedy.sequences, "{model}");
        let strong = run(
            model,
            json!({"max_new_tokens": 8, "do_sample": false, "penalty_alpha": 0.9, "top_k": 3}),
        )
        .unwrap();
        assert_ne!(
            strong.sequences, greedy.sequences,
            "{model}: the penalty changes nothing"
        );
    }
}

/// DoLa sampling with `top_k=1` keeps only the best contrast token: DoLa's greedy output.
#[test]
fn dola_sampling_runs_the_same_contrast() {
    for model in ["llama", "gpt2", "gemma2"] {
        let greedy = run(model, json!({"dola_layers": "low", "max_new_tokens": 8})).unwrap();
        let options = GenerateOptions {
            seed: Some(3),
            ..GenerateOptions::default()
        };
        let fields =
            json!({"dola_layers": "low", "do_sample": true, "top_k": 1, "max_new_tokens": 8});
        let sampled = pipe(model)
            .generate_with(&prompt(), &config(fields), options)
            .unwrap();
        assert_eq!(sampled.sequences, greedy.sequences, "{model}");
    }
}

/// `output_logits` are the final layer's raw logits (the same first step as greedy search);
/// `output_scores` the processed contrast (DoLa) or processed logits (contrastive search).
#[test]
fn scores_and_logits_follow_transformers() {
    let flags = json!({"max_new_tokens": 4, "output_scores": true, "output_logits": true,
                       "return_dict_in_generate": true, "repetition_penalty": 1.0});
    let with = |extra: Value| {
        let mut fields = flags.clone();
        fields
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        run("llama", fields).unwrap()
    };
    let greedy = with(json!({}));
    let dola = with(json!({"dola_layers": "high"}));
    let contrastive = with(json!({"penalty_alpha": 0.6, "top_k": 4}));
    for out in [&dola, &contrastive] {
        assert_eq!(out.logits.as_ref().unwrap().len(), 4);
        assert_eq!(out.scores.as_ref().unwrap().len(), 4);
        assert_eq!(
            out.logits.as_ref().unwrap()[0],
            greedy.logits.as_ref().unwrap()[0]
        );
    }
    // Contrastive search processes the logits (no processor here: identical); DoLa contrasts them.
    assert_eq!(
        contrastive.scores.as_ref().unwrap()[0],
        contrastive.logits.as_ref().unwrap()[0]
    );
    let contrast = &dola.scores.as_ref().unwrap()[0];
    assert_ne!(contrast, &dola.logits.as_ref().unwrap()[0]);
    assert!(
        contrast.row(0).contains(&f32::NEG_INFINITY),
        "relative top filter"
    );
    let chosen = dola.generated(0)[0] as usize;
    let best = contrast
        .row(0)
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(contrast.row(0)[chosen], best);
}

#[derive(Default)]
struct Collect(Vec<u32>, usize);

impl TokenStreamer for Collect {
    fn put(&mut self, tokens: &[u32]) -> lmgen::Result<()> {
        self.0.extend_from_slice(tokens);
        Ok(())
    }
    fn end(&mut self) -> lmgen::Result<()> {
        self.1 += 1;
        Ok(())
    }
}

#[test]
fn both_modes_stream_their_tokens() {
    for fields in [
        json!({"penalty_alpha": 0.6, "top_k": 4, "max_new_tokens": 6}),
        json!({"dola_layers": "low", "max_new_tokens": 6}),
    ] {
        let mut sink = Collect::default();
        let options = GenerateOptions {
            streamer: Some(&mut sink),
            ..GenerateOptions::default()
        };
        let out = pipe("llama")
            .generate_with(&prompt(), &config(fields.clone()), options)
            .unwrap();
        assert_eq!(sink.0, out.sequences[0], "{fields}");
        assert_eq!(sink.1, 1);
    }
}

/// The hidden states both modes read: `num_hidden_layers + 1` of them, every position, the last
/// one after the final norm (the LM head over it gives the logits); none unless asked, with the
/// same logits either way.
#[test]
fn hidden_states_are_opt_in_and_end_with_the_normed_last_state() {
    let ids = [1u32, 15, 27, 300, 42];
    for model in MODELS {
        let m = pipe(model).model.as_ref();
        let cfg = m.config();
        let input_ids = Tensor::new(&[ids], &Device::Cpu).unwrap();
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4]], &Device::Cpu).unwrap();
        let forward = |output_hidden_states| {
            let input = ForwardInput {
                input_ids: &input_ids,
                position_ids: &pos,
                attention_mask: None,
                logits_to_keep: LogitsToKeep::Last,
                output_hidden_states,
                output_attentions: false,
                num_hidden_layers: None,
                device_positions: None,
            };
            m.forward(&input, &mut DynamicCache::new()).unwrap()
        };
        let plain = forward(false);
        assert!(plain.hidden_states.is_none(), "{model}");
        let out = forward(true);
        let states = out.hidden_states.as_ref().unwrap();
        assert_eq!(states.len(), cfg.num_hidden_layers + 1, "{model}");
        for h in states {
            assert_eq!(
                h.dims3().unwrap(),
                (1, ids.len(), cfg.hidden_size),
                "{model}"
            );
        }
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&plain.logits), flat(&out.logits), "{model}");
        let last = out
            .last_hidden_state()
            .unwrap()
            .narrow(1, ids.len() - 1, 1)
            .unwrap();
        let mut head = flat(&m.lm_head(&last).unwrap());
        if let Some(cap) = cfg.final_logit_softcapping {
            head.iter_mut()
                .for_each(|x| *x = (*x / cap as f32).tanh() * cap as f32);
        }
        let logits = flat(&out.logits);
        let diff = head
            .iter()
            .zip(&logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "{model}: lm_head(last hidden state) differs by {diff}"
        );
        // The embedding output is not the final state.
        assert_ne!(
            flat(&states[0]),
            flat(&states[cfg.num_hidden_layers]),
            "{model}"
        );
    }
}
