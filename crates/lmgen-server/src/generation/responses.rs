//! A run answered as OpenAI's Responses API: the `response` object with its output items (the
//! model's reasoning, its message, its function calls), or its typed event stream (see
//! [`StreamEvent`]), each event numbered by `sequence_number`.

use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::framing::{self, named, Framing};
use super::{Delta, Job, Run};
use crate::api::responses::{
    Echo, FunctionCallItem, IncompleteDetails, OutputItem, OutputMessage, OutputText,
    ReasoningItem, ReasoningText, ResponseObject, ResponseUsage, Sequenced, StreamEvent,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Runs `job` (one choice): the response object, or its event stream; `echo` is what the
/// response repeats of the request.
pub async fn respond(state: Arc<AppState>, job: Job, echo: Echo) -> Result<Response, ApiError> {
    let stream = job.plan.stream;
    let mut run = super::start(state, job)?;
    if stream {
        return Ok(framing::stream(run, Events::new(echo)));
    }
    run.wait().await?;
    let slots = run.slots();
    Ok(Json(run.response(echo, &slots)).into_response())
}

/// What an output item holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Reasoning(String),
    Message(String),
    /// The call of this index among the choice's calls.
    Call(usize),
}

impl Slot {
    fn same_kind(&self, other: &Slot) -> bool {
        match (self, other) {
            (Slot::Reasoning(_), Slot::Reasoning(_)) | (Slot::Message(_), Slot::Message(_)) => true,
            (Slot::Call(a), Slot::Call(b)) => a == b,
            _ => false,
        }
    }
}

impl Run {
    /// The run's random part after `prefix`.
    fn id_with(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.id.rsplit('-').next().unwrap_or_default())
    }

    /// The id of output item `index` (`msg_`, `rs_`, `fc_`).
    fn item_id(&self, prefix: &str, index: usize) -> String {
        match index {
            0 => self.id_with(prefix),
            _ => format!("{}_{index}", self.id_with(prefix)),
        }
    }

    /// `completed`, `incomplete` (the length limit) or, before the end, `in_progress`.
    fn status(&self) -> &'static str {
        match self.choices[0].finish {
            None => "in_progress",
            Some("length") => "incomplete",
            Some(_) => "completed",
        }
    }

    /// The whole output's items: reasoning, the message (when there is text, or no call), calls.
    fn slots(&self) -> Vec<Slot> {
        let c = &self.choices[0];
        let Some(output) = &c.output else {
            return vec![Slot::Message(c.content().to_string())];
        };
        let p = output.parsed();
        let mut slots = Vec::new();
        if !p.reasoning.is_empty() {
            slots.push(Slot::Reasoning(p.reasoning.clone()));
        }
        if !p.content.is_empty() || p.calls.is_empty() {
            slots.push(Slot::Message(p.content.clone()));
        }
        slots.extend((0..p.calls.len()).map(Slot::Call));
        slots
    }

    /// Output item `index`, holding `slot`; empty while `status` is `in_progress`.
    fn item(&self, slot: &Slot, index: usize, status: &'static str) -> OutputItem {
        let done = status != "in_progress";
        match slot {
            Slot::Message(text) => OutputItem::Message(OutputMessage {
                kind: "message",
                id: self.item_id("msg_", index),
                status,
                role: "assistant",
                content: match done {
                    true => vec![OutputText::new(text.clone())],
                    false => Vec::new(),
                },
            }),
            Slot::Reasoning(text) => OutputItem::Reasoning(ReasoningItem {
                kind: "reasoning",
                id: self.item_id("rs_", index),
                summary: Vec::new(),
                content: match done {
                    true => vec![ReasoningText {
                        kind: "reasoning_text",
                        text: text.clone(),
                    }],
                    false => Vec::new(),
                },
                status,
            }),
            Slot::Call(i) => {
                let call = self.choices[0]
                    .output
                    .as_ref()
                    .and_then(|o| o.parsed().calls.get(*i));
                OutputItem::FunctionCall(FunctionCallItem {
                    kind: "function_call",
                    id: self.item_id("fc_", index),
                    call_id: format!("{}_{i}", self.id_with("call_")),
                    name: call.map(|c| c.name.clone()).unwrap_or_default(),
                    arguments: match (done, call) {
                        (true, Some(c)) => c.arguments.clone(),
                        _ => String::new(),
                    },
                    status,
                })
            }
        }
    }

    /// The status of an item that is done: the run's, or `completed` while it goes on.
    fn item_status(&self) -> &'static str {
        match self.status() {
            "incomplete" => "incomplete",
            _ => "completed",
        }
    }

    /// The response object as it stands (no output and no usage while in progress), its output
    /// `slots`.
    fn response(&self, echo: Echo, slots: &[Slot]) -> ResponseObject {
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
                true => slots
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.item(s, i, self.item_status()))
                    .collect(),
                false => Vec::new(),
            },
            usage: done.then(|| {
                ResponseUsage::new(
                    self.prompt_tokens,
                    self.choices[0].tokens,
                    self.reasoning_tokens(),
                )
            }),
            echo,
        }
    }
}

/// The Responses framing of a stream: output items opened as their text or calls come, each
/// done before the next is added.
struct Events {
    echo: Echo,
    /// The next `sequence_number`.
    next: usize,
    /// The items so far, the last one open; a message or reasoning item with its text so far.
    slots: Vec<Slot>,
}

impl Events {
    fn new(echo: Echo) -> Self {
        Self {
            echo,
            next: 0,
            slots: Vec::new(),
        }
    }

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

    /// The open item if it holds `slot`'s kind, else a new one (the open one done): its index.
    fn enter(&mut self, run: &Run, slot: Slot, out: &mut Vec<StreamEvent>) -> usize {
        if let Some(last) = self.slots.last() {
            if last.same_kind(&slot) {
                return self.slots.len() - 1;
            }
            self.done(run, out);
        }
        let index = self.slots.len();
        out.push(StreamEvent::OutputItemAdded {
            output_index: index,
            item: run.item(&slot, index, "in_progress"),
        });
        if let Slot::Message(_) = slot {
            out.push(StreamEvent::ContentPartAdded {
                item_id: run.item_id("msg_", index),
                output_index: index,
                content_index: 0,
                part: OutputText::new(String::new()),
            });
        }
        self.slots.push(slot);
        index
    }

    /// The events that end the open item.
    fn done(&self, run: &Run, out: &mut Vec<StreamEvent>) {
        let Some(slot) = self.slots.last() else {
            return;
        };
        let index = self.slots.len() - 1;
        let item = run.item(slot, index, run.item_status());
        match (slot, &item) {
            (Slot::Message(text), _) => out.extend([
                StreamEvent::OutputTextDone {
                    item_id: run.item_id("msg_", index),
                    output_index: index,
                    content_index: 0,
                    text: text.clone(),
                    logprobs: Vec::new(),
                },
                StreamEvent::ContentPartDone {
                    item_id: run.item_id("msg_", index),
                    output_index: index,
                    content_index: 0,
                    part: OutputText::new(text.clone()),
                },
            ]),
            (Slot::Reasoning(text), _) => out.push(StreamEvent::ReasoningTextDone {
                item_id: run.item_id("rs_", index),
                output_index: index,
                content_index: 0,
                text: text.clone(),
            }),
            (Slot::Call(_), OutputItem::FunctionCall(call)) => {
                out.push(StreamEvent::FunctionCallArgumentsDone {
                    item_id: call.id.clone(),
                    output_index: index,
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                })
            }
            (Slot::Call(_), _) => {}
        }
        out.push(StreamEvent::OutputItemDone {
            output_index: index,
            item,
        });
    }
}

impl Framing for Events {
    fn open(&mut self, run: &Run) -> Vec<Event> {
        let response = run.response(self.echo.clone(), &[]);
        self.events([
            StreamEvent::Created {
                response: response.clone(),
            },
            StreamEvent::InProgress { response },
        ])
    }

    fn delta(&mut self, run: &Run, _index: usize, delta: &Delta) -> Vec<Event> {
        let mut out = Vec::new();
        let reasoning = &delta.parsed.reasoning;
        if !reasoning.is_empty() {
            let index = self.enter(run, Slot::Reasoning(String::new()), &mut out);
            if let Some(Slot::Reasoning(text)) = self.slots.last_mut() {
                text.push_str(reasoning);
            }
            out.push(StreamEvent::ReasoningTextDelta {
                item_id: run.item_id("rs_", index),
                output_index: index,
                content_index: 0,
                delta: reasoning.clone(),
            });
        }
        if !delta.text.is_empty() {
            let index = self.enter(run, Slot::Message(String::new()), &mut out);
            if let Some(Slot::Message(text)) = self.slots.last_mut() {
                text.push_str(&delta.text);
            }
            out.push(StreamEvent::OutputTextDelta {
                item_id: run.item_id("msg_", index),
                output_index: index,
                content_index: 0,
                delta: delta.text.clone(),
                logprobs: Vec::new(),
            });
        }
        for call in &delta.parsed.calls {
            let index = self.enter(run, Slot::Call(call.index), &mut out);
            if !call.arguments.is_empty() {
                out.push(StreamEvent::FunctionCallArgumentsDelta {
                    item_id: run.item_id("fc_", index),
                    output_index: index,
                    delta: call.arguments.clone(),
                });
            }
        }
        self.events(out)
    }

    fn close(&mut self, run: &Run) -> Vec<Event> {
        let mut out = Vec::new();
        if self.slots.is_empty() {
            // No text and no call: one empty message, as the whole response has.
            self.enter(run, Slot::Message(String::new()), &mut out);
        }
        self.done(run, &mut out);
        let response = run.response(self.echo.clone(), &self.slots);
        out.push(match response.status {
            "incomplete" => StreamEvent::Incomplete { response },
            _ => StreamEvent::Completed { response },
        });
        self.events(out)
    }

    fn error(&mut self, _run: &Run, error: &ApiError) -> Vec<Event> {
        self.events([StreamEvent::Error {
            code: error.code,
            message: error.message.clone(),
            param: error.param.clone(),
        }])
    }
}
