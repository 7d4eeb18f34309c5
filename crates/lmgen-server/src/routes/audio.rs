//! `POST /v1/audio/transcriptions` and `POST /v1/audio/translations` (OpenAI's audio API) on a
//! Whisper checkpoint: a `multipart/form-data` body with the audio `file` (WAV, FLAC, MP3, Ogg
//! Vorbis), `model`, and optionally `language` (transcriptions), `prompt`, `response_format`
//! (`json`, `text`, `srt`, `verbose_json`, `vtt`) and `temperature`.
//!
//! The audio is decoded and transcribed by Whisper's own `generate()` (windows of 30 s with
//! timestamps past 30 s) on a blocking thread. Deliberate differences from OpenAI: `temperature`
//! is the one temperature used (0 or absent: greedy search, no fallback to higher temperatures);
//! `timestamp_granularities[]=word` and `stream=true` are refused.

use std::sync::Arc;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use lmgen::generation::whisper::languages::language_to_id;
use lmgen::generation::whisper::{WhisperGenerationConfig, WhisperOptions};
use lmgen::generation::GenerationConfig;

use crate::api::audio::{render, ResponseFormat};
use crate::error::{ApiError, RequestNames};
use crate::state::AppState;

/// The form fields lmgen reads.
#[derive(Debug, Default)]
struct Form {
    file: Option<(String, Vec<u8>)>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    granularities: Vec<String>,
    stream: Option<String>,
}

/// Which route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Transcribe,
    Translate,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Self::Transcribe => "transcribe",
            Self::Translate => "translate",
        }
    }
}

/// `POST /v1/audio/transcriptions`.
pub async fn transcriptions(
    State(state): State<Arc<AppState>>,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    answer(state, form, Task::Transcribe).await
}

/// `POST /v1/audio/translations`: into English.
pub async fn translations(
    State(state): State<Arc<AppState>>,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    answer(state, form, Task::Translate).await
}

async fn answer(
    state: Arc<AppState>,
    form: Result<Multipart, MultipartRejection>,
    task: Task,
) -> Response {
    match transcribe(state, form, task).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Reads every field of the form (unknown ones are skipped).
async fn read_form(mut multipart: Multipart) -> Result<Form, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("cannot read the multipart body: {}", e.body_text()))
    };
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let file_name = field.file_name().unwrap_or("audio").to_string();
            let bytes = field.bytes().await.map_err(bad)?;
            form.file = Some((file_name, bytes.to_vec()));
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        match name.as_str() {
            "model" => form.model = Some(text),
            "language" => form.language = Some(text),
            "prompt" => form.prompt = Some(text),
            "response_format" => form.response_format = Some(text),
            "temperature" => form.temperature = Some(text),
            "timestamp_granularities[]" | "timestamp_granularities" => {
                form.granularities.push(text)
            }
            "stream" => form.stream = Some(text),
            _ => {}
        }
    }
    Ok(form)
}

async fn transcribe(
    state: Arc<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
    task: Task,
) -> Result<Response, ApiError> {
    let Some(speech) = state.speech.clone() else {
        return Err(ApiError::invalid(
            "model",
            format!(
                "`{}` is a text model; the audio routes need a speech-to-text (Whisper) checkpoint",
                state.model_id
            ),
        ));
    };
    let multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    let form = read_form(multipart).await?;
    let model = form
        .model
        .as_deref()
        .ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
    state.check_model(model)?;
    let (file_name, bytes) = form
        .file
        .ok_or_else(|| ApiError::invalid("file", "`file` is required: the audio to transcribe"))?;
    let format = match form.response_format.as_deref() {
        None => ResponseFormat::Json,
        Some(f) => ResponseFormat::parse(f).ok_or_else(|| {
            ApiError::invalid(
                "response_format",
                format!(
                    "`response_format` must be one of {}, got {f:?}",
                    ResponseFormat::NAMES
                ),
            )
        })?,
    };
    if let Some(g) = form.granularities.iter().find(|g| g.as_str() != "segment") {
        return Err(ApiError::invalid(
            "timestamp_granularities[]",
            format!("only `segment` timestamps are served, got {g:?}"),
        ));
    }
    if form.stream.as_deref().is_some_and(|s| s == "true") {
        return Err(ApiError::invalid(
            "stream",
            "streamed transcriptions are not served; leave `stream` out",
        ));
    }
    let temperature = match form.temperature.as_deref() {
        None => None,
        Some(t) => match t.trim().parse::<f64>() {
            Ok(t) if (0.0..=1.0).contains(&t) => (t > 0.0).then_some(vec![t]),
            _ => {
                return Err(ApiError::invalid(
                    "temperature",
                    format!("`temperature` must be a number in [0, 1], got {t:?}"),
                ))
            }
        },
    };
    let prompt_ids = match form.prompt.as_deref().filter(|p| !p.trim().is_empty()) {
        None => None,
        Some(p) => {
            let prev = speech
                .tokenizer
                .token_to_id("<|startofprev|>")
                .ok_or_else(|| {
                    ApiError::invalid("prompt", "this model's tokenizer has no `<|startofprev|>`")
                })?;
            let text = speech
                .tokenizer
                .encode_with(&format!(" {}", p.trim()), false)
                .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
            Some(std::iter::once(prev).chain(text).collect())
        }
    };
    let language = match task {
        Task::Transcribe => form.language.filter(|l| !l.is_empty()),
        Task::Translate => None,
    };
    if let Some(l) = &language {
        let config = WhisperGenerationConfig::from_config(&speech.generation_config)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let ids = config.lang_to_id.unwrap_or_default();
        language_to_id(l, &ids).map_err(|e| ApiError::invalid("language", e.to_string()))?;
    }
    let whisper = WhisperOptions {
        language: language.map(|l| vec![l]),
        task: Some(task.name().to_string()),
        return_timestamps: matches!(
            format,
            ResponseFormat::Srt | ResponseFormat::Vtt | ResponseFormat::VerboseJson
        )
        .then_some(true),
        prompt_ids,
        temperature,
        ..WhisperOptions::default()
    };
    let _slot = state.admit(1)?;
    let names = RequestNames {
        prompt: "file",
        max_tokens: "max_tokens",
    };
    let body = tokio::task::spawn_blocking(move || -> lmgen::Result<String> {
        let rate = speech.feature_extractor.config().sampling_rate;
        let samples = lmgen::audio::load_audio_bytes(&bytes, &file_name, rate)?;
        let t = speech.transcribe(
            &samples,
            &whisper,
            &GenerationConfig::default(),
            Default::default(),
            &mut |_| Ok(()),
        )?;
        Ok(render(&t, task.name(), format))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the transcription failed: {e}")))?
    .map_err(|e| ApiError::from_lmgen(&e, &names))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}
