//! OpenAI's audio transcription formats (`POST /v1/audio/transcriptions` and
//! `/v1/audio/translations`, `response_format`): `json`, `text`, `srt`, `verbose_json`, `vtt`.
//! `lmgen transcribe --format` writes the same bodies.

use lmgen::generation::whisper::text::{format_timestamp, TimedText};
use lmgen::speech::Transcription;
use serde_json::{json, Value};

/// `response_format` of a transcription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `{"text": ...}` (OpenAI's default).
    #[default]
    Json,
    /// The text alone.
    Text,
    /// SubRip subtitles.
    Srt,
    /// `json` with the task, language, duration and timed segments.
    VerboseJson,
    /// WebVTT subtitles.
    Vtt,
}

impl ResponseFormat {
    /// Every name, for errors.
    pub const NAMES: &'static str = "json, text, srt, verbose_json, vtt";

    /// Parses OpenAI's name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "verbose_json" => Self::VerboseJson,
            "vtt" => Self::Vtt,
            _ => return None,
        })
    }

    /// The `Content-Type` of the body.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json | Self::VerboseJson => "application/json",
            Self::Text | Self::Srt => "text/plain; charset=utf-8",
            Self::Vtt => "text/vtt; charset=utf-8",
        }
    }
}

/// One SubRip cue (`index` from 1).
pub fn srt_cue(index: usize, s: &TimedText) -> String {
    format!(
        "{index}\n{} --> {}\n{}\n\n",
        format_timestamp(s.start, true),
        format_timestamp(s.end, true),
        s.text.trim()
    )
}

/// One WebVTT cue (after the `WEBVTT` header).
pub fn vtt_cue(s: &TimedText) -> String {
    format!(
        "{} --> {}\n{}\n\n",
        format_timestamp(s.start, false),
        format_timestamp(s.end, false),
        s.text.trim()
    )
}

/// The `verbose_json` body: `task` is `"transcribe"` or `"translate"`.
pub fn verbose_json(t: &Transcription, task: &str) -> Value {
    let segments: Vec<Value> = t
        .segments
        .iter()
        .zip(&t.segment_tokens)
        .enumerate()
        .map(|(id, (s, tokens))| {
            json!({
                "id": id,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": tokens,
            })
        })
        .collect();
    json!({
        "task": task,
        "language": t.language.map(|(_, name)| name),
        "duration": t.duration,
        "text": t.text,
        "segments": segments,
    })
}

/// The body of `t` in `format`.
pub fn render(t: &Transcription, task: &str, format: ResponseFormat) -> String {
    match format {
        ResponseFormat::Json => json!({ "text": t.text }).to_string(),
        ResponseFormat::VerboseJson => verbose_json(t, task).to_string(),
        ResponseFormat::Text => format!("{}\n", t.text.trim()),
        ResponseFormat::Srt => t
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| srt_cue(i + 1, s))
            .collect(),
        ResponseFormat::Vtt => std::iter::once("WEBVTT\n\n".to_string())
            .chain(t.segments.iter().map(vtt_cue))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcription() -> Transcription {
        Transcription {
            text: " Hello there.".into(),
            segments: vec![TimedText {
                start: 0.0,
                end: 1.5,
                text: " Hello there.".into(),
            }],
            segment_tokens: vec![vec![7, 8]],
            language: Some(("en", "english")),
            duration: 1.5,
        }
    }

    #[test]
    fn formats_render_as_openai_writes_them() {
        let t = transcription();
        assert_eq!(
            render(&t, "transcribe", ResponseFormat::Json),
            r#"{"text":" Hello there."}"#
        );
        assert_eq!(
            render(&t, "transcribe", ResponseFormat::Srt),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        );
        assert!(render(&t, "transcribe", ResponseFormat::Vtt).starts_with("WEBVTT\n\n00:00:00.000"));
        let v = verbose_json(&t, "transcribe");
        assert_eq!(v["language"], "english");
        assert_eq!(v["segments"][0]["tokens"], json!([7, 8]));
        assert_eq!(
            ResponseFormat::parse("verbose_json"),
            Some(ResponseFormat::VerboseJson)
        );
        assert_eq!(ResponseFormat::parse("xml"), None);
    }
}
