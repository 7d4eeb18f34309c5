//! A run answered as Anthropic's Messages API: the `message` object, or its event stream
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`s,
//! `content_block_stop`, `message_delta`, `message_stop`; `error` if it fails after the 200).

use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::framing::{self, named, Framing};
use super::{Delta, Job, Run};
use crate::api::anthropic::{
    BlockDelta, DeltaUsage, ErrorResponse, Message, MessageDelta, StreamEvent, TextBlock, Usage,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Runs `job` (one choice): the message, or its event stream.
pub async fn respond(state: Arc<AppState>, job: Job) -> Result<Response, ApiError> {
    let stream = job.plan.stream;
    let mut run = super::start(state, job)?;
    if stream {
        return Ok(framing::stream(run, Events));
    }
    run.wait().await?;
    let (stop_reason, stop_sequence) = run.stop_reason();
    let text = run.choices[0].content().to_string();
    Ok(Json(run.message(vec![TextBlock::new(text)], stop_reason, stop_sequence)).into_response())
}

impl Run {
    /// `msg_` and the run's random part.
    fn message_id(&self) -> String {
        format!("msg_{}", self.id.rsplit('-').next().unwrap_or_default())
    }

    /// Why the (first) choice ended, as Anthropic says it, and the stop sequence if one did.
    fn stop_reason(&self) -> (Option<&'static str>, Option<String>) {
        let c = &self.choices[0];
        match c.finish {
            None => (None, None),
            Some("length") => (Some("max_tokens"), None),
            Some(_) => match c.text.stop_sequence() {
                Some(s) => (Some("stop_sequence"), Some(s.to_string())),
                None => (Some("end_turn"), None),
            },
        }
    }

    fn message(
        &self,
        content: Vec<TextBlock>,
        stop_reason: Option<&'static str>,
        stop_sequence: Option<String>,
    ) -> Message {
        Message {
            id: self.message_id(),
            kind: Message::TYPE,
            role: "assistant",
            model: self.model.clone(),
            content,
            stop_reason,
            stop_sequence,
            usage: Usage {
                input_tokens: self.prompt_tokens,
                output_tokens: self.choices[0].tokens,
            },
        }
    }
}

/// The Messages framing of a stream (one text block, index 0).
struct Events;

fn events(list: impl IntoIterator<Item = StreamEvent>) -> Vec<Event> {
    list.into_iter().map(|e| named(e.name(), &e)).collect()
}

impl Framing for Events {
    fn open(&mut self, run: &Run) -> Vec<Event> {
        events([
            StreamEvent::MessageStart {
                message: run.message(Vec::new(), None, None),
            },
            StreamEvent::ContentBlockStart {
                index: 0,
                content_block: TextBlock::new(String::new()),
            },
            StreamEvent::Ping,
        ])
    }

    fn delta(&mut self, _run: &Run, _index: usize, delta: &Delta) -> Vec<Event> {
        if delta.text.is_empty() {
            return Vec::new();
        }
        events([StreamEvent::ContentBlockDelta {
            index: 0,
            delta: BlockDelta::TextDelta {
                text: delta.text.clone(),
            },
        }])
    }

    fn close(&mut self, run: &Run) -> Vec<Event> {
        let (stop_reason, stop_sequence) = run.stop_reason();
        events([
            StreamEvent::ContentBlockStop { index: 0 },
            StreamEvent::MessageDelta {
                delta: MessageDelta {
                    stop_reason,
                    stop_sequence,
                },
                usage: DeltaUsage {
                    output_tokens: run.choices[0].tokens,
                },
            },
            StreamEvent::MessageStop,
        ])
    }

    fn error(&mut self, _run: &Run, error: &ApiError) -> Vec<Event> {
        vec![named("error", &ErrorResponse::from(error))]
    }
}
