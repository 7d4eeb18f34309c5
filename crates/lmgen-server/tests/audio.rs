//! `POST /v1/audio/transcriptions` and `/v1/audio/translations` on the golden tiny Whisper
//! checkpoint (random weights: the words are noise, the route is what is checked): the answer is
//! what `SpeechPipeline::transcribe` gives for the same file and settings, in each
//! `response_format`; bad forms are 400s naming the field; the text routes refuse the model.
//! One in-process server, driven with `tower::ServiceExt::oneshot`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::OnceLock;

use axum::http::StatusCode;
use common::audio_path;
use lmgen::generation::whisper::WhisperOptions;
use lmgen_server::api::audio::ResponseFormat;
use serde_json::{json, Value};

const BOUNDARY: &str = "lmgen-test-boundary";

fn server() -> &'static common::InProcess {
    static SERVER: OnceLock<common::InProcess> = OnceLock::new();
    SERVER.get_or_init(|| {
        let model = common::whisper_checkpoint().to_str().unwrap();
        let argv = [
            "serve",
            "--model",
            model,
            "--served-model-name",
            "tiny-whisper",
        ];
        common::InProcess::start(&argv, 1 << 22)
    })
}

/// A multipart body of text `fields` and, when given, the audio file.
fn form(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        body.extend(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// POSTs a form: the status, the content type and the body.
fn post(path: &str, body: Vec<u8>) -> (StatusCode, String, String) {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    server().post(path, &content_type, body)
}

fn expected(whisper: &WhisperOptions, task: &str, format: ResponseFormat) -> String {
    common::expected_transcription(whisper, task, format)
}

#[test]
fn each_format_answers_what_the_library_transcribes() {
    let audio = std::fs::read(audio_path()).unwrap();
    let file = Some(("speech.wav", audio.as_slice()));
    let plain = WhisperOptions {
        task: Some("transcribe".into()),
        ..WhisperOptions::default()
    };
    let timed = WhisperOptions {
        return_timestamps: Some(true),
        ..plain.clone()
    };
    for (name, format, options, kind) in [
        ("json", ResponseFormat::Json, &plain, "application/json"),
        (
            "text",
            ResponseFormat::Text,
            &plain,
            "text/plain; charset=utf-8",
        ),
        (
            "verbose_json",
            ResponseFormat::VerboseJson,
            &timed,
            "application/json",
        ),
        (
            "srt",
            ResponseFormat::Srt,
            &timed,
            "text/plain; charset=utf-8",
        ),
        (
            "vtt",
            ResponseFormat::Vtt,
            &timed,
            "text/vtt; charset=utf-8",
        ),
    ] {
        let body = form(
            &[("model", "tiny-whisper"), ("response_format", name)],
            file,
        );
        let (status, content_type, text) = post("/v1/audio/transcriptions", body);
        assert_eq!(status, StatusCode::OK, "{name}: {text}");
        assert_eq!(content_type, kind, "{name}");
        assert_eq!(text, expected(options, "transcribe", format), "{name}");
    }
    let body = form(
        &[
            ("model", "tiny-whisper"),
            ("response_format", "verbose_json"),
        ],
        file,
    );
    let (status, _, text) = post("/v1/audio/translations", body);
    assert_eq!(status, StatusCode::OK, "{text}");
    let translate = WhisperOptions {
        task: Some("translate".into()),
        return_timestamps: Some(true),
        ..WhisperOptions::default()
    };
    let want = expected(&translate, "translate", ResponseFormat::VerboseJson);
    assert_eq!(text, want);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["task"], "translate");
}

#[test]
fn bad_forms_are_answered_naming_the_field() {
    let audio = std::fs::read(audio_path()).unwrap();
    let file = Some(("speech.wav", audio.as_slice()));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (form(&[("model", "tiny-whisper")], None), "file"),
        (form(&[], file), "model"),
        (
            form(
                &[("model", "tiny-whisper"), ("response_format", "xml")],
                file,
            ),
            "response_format",
        ),
        (
            form(&[("model", "tiny-whisper"), ("language", "klingon")], file),
            "language",
        ),
        (
            form(&[("model", "tiny-whisper"), ("temperature", "2")], file),
            "temperature",
        ),
        (
            form(
                &[
                    ("model", "tiny-whisper"),
                    ("timestamp_granularities[]", "word"),
                ],
                file,
            ),
            "timestamp_granularities[]",
        ),
    ];
    for (body, param) in cases {
        let (status, _, text) = post("/v1/audio/transcriptions", body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{param}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["param"], param, "{text}");
    }
    let (status, _, text) = post(
        "/v1/audio/transcriptions",
        form(&[("model", "other")], file),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let not_audio = form(&[("model", "tiny-whisper")], Some(("notes.txt", b"hello")));
    let (status, _, text) = post("/v1/audio/transcriptions", not_audio);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("notes.txt"), "{text}");
}

#[test]
fn text_routes_refuse_a_speech_model() {
    let body = json!({"model": "tiny-whisper", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, text) = server().post(
        "/v1/chat/completions",
        "application/json",
        body.to_string().into_bytes(),
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "model");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/audio/transcriptions"));
}
