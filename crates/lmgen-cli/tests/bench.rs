//! Smoke test of `lmgen init-random` and `lmgen bench` (not a timed test: it checks that every
//! figure is there and sane, never how fast).

use std::process::Command;

use anyhow::{ensure, Result};
use serde_json::Value;

const LLAMA_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/golden/models/llama/config.json"
);

fn lmgen(args: &[&str]) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "lmgen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn positive(v: &Value, what: &str) -> Result<f64> {
    let x = v.as_f64().unwrap_or(f64::NAN);
    ensure!(x.is_finite() && x > 0.0, "{what} = {v}");
    Ok(x)
}

#[test]
fn bench_reports_every_figure_for_a_random_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().to_str().unwrap_or_default();
    lmgen(&[
        "init-random",
        "--config",
        LLAMA_CONFIG,
        "--dtype",
        "bf16",
        "--out",
        out,
    ])?;
    for quantize in [None, Some("q8_0")] {
        let mut args = vec![
            "bench",
            "--model",
            out,
            "--prefill",
            "8,16",
            "--batch",
            "1,2",
            "--prompt-len",
            "4",
            "--new-tokens",
            "3",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--bandwidth-mib",
            "64",
            "--threads",
            "2",
            "--json",
            "-",
        ];
        if let Some(q) = quantize {
            args.extend(["--quantize", q]);
        }
        let report: Value = serde_json::from_str(&lmgen(&args)?)?;
        positive(&report["bandwidth_gb_s"], "bandwidth")?;
        positive(&report["weight_bytes_read_per_step"], "bytes per step")?;
        positive(&report["peak_rss_bytes_batch1"], "peak RSS")?;
        ensure!(report["threads"] == 2, "threads: {}", report["threads"]);
        let prefill = report["prefill"].as_array().cloned().unwrap_or_default();
        ensure!(
            prefill.len() == 2 && prefill[1]["prompt_len"] == 16,
            "{prefill:?}"
        );
        for p in &prefill {
            positive(&p["tok_s"], "prefill tok/s")?;
            positive(&p["ttft_s"], "TTFT")?;
        }
        let decode = report["decode"].as_array().cloned().unwrap_or_default();
        ensure!(decode.len() == 2 && decode[1]["batch"] == 2, "{decode:?}");
        for d in &decode {
            positive(&d["tok_s"], "decode tok/s")?;
            positive(&d["bound_tok_s"], "bound")?;
            positive(&d["fraction_of_bound"], "fraction of bound")?;
        }
    }
    Ok(())
}

#[test]
fn init_random_names_a_bad_config() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args([
            "init-random",
            "--config",
            "/no/such.json",
            "--out",
            "/tmp/x",
        ])
        .output()?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("/no/such.json"), "{err}");
    Ok(())
}

#[test]
fn empty_lists_skip_a_part_and_bad_sizes_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().to_str().unwrap_or_default();
    lmgen(&["init-random", "--config", LLAMA_CONFIG, "--out", out])?;
    let common = [
        "bench",
        "--model",
        out,
        "--new-tokens",
        "2",
        "--prompt-len",
        "4",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--bandwidth-mib",
        "64",
    ];
    // `--prefill=`: decode only; `--batch=`: prefill only (the table says there is no batch-1 RSS).
    let json = |extra: &[&str]| -> Result<Value> {
        let args: Vec<&str> = common.iter().chain(extra).copied().collect();
        Ok(serde_json::from_str(&lmgen(
            &[&args[..], &["--json", "-"]].concat(),
        )?)?)
    };
    let decode_only = json(&["--prefill=", "--batch", "1"])?;
    ensure!(decode_only["prefill"].as_array().is_some_and(Vec::is_empty));
    ensure!(decode_only["decode"]
        .as_array()
        .is_some_and(|d| d.len() == 1));
    let prefill_only = json(&["--prefill", "8", "--batch="])?;
    ensure!(prefill_only["decode"].as_array().is_some_and(Vec::is_empty));
    ensure!(prefill_only["prefill"]
        .as_array()
        .is_some_and(|p| p.len() == 1));
    let table = lmgen(&[&common[..], &["--prefill", "8", "--batch="]].concat())?;
    ensure!(table.contains("no batch-1 decode run"), "{table}");
    for bad in ["--batch=0", "--prefill=8,x"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lmgen"))
            .args([&common[..], &[bad]].concat())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("not a positive integer"),
            "{bad}: {err}"
        );
    }
    Ok(())
}

/// `--generation-config` reaches every run's `generate()`: a quantized cache runs, the same with
/// an `nbits` quanto does not take fails with the cache's own error, and a misspelt field is named.
#[test]
fn generation_config_fields_reach_the_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().to_str().unwrap_or_default();
    lmgen(&["init-random", "--config", LLAMA_CONFIG, "--out", out])?;
    let bench = |config: &str| {
        Command::new(env!("CARGO_BIN_EXE_lmgen"))
            .args([
                "bench",
                "--model",
                out,
                "--prefill=",
                "--batch",
                "1",
                "--new-tokens",
                "6",
                "--prompt-len",
                "4",
                "--reps",
                "1",
                "--warmup",
                "0",
                "--bandwidth-mib",
                "64",
                "--json",
                "-",
                "--generation-config",
                config,
            ])
            .output()
    };
    let ok =
        bench(r#"{"cache_implementation": "quantized", "cache_config": {"residual_length": 2}}"#)?;
    ensure!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: Value = serde_json::from_slice(&ok.stdout)?;
    positive(&report["decode"][0]["tok_s"], "decode tok/s")?;
    for (config, want) in [
        (
            r#"{"cache_implementation": "quantized", "cache_config": {"nbits": 3}}"#,
            "`nbits` for `quanto` backend",
        ),
        (
            r#"{"cache_implementaton": "static"}"#,
            "cache_implementaton",
        ),
        (
            "/no/such/generation_config.json",
            "/no/such/generation_config.json",
        ),
    ] {
        let bad = bench(config)?;
        let err = String::from_utf8_lossy(&bad.stderr);
        ensure!(
            !bad.status.success() && err.contains(want),
            "{config}: {err}"
        );
    }
    Ok(())
}
