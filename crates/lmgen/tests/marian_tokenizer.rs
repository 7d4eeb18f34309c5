//! Marian's text path (a folder with `source.spm`, `target.spm`, `vocab.json` and no
//! tokenizer.json) against transformers 5.17's `MarianTokenizer`: `tests/fixtures/golden-seq2seq/
//! marian-text`, made by `tools/make_golden_marian_tok.py` (see its README).
//!
//! - `marian_text`: shared vocabulary, source .spm with `nmt_nfkc` (opus-mt's normalization),
//!   six source pieces left out of vocab.json, a tiny random MarianMTModel;
//! - `marian_sep`: `separate_vocabs`, a source .spm with the identity normalization that keeps
//!   extra whitespace, a target .spm without the dummy prefix.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use lmgen::tokenizer::{Detokenizer, IncrementalText};
use lmgen::{Pipeline, Tokenizer};
use serde_json::Value;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-seq2seq/marian-text")
}

fn cases() -> Result<Value> {
    let text = std::fs::read_to_string(golden().join("cases.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn ids(v: &Value) -> Result<Vec<u32>> {
    v.as_array()
        .context("an id list")?
        .iter()
        .map(|x| Ok(u32::try_from(x.as_u64().context("an id")?)?))
        .collect()
}

const TOKENIZERS: [&str; 2] = ["marian_text", "marian_sep"];

#[test]
fn encoding_gives_marian_tokenizers_ids() -> Result<()> {
    let cases = cases()?;
    for name in TOKENIZERS {
        let tok = Tokenizer::from_dir(&golden().join(name))?;
        assert!(tok.is_sentencepiece());
        let encode = cases["tokenizers"][name]["encode"]
            .as_array()
            .context("encode")?;
        assert!(encode.len() >= 40, "{name}: {} strings", encode.len());
        let mut failures = Vec::new();
        for case in encode {
            let text = case["text"].as_str().context("text")?;
            let want = ids(&case["ids"])?;
            let got = tok.encode(text)?;
            if got != want {
                failures.push(format!("{name} {text:?}: got {got:?}, want {want:?}"));
            }
            // Without special tokens: the same ids less the appended `</s>`.
            assert_eq!(tok.encode_with(text, false)?, want[..want.len() - 1]);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
    Ok(())
}

#[test]
fn decoding_gives_marian_tokenizers_text() -> Result<()> {
    let cases = cases()?;
    for name in TOKENIZERS {
        let tok = Tokenizer::from_dir(&golden().join(name))?;
        let mut failures = Vec::new();
        let decode = cases["tokenizers"][name]["decode"]
            .as_array()
            .context("decode")?;
        for case in decode {
            let ids = ids(&case["ids"])?;
            for (skip, key) in [(false, "keep"), (true, "skip")] {
                let got = tok.decode(&ids, skip);
                match (&case[key], got) {
                    (Value::String(want), Ok(got)) if *want == got => {}
                    (Value::Null, Err(e)) => assert!(e.to_string().contains("cannot decode id")),
                    (want, got) => failures.push(format!(
                        "{name} {ids:?} skip={skip}: got {got:?}, want {want}"
                    )),
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
    Ok(())
}

/// What decoding token by token ([`IncrementalText`], the server's and the CLI's streams) adds up
/// to: the whole decode, for every decode case that decodes.
#[test]
fn streamed_text_adds_up_to_the_whole_decode() -> Result<()> {
    let cases = cases()?;
    for name in TOKENIZERS {
        let tok = Arc::new(Tokenizer::from_dir(&golden().join(name))?);
        for skip in [false, true] {
            let detok = Detokenizer::new(tok.clone(), skip);
            for case in cases["tokenizers"][name]["decode"]
                .as_array()
                .context("decode")?
            {
                let Some(want) = case[if skip { "skip" } else { "keep" }].as_str() else {
                    continue;
                };
                let mut text = IncrementalText::new();
                let mut pieces = String::new();
                for &id in &ids(&case["ids"])? {
                    pieces.push_str(text.push(&detok, &[id])?);
                }
                pieces.push_str(text.finish(&detok)?);
                assert_eq!(pieces, want, "{name} {} skip={skip}", case["ids"]);
            }
        }
    }
    Ok(())
}

/// Text in, transformers' greedy ids and decoded text out, through the one-call path.
#[test]
fn generation_from_text_matches_transformers() -> Result<()> {
    let cases = cases()?;
    let dir = golden().join("marian_text");
    let pipe = Pipeline::from_pretrained(dir.to_str().context("path")?)?;
    let none = lmgen::GenerationConfig::default();
    for case in cases["generate"].as_array().context("generate")? {
        let prompt = case["prompt"].as_str().context("prompt")?;
        let input = pipe.encode_prompts(&[prompt.to_string()], &none)?;
        assert_eq!(input.input_ids, [ids(&case["input_ids"])?], "{prompt:?}");
        let out = pipe.generate(&input, &none)?;
        assert_eq!(out.sequences[0], ids(&case["sequence"])?, "{prompt:?}");
        let want = case["text"].as_str().context("text")?;
        assert_eq!(pipe.generate_text(prompt, &none)?, want, "{prompt:?}");
    }
    Ok(())
}

/// A folder that is neither kind, a Marian folder missing a file, and .spm files lmgen cannot
/// run: each error names the file and what is wrong.
#[test]
fn bad_marian_folders_are_named() -> Result<()> {
    let src = golden().join("marian_sep");
    let copy = |skip: &str| -> Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        for f in std::fs::read_dir(&src)? {
            let f = f?;
            if f.file_name() != skip {
                std::fs::copy(f.path(), dir.path().join(f.file_name()))?;
            }
        }
        Ok(dir)
    };
    let err = |dir: &tempfile::TempDir| match Tokenizer::from_dir(dir.path()) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };

    let empty = tempfile::tempdir()?;
    let e = err(&empty);
    assert!(
        e.contains("tokenizer.json") && e.contains("source.spm"),
        "{e}"
    );

    let dir = copy("target.spm")?;
    let e = err(&dir);
    assert!(e.contains("target.spm") && e.contains("not found"), "{e}");

    let dir = copy("target_vocab.json")?;
    let e = err(&dir);
    assert!(
        e.contains("target_vocab.json") && e.contains("separate_vocabs"),
        "{e}"
    );

    let dir = copy("")?;
    std::fs::write(dir.path().join("source.spm"), b"not a model")?;
    let e = err(&dir);
    assert!(e.contains("source.spm") && e.contains("ModelProto"), "{e}");

    // ModelProto { trainer_spec { model_type: BPE } }
    std::fs::write(dir.path().join("source.spm"), [0x12, 0x02, 0x18, 0x02])?;
    let e = err(&dir);
    assert!(e.contains("source.spm") && e.contains("BPE"), "{e}");

    // ModelProto { pieces { piece: "a" } }: no unknown piece.
    std::fs::write(
        dir.path().join("source.spm"),
        [0x0a, 0x03, 0x0a, 0x01, b'a'],
    )?;
    let e = err(&dir);
    assert!(
        e.contains("source.spm") && e.contains("unknown piece"),
        "{e}"
    );

    let dir = copy("")?;
    std::fs::write(dir.path().join("vocab.json"), r#"{"<unk>": -1}"#)?;
    let e = err(&dir);
    assert!(e.contains("vocab.json") && e.contains("<unk>"), "{e}");

    std::fs::write(dir.path().join("vocab.json"), r#"{"a": 0}"#)?;
    let e = err(&dir);
    assert!(
        e.contains("vocab.json") && e.contains("unknown token"),
        "{e}"
    );
    Ok(())
}
