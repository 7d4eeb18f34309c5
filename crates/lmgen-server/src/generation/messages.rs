//! A run answered as Anthropic's Messages API: the `message` object, or its event stream
//! (`message_start`, `ping`, then per block `content_block_start`, `content_block_delta`s and
//! `content_block_stop`, then `message_delta`, `message_stop`; `error` if it fails after the
//! 200). Tool calls are `tool_use` blocks after the text. With `thinking` enabled the reasoning is
//! a `thinking` block first (streamed as `thinking_delta`s, then an empty `signature_delta`), when
//! the model wrote any.

use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::framing::{self, named, Framing};
use super::{Delta, Job, Run};
use serde_json::{Map, Value};

use crate::api::anthropic::{
    Block, BlockDelta, DeltaUsage, ErrorResponse, Message, MessageDelta, StreamEvent,
    ThinkingDisplay, Usage,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Runs `job` (one choice): the message, or its event stream; `thinking`: how its reasoning
/// comes back (`None`: not at all).
pub async fn respond(
    state: Arc<AppState>,
    job: Job,
    thinking: Option<ThinkingDisplay>,
) -> Result<Response, ApiError> {
    let stream = job.plan.stream;
    let mut run = super::start(state, job)?;
    if stream {
        let events = Events {
            thinking,
            ..Events::default()
        };
        return Ok(framing::stream(run, events));
    }
    run.wait().await?;
    let (stop_reason, stop_sequence) = run.stop_reason();
    let c = &run.choices[0];
    let calls = c
        .output
        .as_ref()
        .map(|o| o.parsed().calls.clone())
        .unwrap_or_default();
    let mut content = Vec::with_capacity(2 + calls.len());
    let reasoning = c
        .output
        .as_ref()
        .map_or("", |o| o.parsed().reasoning.as_str());
    if let (Some(display), false) = (thinking, reasoning.is_empty()) {
        content.push(Block::thinking(match display {
            ThinkingDisplay::Summarized => reasoning.to_string(),
            ThinkingDisplay::Omitted => String::new(),
        }));
    }
    if calls.is_empty() || !c.content().is_empty() {
        content.push(Block::text(c.content().to_string()));
    }
    for call in calls {
        // `{}` if the arguments are not a JSON object (a call cut by `max_tokens`).
        let input = serde_json::from_str::<Map<String, Value>>(&call.arguments).unwrap_or_default();
        content.push(Block::ToolUse {
            id: Block::tool_use_id(),
            name: call.name,
            input: Value::Object(input),
        });
    }
    Ok(Json(run.message(content, stop_reason, stop_sequence)).into_response())
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
            Some("tool_calls") => (Some("tool_use"), None),
            Some(_) => match c.text.stop_sequence() {
                Some(s) => (Some("stop_sequence"), Some(s.to_string())),
                None => (Some("end_turn"), None),
            },
        }
    }

    fn message(
        &self,
        content: Vec<Block>,
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

/// What the open content block of a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// The tool call of this index (among the choice's calls).
    Call(usize),
}

/// The Messages framing of a stream: blocks opened as their text or calls come (text, then a
/// `tool_use` block per call), each closed before the next opens.
#[derive(Debug, Default)]
struct Events {
    /// How reasoning comes back (`None`: not at all).
    thinking: Option<ThinkingDisplay>,
    /// The open block and its index.
    open: Option<(Open, usize)>,
    /// Blocks opened so far.
    blocks: usize,
}

fn events(list: impl IntoIterator<Item = StreamEvent>) -> Vec<Event> {
    list.into_iter().map(|e| named(e.name(), &e)).collect()
}

impl Events {
    /// Closes the open block and opens `block` as `kind`, unless it is open already: the index.
    fn enter(
        &mut self,
        kind: Open,
        block: impl FnOnce() -> Block,
        out: &mut Vec<StreamEvent>,
    ) -> usize {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
            Self::stop(open, index, out);
        }
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((kind, index));
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: block(),
        });
        index
    }
}

impl Events {
    /// Closes block `index` of `kind` (a thinking block gets its signature first).
    fn stop(kind: Open, index: usize, out: &mut Vec<StreamEvent>) {
        if kind == Open::Thinking {
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::SignatureDelta {
                    signature: String::new(),
                },
            });
        }
        out.push(StreamEvent::ContentBlockStop { index });
    }
}

impl Framing for Events {
    fn open(&mut self, run: &Run) -> Vec<Event> {
        events([
            StreamEvent::MessageStart {
                message: run.message(Vec::new(), None, None),
            },
            StreamEvent::Ping,
        ])
    }

    fn delta(&mut self, _run: &Run, _index: usize, delta: &Delta) -> Vec<Event> {
        let mut out = Vec::new();
        if let (Some(display), false) = (self.thinking, delta.parsed.reasoning.is_empty()) {
            let index = self.enter(Open::Thinking, || Block::thinking(String::new()), &mut out);
            if display == ThinkingDisplay::Summarized {
                out.push(StreamEvent::ContentBlockDelta {
                    index,
                    delta: BlockDelta::ThinkingDelta {
                        thinking: delta.parsed.reasoning.clone(),
                    },
                });
            }
        }
        if !delta.text.is_empty() {
            let index = self.enter(Open::Text, || Block::text(String::new()), &mut out);
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::TextDelta {
                    text: delta.text.clone(),
                },
            });
        }
        for call in &delta.parsed.calls {
            let block = || Block::ToolUse {
                id: Block::tool_use_id(),
                name: call.name.clone().unwrap_or_default(),
                input: Value::Object(Map::new()),
            };
            let index = self.enter(Open::Call(call.index), block, &mut out);
            if !call.arguments.is_empty() {
                out.push(StreamEvent::ContentBlockDelta {
                    index,
                    delta: BlockDelta::InputJsonDelta {
                        partial_json: call.arguments.clone(),
                    },
                });
            }
        }
        events(out)
    }

    fn close(&mut self, run: &Run) -> Vec<Event> {
        let mut out = Vec::new();
        if self.blocks == usize::from(self.open.is_some_and(|(k, _)| k == Open::Thinking)) {
            // No text and no call: one empty text block, as the whole message has.
            self.enter(Open::Text, || Block::text(String::new()), &mut out);
        }
        if let Some((kind, index)) = self.open.take() {
            Self::stop(kind, index, &mut out);
        }
        let (stop_reason, stop_sequence) = run.stop_reason();
        out.extend([
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
        ]);
        events(out)
    }

    fn error(&mut self, _run: &Run, error: &ApiError) -> Vec<Event> {
        vec![named("error", &ErrorResponse::from(error))]
    }
}
