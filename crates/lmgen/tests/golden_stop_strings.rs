//! `StopStringCriteria` against transformers: every `stop_strings` case of `generate.json` is
//! replayed token by token through the criterion, on the case's tokenizer. It must fire exactly at
//! the last generated token of a row that stopped on a stop string, and never before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use lmgen::generation::stop_strings::StopStringCriteria;
use lmgen::generation::{FinishReason, StoppingCriterion};
use lmgen::{TokenId, Tokenizer};
use serde_json::Value;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn ids(v: &Value) -> Result<Vec<TokenId>> {
    v.as_array()
        .ok_or_else(|| anyhow!("expected an array of ids, got {v}"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|x| x as TokenId)
                .ok_or_else(|| anyhow!("bad id {x}"))
        })
        .collect()
}

/// `eos_token_id` of the model's generation_config.json: an id or a list.
fn eos_ids(model_dir: &Path) -> Result<Vec<TokenId>> {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(
        model_dir.join("generation_config.json"),
    )?)?;
    Ok(match &cfg["eos_token_id"] {
        Value::Null => vec![],
        v @ Value::Array(_) => ids(v)?,
        v => vec![v.as_u64().context("eos_token_id")? as TokenId],
    })
}

#[test]
fn stop_strings_fire_where_transformers_stopped() -> Result<()> {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(golden().join("generate.json"))?)?;
    let mut checked = 0;
    let mut fired = 0;
    for case in &cases {
        let cfg = &case["generation_config"];
        let Some(stops) = cfg.get("stop_strings") else {
            continue;
        };
        let name = case["name"].as_str().unwrap_or("?");
        let model = case["model"].as_str().context("model")?;
        let dir = golden().join("models").join(model);
        let stops: Vec<String> = serde_json::from_value(stops.clone())?;
        let tok = Tokenizer::from_dir(&dir)?;
        let mut criterion = StopStringCriteria::new(&tok, &stops)?;
        let eos = eos_ids(&dir)?;
        let pad = cfg["pad_token_id"].as_u64().map(|p| p as TokenId);
        let max_new = cfg["max_new_tokens"].as_u64().context("max_new_tokens")? as usize;

        let inputs = case["input_ids"].as_array().context("input_ids")?;
        let rows = case["expected"]["sequences"]
            .as_array()
            .context("sequences")?;
        let batch = rows.len();
        for (i, row) in rows.iter().enumerate() {
            let seq = ids(row)?;
            let prompt_len = ids(&inputs[i])?.len();
            // A finished row is padded while others go on: drop the padding (keeping one token
            // when the pad id is also the EOS that ended the row).
            let mut end = seq.len();
            if batch > 1 {
                while end > prompt_len + 1 && Some(seq[end - 1]) == pad {
                    end -= 1;
                }
                if end < seq.len() && pad.is_some_and(|p| eos.contains(&p)) {
                    end += 1;
                }
            }
            let last = seq[end - 1];
            let generated = end - prompt_len;
            let by_eos = eos.contains(&last);
            let by_length = generated == max_new;
            let context = format!(
                "case {name} ({model}) row {i}: stop strings {stops:?}, text {:?}",
                tok.decode(&seq[prompt_len..end], false)?
            );
            for t in prompt_len + 1..end {
                assert_eq!(
                    criterion.check(&seq[..t]),
                    None,
                    "{context}: fired early, after {} generated tokens of {generated}",
                    t - prompt_len
                );
            }
            let at_last = criterion.check(&seq[..end]);
            if by_eos {
                // Stopped on EOS: the EOS token holds no stop string.
                assert_eq!(at_last, None, "{context}: stopped on EOS");
            } else if by_length {
                assert_eq!(at_last, None, "{context}: stopped on max_new_tokens");
            } else {
                assert_eq!(
                    at_last,
                    Some(FinishReason::StopString),
                    "{context}: transformers stopped here"
                );
                fired += 1;
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} stop_strings rows");
    assert!(fired >= 1, "no row stopped on a stop string");
    Ok(())
}

/// `transformers_extra/stop_strings.json` (made by `transformers_extra/make.py` with transformers
/// 5.17): for tokenized texts, random ids and stop strings cut into separately tokenized pieces,
/// whether `StopStringCriteria` fires on each prefix. Every prefix must agree.
#[test]
fn stop_strings_agree_with_transformers_on_every_prefix() -> Result<()> {
    let path = golden().join("../transformers_extra/stop_strings.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let cases = file["cases"].as_array().context("cases")?;
    let mut tokenizers = HashMap::new();
    let (mut prefixes, mut fired, mut wrong) = (0, 0, Vec::new());
    for case in cases {
        let model = case["model"].as_str().context("model")?;
        if !tokenizers.contains_key(model) {
            let tok = Tokenizer::from_dir(&golden().join("models").join(model))?;
            tokenizers.insert(model.to_string(), tok);
        }
        let tok = &tokenizers[model];
        let stops: Vec<String> = serde_json::from_value(case["stop_strings"].clone())?;
        let built = StopStringCriteria::new(tok, &stops);
        if case.get("error").is_some() {
            assert!(
                built.is_err(),
                "{model} {stops:?}: transformers refuses these"
            );
            continue;
        }
        let mut criterion = built?;
        for row in case["sequences"].as_array().context("sequences")? {
            let seq = ids(&row["ids"])?;
            let want: Vec<bool> = serde_json::from_value(row["fired"].clone())?;
            for (k, &w) in want.iter().enumerate() {
                let got = criterion.check(&seq[..=k]).is_some();
                prefixes += 1;
                fired += usize::from(w);
                if got != w {
                    wrong.push(format!(
                        "{model} {stops:?} {:?}: transformers {w}, lmgen {got}",
                        &seq[..=k]
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {prefixes} prefixes differ:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    assert!(
        prefixes > 10_000 && fired > 500,
        "{prefixes} prefixes, {fired} fired"
    );
    Ok(())
}
