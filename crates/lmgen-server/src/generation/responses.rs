//! A run answered as OpenAI's Responses API: the `response` object with one output message, or
//! its typed event stream (see [`StreamEvent`]), each event numbered by `sequence_number`.

use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::framing::{self, named, Framing};
use super::{Delta, Job, Run};
use crate::api::responses::{
    Echo, IncompleteDetails, OutputMessage, OutputText, ResponseObject, ResponseUsage, Sequenced,
    StreamEvent,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Runs `job` (one choice): the response object, or its event stream; `echo` is what the
/// response repeats of the request.
pub async fn respond(state: Arc<AppState>, job: Job, echo: Echo) -> Result<Response, ApiError> {
    let stream = job.plan.stream;
    let mut run = super::start(state, job)?;
    if stream {
        return Ok(framing::stream(run, Events { echo, next: 0 }));
    }
    run.wait().await?;
    Ok(Json(run.response(echo)).into_response())
}

impl Run {
    /// The run's random part after `prefix`.
    fn id_with(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.id.rsplit('-').next().unwrap_or_default())
    }

    /// `completed`, `incomplete` (the length limit) or, before the end, `in_progress`.
    fn status(&self) -> &'static str {
        match self.choices[0].finish {
            None => "in_progress",
            Some("length") => "incomplete",
            Some(_) => "completed",
        }
    }

    /// The output message: empty while in progress, else the whole text.
    fn output_message(&self) -> OutputMessage {
        let status = self.status();
        OutputMessage {
            kind: "message",
            id: self.id_with("msg_"),
            status,
            role: "assistant",
            content: match status {
                "in_progress" => Vec::new(),
                _ => vec![self.output_text()],
            },
        }
    }

    fn output_text(&self) -> OutputText {
        OutputText::new(self.choices[0].content().to_string())
    }

    /// The response object as it stands (no output and no usage while in progress).
    fn response(&self, echo: Echo) -> ResponseObject {
        let status = self.status();
        let done = status != "in_progress";
        ResponseObject {
            id: self.id_with("resp_"),
            object: ResponseObject::OBJECT,
            created_at: self.created,
            status,
            error: None,
            incomplete_details: (status == "incomplete").then_some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
            model: self.model.clone(),
            output: match done {
                true => vec![self.output_message()],
                false => Vec::new(),
            },
            usage: done.then(|| ResponseUsage::new(self.prompt_tokens, self.choices[0].tokens)),
            echo,
        }
    }
}

/// The Responses framing of a stream (one message, output index 0, one text part).
struct Events {
    echo: Echo,
    /// The next `sequence_number`.
    next: usize,
}

impl Events {
    fn events(&mut self, list: impl IntoIterator<Item = StreamEvent>) -> Vec<Event> {
        list.into_iter()
            .map(|event| {
                let sequenced = Sequenced {
                    event: &event,
                    sequence_number: self.next,
                };
                self.next += 1;
                named(event.name(), &sequenced)
            })
            .collect()
    }
}

impl Framing for Events {
    fn open(&mut self, run: &Run) -> Vec<Event> {
        let response = run.response(self.echo.clone());
        self.events([
            StreamEvent::Created {
                response: response.clone(),
            },
            StreamEvent::InProgress { response },
            StreamEvent::OutputItemAdded {
                output_index: 0,
                item: run.output_message(),
            },
            StreamEvent::ContentPartAdded {
                item_id: run.id_with("msg_"),
                output_index: 0,
                content_index: 0,
                part: OutputText::new(String::new()),
            },
        ])
    }

    fn delta(&mut self, run: &Run, _index: usize, delta: &Delta) -> Vec<Event> {
        if delta.text.is_empty() {
            return Vec::new();
        }
        self.events([StreamEvent::OutputTextDelta {
            item_id: run.id_with("msg_"),
            output_index: 0,
            content_index: 0,
            delta: delta.text.clone(),
            logprobs: Vec::new(),
        }])
    }

    fn close(&mut self, run: &Run) -> Vec<Event> {
        let item_id = run.id_with("msg_");
        let response = run.response(self.echo.clone());
        let end = match response.status {
            "incomplete" => StreamEvent::Incomplete { response },
            _ => StreamEvent::Completed { response },
        };
        self.events([
            StreamEvent::OutputTextDone {
                item_id: item_id.clone(),
                output_index: 0,
                content_index: 0,
                text: run.choices[0].content().to_string(),
                logprobs: Vec::new(),
            },
            StreamEvent::ContentPartDone {
                item_id,
                output_index: 0,
                content_index: 0,
                part: run.output_text(),
            },
            StreamEvent::OutputItemDone {
                output_index: 0,
                item: run.output_message(),
            },
            end,
        ])
    }

    fn error(&mut self, _run: &Run, error: &ApiError) -> Vec<Event> {
        self.events([StreamEvent::Error {
            code: error.code,
            message: error.message.clone(),
            param: error.param.clone(),
        }])
    }
}
