//! `token_healing` against transformers 5.17 (`tests/fixtures/token_healing/cases.json`, made by
//! `tools/make_token_healing_golden.py`): the healed prompt and the sequences token for token on
//! gemma2 (sentencepiece-style, left padding), llama3 and gpt2 (byte-level, right padding), and
//! what transformers raises refused naming `token_healing`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use lmgen::generation::config::UnknownFields;
use lmgen::generation::{generate_with, GenerateOptions};
use lmgen::{Error, GenerateInput, GenerationConfig, Pipeline, Tokenizer};
use serde::Deserialize;
use serde_json::{Map, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(Deserialize)]
struct Case {
    name: String,
    model: String,
    tokenizer_kwargs: Map<String, Value>,
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u8>>,
    generation_config: Value,
    #[serde(default = "yes")]
    tokenizer: bool,
    expected: Option<Expected>,
    error: Option<String>,
    lmgen_refuses: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Expected {
    healed_input_ids: Vec<Vec<u32>>,
    sequences: Vec<Vec<u32>>,
}

/// The checkpoint's tokenizer with `kwargs` (what `AutoTokenizer.from_pretrained(dir, **kwargs)`
/// sets) written into a copy of its `tokenizer_config.json`.
fn tokenizer(model_dir: &Path, kwargs: &Map<String, Value>) -> Result<Tokenizer> {
    if kwargs.is_empty() {
        return Ok(Tokenizer::from_dir(model_dir)?);
    }
    let tmp = tempfile::tempdir()?;
    std::fs::copy(
        model_dir.join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )?;
    let mut cfg: Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(
        model_dir.join("tokenizer_config.json"),
    )?)?;
    cfg.extend(kwargs.clone());
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        serde_json::to_string(&cfg)?,
    )?;
    Ok(Tokenizer::from_dir(tmp.path())?)
}

/// What lmgen's error must mention where transformers raised `error`.
fn refusal_for(error: &str) -> Result<&'static str> {
    let known = [
        ("ValueError: Asking to pad", "`pad_token`"),
        ("TypeError: where()", "`bos_token`"),
        (
            "ValueError:  When generating with token healing, you must pass the model's tokenizer",
            "tokenizer",
        ),
    ];
    known
        .iter()
        .find(|(raised, _)| error.starts_with(raised))
        .map(|(_, says)| *says)
        .ok_or_else(|| anyhow!("no lmgen refusal known for transformers' {error:?}"))
}

fn run(pipe: &Pipeline, case: &Case) -> Result<lmgen::GenerateOutput> {
    let dir = fixtures().join("golden/models").join(&case.model);
    let tok = tokenizer(&dir, &case.tokenizer_kwargs)?;
    let input = GenerateInput {
        input_ids: case.input_ids.clone(),
        attention_mask: Some(case.attention_mask.clone()),
    };
    let overrides = GenerationConfig::from_json(&case.generation_config, UnknownFields::Reject)?;
    let mut overrides = overrides;
    overrides.token_healing = Some(true);
    let options = GenerateOptions {
        tokenizer: case.tokenizer.then_some(&tok),
        model_generation_config: Some(&pipe.generation_config),
        ..GenerateOptions::default()
    };
    Ok(generate_with(
        pipe.model.as_ref(),
        &input,
        &pipe.config_with(&overrides),
        options,
    )?)
}

fn check(pipe: &Pipeline, case: &Case) -> Result<()> {
    let got = run(pipe, case);
    match (&case.expected, &case.error, &case.lmgen_refuses) {
        (Some(_), None, Some(why)) => match got {
            Err(e) => {
                let e = e.downcast::<Error>()?;
                if !matches!(&e, Error::Unsupported { field: Some(f), .. } if f == "token_healing")
                {
                    bail!("refused ({why}), but not naming `token_healing`: {e}");
                }
            }
            Ok(out) => bail!(
                "lmgen was to refuse ({why}); it returned {:?}",
                out.sequences
            ),
        },
        (Some(want), None, None) => {
            let out = got?;
            let healed: Vec<&[u32]> = out
                .sequences
                .iter()
                .map(|row| &row[..out.prompt_len.min(row.len())])
                .collect();
            if healed != want.healed_input_ids {
                bail!(
                    "healed prompt\n  got  {healed:?}\n  want {:?}",
                    want.healed_input_ids
                );
            }
            if out.sequences != want.sequences {
                bail!(
                    "sequences\n  got  {:?}\n  want {:?}",
                    out.sequences,
                    want.sequences
                );
            }
        }
        (None, Some(raised), None) => {
            let says = refusal_for(raised)?;
            let e = match got {
                Err(e) => e.downcast::<Error>()?,
                Ok(out) => bail!(
                    "transformers raised {raised:?}; lmgen returned {:?}",
                    out.sequences
                ),
            };
            let named = matches!(&e, Error::GenerationConfig { field: Some(f), .. } if f == "token_healing");
            if !named || !e.to_string().contains(says) {
                bail!("transformers raised {raised:?}; lmgen's error should name `token_healing` and {says}: {e}");
            }
        }
        _ => bail!("a case has `expected` or `error`"),
    }
    Ok(())
}

#[test]
fn token_healing_matches_transformers() -> Result<()> {
    let text = std::fs::read_to_string(fixtures().join("token_healing/cases.json"))?;
    let cases: Vec<Case> = serde_json::from_str(&text)?;
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        if !pipes.contains_key(&case.model) {
            let dir = fixtures().join("golden/models").join(&case.model);
            let pipe = Pipeline::from_pretrained(dir.to_str().context("path")?)?;
            pipes.insert(case.model.clone(), pipe);
        }
        if let Err(e) = check(&pipes[&case.model], case) {
            failures.push(format!("{}/{}: {e:#}", case.model, case.name));
        }
    }
    assert!(cases.len() >= 20, "{} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Through [`Pipeline::generate`] the pipeline's tokenizer and generation config are used: gemma2
/// heals "I read a bo" as transformers does (the golden case's healed prompt).
#[test]
fn the_pipeline_passes_its_tokenizer() -> Result<()> {
    let text = std::fs::read_to_string(fixtures().join("token_healing/cases.json"))?;
    let cases: Vec<Case> = serde_json::from_str(&text)?;
    let case = cases
        .iter()
        .find(|c| c.name == "gemma2_tail_has_extensions")
        .context("case")?;
    let want = case.expected.as_ref().context("expected")?;
    let dir = fixtures().join("golden/models/gemma2");
    let pipe = Pipeline::from_pretrained(dir.to_str().context("path")?)?;
    let overrides = GenerationConfig {
        token_healing: Some(true),
        max_new_tokens: Some(6),
        ..GenerationConfig::default()
    };
    let out = pipe.generate(
        &GenerateInput::single(case.input_ids[0].clone()),
        &overrides,
    )?;
    assert_eq!(out.sequences, want.sequences);
    Ok(())
}

/// An encoder-decoder model (a tiny random T5) is refused by name: transformers heals the
/// decoder's start tokens there, and fails on T5 for want of a BOS token.
#[test]
fn encoder_decoder_models_are_refused() -> Result<()> {
    let config = serde_json::json!({
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "d_ff": 32, "d_kv": 8, "d_model": 32, "num_heads": 4, "num_layers": 1,
        "num_decoder_layers": 1, "vocab_size": 64, "feed_forward_proj": "relu",
        "relative_attention_num_buckets": 8, "relative_attention_max_distance": 20,
        "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
        "is_encoder_decoder": true, "tie_word_embeddings": true, "layer_norm_epsilon": 1e-6,
    });
    let dir = tempfile::tempdir()?;
    lmgen::init::init_random(&config, candle_core::DType::F32, dir.path(), 0)?;
    let checkpoint = lmgen::load::Checkpoint::open(dir.path())?;
    let model = lmgen::models::load_model(&checkpoint, &Default::default())?;
    let tok = Tokenizer::from_dir(&fixtures().join("golden/models/gemma2"))?;
    let config = GenerationConfig {
        token_healing: Some(true),
        max_new_tokens: Some(2),
        decoder_start_token_id: Some(serde_json::json!(0)),
        ..GenerationConfig::default()
    };
    let options = GenerateOptions {
        tokenizer: Some(&tok),
        ..GenerateOptions::default()
    };
    let input = GenerateInput::single(vec![5, 6, 1]);
    let e = generate_with(model.as_ref(), &input, &config, options)
        .err()
        .context("token_healing on T5 ran")?;
    assert!(
        matches!(&e, Error::GenerationConfig { field: Some(f), .. } if f == "token_healing"),
        "{e}"
    );
    assert!(e.to_string().contains("encoder-decoder"), "{e}");
    Ok(())
}
