//! `lmgen transcribe` on the golden tiny Whisper checkpoint (random weights: the words are noise,
//! the plumbing is what is checked): the streamed text is the segments' text, `verbose_json`
//! holds what Whisper's generate returned for the same features, and bad input is named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Result;
use lmgen::generation::whisper::{self, WhisperOptions};
use lmgen::speech::SpeechPipeline;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lmgen/tests/fixtures");

/// The golden Whisper checkpoint with a `preprocessor_config.json` whose window is the 40 frames
/// its encoder reads (1 s at 6400 Hz, hop 160).
fn checkpoint(dir: &Path) -> Result<PathBuf> {
    let src = Path::new(FIXTURES).join("golden-seq2seq/models/whisper");
    let dst = dir.join("whisper");
    std::fs::create_dir_all(&dst)?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dst.join(entry.file_name()))?;
    }
    std::fs::write(
        dst.join("preprocessor_config.json"),
        r#"{"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80,
            "sampling_rate": 6400, "hop_length": 160, "chunk_length": 1, "n_fft": 400}"#,
    )?;
    Ok(dst)
}

fn audio() -> PathBuf {
    Path::new(FIXTURES).join("whisper_features/stereo_s16_22050.wav")
}

fn lmgen(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("LMGEN_LOG")
        .output()?)
}

#[test]
fn transcribes_a_file_as_whisper_generate_does() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = checkpoint(tmp.path())?;
    let (model_s, audio_s) = (
        model.to_string_lossy(),
        audio().to_string_lossy().into_owned(),
    );
    let out = lmgen(&[
        "transcribe",
        &audio_s,
        "--model",
        &model_s,
        "--format",
        "verbose_json",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let got: Vec<u32> = v["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| serde_json::from_value::<Vec<u32>>(s["tokens"].clone()).unwrap_or_default())
        .collect();
    // The same features through the library.
    let pipe = SpeechPipeline::load(&model_s, &Default::default())?;
    let samples = lmgen::audio::load_audio(audio(), 6400)?;
    let features = pipe.input_features(&samples)?;
    let want = whisper::generate(
        pipe.model.as_ref(),
        &features,
        &WhisperOptions::default(),
        &pipe.generation_config,
        Default::default(),
    )?;
    let want: Vec<u32> = want.segments[0]
        .iter()
        .flat_map(|s| s.tokens.clone())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert_eq!(v["task"], "transcribe");
    assert!(v["language"].is_string(), "{v}");

    let out = lmgen(&["transcribe", &audio_s, "--model", &model_s])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed = String::from_utf8_lossy(&out.stdout);
    let joined: String = v["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(streamed.trim_end_matches('\n'), joined);
    Ok(())
}

#[test]
fn bad_models_and_files_are_named() -> Result<()> {
    let audio_s = audio().to_string_lossy().into_owned();
    let out = lmgen(&["transcribe", &audio_s])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
    let llama = format!("{FIXTURES}/golden/models/llama");
    let out = lmgen(&["transcribe", &audio_s, "--model", &llama])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Whisper"), "{err}");
    let tmp = tempfile::tempdir()?;
    let model = checkpoint(tmp.path())?;
    std::fs::remove_file(model.join("preprocessor_config.json"))?;
    let out = lmgen(&["transcribe", &audio_s, "--model", &model.to_string_lossy()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("preprocessor_config.json") && !err.contains("panicked"),
        "{err}"
    );
    let model = checkpoint(tmp.path())?;
    let missing = tmp.path().join("nope.wav");
    let out = lmgen(&[
        "transcribe",
        &missing.to_string_lossy(),
        "--model",
        &model.to_string_lossy(),
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.wav") && !err.contains("panicked"),
        "{err}"
    );
    Ok(())
}
