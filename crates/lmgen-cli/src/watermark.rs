//! `lmgen watermark --request FILE`: score token ids for a watermark, one JSON request per line
//! (DESIGN.md section 4).
//!
//! SynthID (`watermarking_config` with `keys`/`ngram_len`, or taken from the Bayesian detector's
//! `config.json`):
//! ```text
//! {"input_ids": [[int]], "watermarking_config": {...}?, "eos_token_id": int?, "detector": "DIR"?}
//! -> {"g_values": [b][t][depth], "context_repetition_mask": [b][t], "eos_token_mask": [b][len]?,
//!     "posterior": [b]?}
//! ```
//! (`t = len - (ngram_len - 1)`; the masks are 0/1; `eos_token_mask` needs `eos_token_id`, and
//! `posterior`, HF `SynthIDTextWatermarkDetector`, needs a `BayesianDetectorModel.save_pretrained`
//! directory as `detector` and `eos_token_id`.)
//!
//! Green-list watermarks (HF `WatermarkDetector`; any other `watermarking_config`):
//! ```text
//! {"input_ids": [[int]], "watermarking_config": {...}, "vocab_size": int, "bos_token_id": int?,
//!  "ignore_repeated_ngrams": bool?, "z_threshold": float?}
//! -> {"num_tokens_scored": [b], "num_green_tokens": [b], "green_fraction": [b], "z_score": [b],
//!     "p_value": [b], "prediction": [b]}
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use lmgen::generation::logits::{
    BayesianDetectorModel, SynthIDTextWatermarkDetector, SynthIDTextWatermarkLogitsProcessor,
    SynthIDTextWatermarkingConfig, WatermarkDetector, WatermarkLogitsProcessor, WatermarkingConfig,
};
use lmgen::TokenId;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct WatermarkArgs {
    /// Read JSON-lines requests from FILE (`-` for stdin) and write one JSON response per line.
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
}

/// One request line; `null` means absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatermarkRequest {
    input_ids: Vec<Vec<TokenId>>,
    watermarking_config: Option<Value>,
    /// SynthID: a `BayesianDetectorModel` directory (`config.json`, `model.safetensors`).
    detector: Option<PathBuf>,
    eos_token_id: Option<TokenId>,
    /// Green-list watermarks: the model's vocabulary size.
    vocab_size: Option<usize>,
    bos_token_id: Option<TokenId>,
    #[serde(default)]
    ignore_repeated_ngrams: bool,
    z_threshold: Option<f64>,
}

pub fn run(args: WatermarkArgs) -> Result<()> {
    crate::jsonl::serve_lines(&args.request, answer)
}

fn answer(line: &str) -> Result<Value> {
    let req: WatermarkRequest = crate::jsonl::parse_request(line).context("invalid request")?;
    let detector = req
        .detector
        .as_deref()
        .map(|d| BayesianDetectorModel::from_pretrained(Path::new(d)))
        .transpose()?;
    let config = match (&req.watermarking_config, &detector) {
        (Some(c), _) => c.clone(),
        (None, Some(d)) => d.watermarking_config.clone().context(
            "the detector's config.json has no `watermarking_config`; give one in the request",
        )?,
        (None, None) => bail!("a request needs `watermarking_config` (or a SynthID `detector`)"),
    };
    if SynthIDTextWatermarkingConfig::is_synthid(&config) {
        synthid(&req, &config, detector)
    } else {
        if detector.is_some() {
            bail!("`detector` is a SynthID Bayesian detector; this `watermarking_config` is not SynthID's");
        }
        greenlist(&req, &config)
    }
}

fn synthid(
    req: &WatermarkRequest,
    config: &Value,
    detector: Option<BayesianDetectorModel>,
) -> Result<Value> {
    let p = SynthIDTextWatermarkLogitsProcessor::new(SynthIDTextWatermarkingConfig::from_json(
        config,
    )?)?;
    let ids = &req.input_ids;
    let bits = |m: Vec<Vec<bool>>| -> Vec<Vec<u8>> {
        m.into_iter()
            .map(|r| r.into_iter().map(u8::from).collect())
            .collect()
    };
    let mut out = json!({
        "g_values": p.compute_g_values(ids)?,
        "context_repetition_mask": bits(p.compute_context_repetition_mask(ids)?),
    });
    if let Some(eos) = req.eos_token_id {
        out["eos_token_mask"] = json!(bits(p.compute_eos_token_mask(ids, eos)?));
    }
    if let Some(detector) = detector {
        let eos = req
            .eos_token_id
            .context("a `detector` request needs `eos_token_id` (the tokenizer's)")?;
        let d = SynthIDTextWatermarkDetector::new(detector, p, eos)?;
        out["posterior"] = json!(d.detect(ids)?);
    }
    Ok(out)
}

fn greenlist(req: &WatermarkRequest, config: &Value) -> Result<Value> {
    let vocab_size = req
        .vocab_size
        .context("a green-list `watermarking_config` request needs `vocab_size` (the model's)")?;
    let p = WatermarkLogitsProcessor::new(WatermarkingConfig::from_json(config)?, vocab_size)?;
    let d = WatermarkDetector::new(&p, req.bos_token_id, req.ignore_repeated_ngrams);
    let rows = d.detect(&req.input_ids, req.z_threshold.unwrap_or(3.0))?;
    Ok(json!({
        "num_tokens_scored": rows.iter().map(|r| r.num_tokens_scored).collect::<Vec<_>>(),
        "num_green_tokens": rows.iter().map(|r| r.num_green_tokens).collect::<Vec<_>>(),
        "green_fraction": rows.iter().map(|r| r.green_fraction).collect::<Vec<_>>(),
        "z_score": rows.iter().map(|r| r.z_score).collect::<Vec<_>>(),
        "p_value": rows.iter().map(|r| r.p_value).collect::<Vec<_>>(),
        "prediction": rows.iter().map(|r| r.prediction).collect::<Vec<_>>(),
    }))
}
