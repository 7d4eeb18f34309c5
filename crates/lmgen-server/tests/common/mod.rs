//! What several server test files share.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lmgen::generation::whisper::WhisperOptions;
use lmgen::speech::SpeechPipeline;
use lmgen::GenerationConfig;
use lmgen_server::api::audio::{render, ResponseFormat};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lmgen/tests/fixtures");

/// The golden Whisper checkpoint with a `preprocessor_config.json` whose window is the 40 frames
/// its encoder reads (1 s at 6400 Hz, hop 160), in a directory kept for the whole run.
pub fn whisper_checkpoint() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dst = tmp.path().join("whisper");
        std::fs::create_dir_all(&dst).unwrap();
        let src = Path::new(FIXTURES).join("golden-seq2seq/models/whisper");
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
        std::fs::write(
            dst.join("preprocessor_config.json"),
            r#"{"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80,
                "sampling_rate": 6400, "hop_length": 160, "chunk_length": 1, "n_fft": 400}"#,
        )
        .unwrap();
        (tmp, dst)
    })
    .1
}

/// A short stereo WAV (22.05 kHz, resampled to the checkpoint's 6400 Hz).
pub fn audio_path() -> PathBuf {
    Path::new(FIXTURES).join("whisper_features/stereo_s16_22050.wav")
}

/// The library's answer for the audio file with `whisper` settings, rendered as the server
/// renders `format`.
pub fn expected_transcription(
    whisper: &WhisperOptions,
    task: &str,
    format: ResponseFormat,
) -> String {
    let pipe =
        SpeechPipeline::load(whisper_checkpoint().to_str().unwrap(), &Default::default()).unwrap();
    let samples = lmgen::audio::load_audio(audio_path(), 6400).unwrap();
    let t = pipe
        .transcribe(
            &samples,
            whisper,
            &GenerationConfig::default(),
            Default::default(),
            &mut |_| Ok(()),
        )
        .unwrap();
    render(&t, task, format)
}
