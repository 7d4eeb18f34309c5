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

/// An in-process server for `lmgen serve` arguments (`argv` without the program name, starting
/// with `serve`), driven with `tower::ServiceExt::oneshot`: no socket, no sleep.
pub struct InProcess {
    pub runtime: tokio::runtime::Runtime,
    pub router: axum::Router,
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: lmgen_server::ServeArgs,
}

impl InProcess {
    /// Starts the engine for `argv`; requests may be up to `max_body_bytes`.
    pub fn start(argv: &[&str], max_body_bytes: usize) -> Self {
        use clap::Parser;
        let args = Cli::try_parse_from(argv).unwrap().serve;
        let state = lmgen_server::start(&args).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Self {
            runtime,
            router: lmgen_server::router(state, max_body_bytes),
        }
    }

    /// POSTs `body` of `content_type` to `path`: the status, the answer's content type and body.
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (axum::http::StatusCode, String, String) {
        use axum::http::header;
        use tower::ServiceExt;
        let request = axum::http::Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let kind = response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, kind, String::from_utf8_lossy(&bytes).into_owned())
        })
    }
}
