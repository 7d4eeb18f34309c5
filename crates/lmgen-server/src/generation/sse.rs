//! The streaming answer: server-sent events in OpenAI's chunk format (`chat.completion.chunk` /
//! `text_completion`), a usage chunk when `stream_options.include_usage` asks for one, an error
//! event if the request fails after the 200, and `data: [DONE]`. A client that goes away closes
//! the channel: the task ends and the request's [`CancelGuard`](super::CancelGuard) cancels it.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Delta, Endpoint, Run};
use crate::api::response::{
    ChatChunkChoice, ChatCompletionChunk, ChatDelta, ChunkUsage, Completion, CompletionChoice,
    CompletionChunk, FunctionCallDelta, ToolCallDelta, Usage,
};

/// The choices of one chunk, in the endpoint's shape.
enum ChunkChoices {
    Completion(Vec<CompletionChoice>),
    Chat(Vec<ChatChunkChoice>),
}

/// `v` as the data of an event.
fn event(v: &impl Serialize) -> Event {
    Event::default().json_data(v).unwrap_or_else(|e| {
        // Our response structs always serialize; say so if one did not.
        tracing::error!(error = %e, "cannot serialize a chunk");
        Event::default().data("{}")
    })
}

impl Run {
    /// One chunk event around `choices` (with `usage` when asked for).
    fn chunk(&self, choices: ChunkChoices, usage: Option<Usage>) -> Event {
        let usage = match self.include_usage {
            true => ChunkUsage::Sent(usage),
            false => ChunkUsage::Omitted,
        };
        match choices {
            ChunkChoices::Completion(choices) => event(&CompletionChunk {
                head: self.head(Completion::OBJECT),
                choices,
                usage,
            }),
            ChunkChoices::Chat(choices) => event(&ChatCompletionChunk {
                head: self.head(ChatCompletionChunk::OBJECT),
                choices,
                usage,
            }),
        }
    }

    /// The chunk choices of what `d` adds to choice `index`: one chunk, and for chat one more
    /// per part of a tool call (a new call's id, type and name; then what its arguments gained);
    /// the last one carries the finish reason.
    fn delta_choices(&self, index: usize, d: &Delta) -> Vec<ChunkChoices> {
        let logprobs = !d.logprobs.is_empty();
        match self.endpoint {
            Endpoint::Completions => vec![ChunkChoices::Completion(vec![CompletionChoice {
                index,
                text: d.text.clone(),
                logprobs: self.completion_logprobs(&d.logprobs).filter(|_| logprobs),
                finish_reason: d.finish,
            }])],
            Endpoint::Chat => {
                let reasoning = &d.parsed.reasoning;
                let calls = &d.parsed.calls;
                let content = (!d.text.is_empty()
                    || (d.finish.is_none() && reasoning.is_empty() && calls.is_empty()))
                .then(|| d.text.clone());
                let mut deltas = Vec::new();
                if content.is_some() || !reasoning.is_empty() || logprobs || calls.is_empty() {
                    deltas.push((
                        ChatDelta {
                            content,
                            reasoning_content: (!reasoning.is_empty()).then(|| reasoning.clone()),
                            ..ChatDelta::default()
                        },
                        self.chat_logprobs(&d.logprobs).filter(|_| logprobs),
                    ));
                }
                for call in calls {
                    let mut parts = Vec::new();
                    if let Some(name) = &call.name {
                        parts.push(ToolCallDelta {
                            index: call.index,
                            id: Some(super::call_id()),
                            kind: Some("function"),
                            function: FunctionCallDelta {
                                name: Some(name.clone()),
                                arguments: String::new(),
                            },
                        });
                    }
                    if !call.arguments.is_empty() {
                        parts.push(ToolCallDelta {
                            index: call.index,
                            id: None,
                            kind: None,
                            function: FunctionCallDelta {
                                name: None,
                                arguments: call.arguments.clone(),
                            },
                        });
                    }
                    for part in parts {
                        let delta = ChatDelta {
                            tool_calls: Some(vec![part]),
                            ..ChatDelta::default()
                        };
                        deltas.push((delta, None));
                    }
                }
                let last = deltas.len().saturating_sub(1);
                deltas
                    .into_iter()
                    .enumerate()
                    .map(|(k, (delta, logprobs))| {
                        ChunkChoices::Chat(vec![ChatChunkChoice {
                            index,
                            delta,
                            logprobs,
                            finish_reason: d.finish.filter(|_| k == last),
                        }])
                    })
                    .collect()
            }
        }
    }

    /// No choices: the chunk that carries the usage.
    fn no_choices(&self) -> ChunkChoices {
        match self.endpoint {
            Endpoint::Completions => ChunkChoices::Completion(Vec::new()),
            Endpoint::Chat => ChunkChoices::Chat(Vec::new()),
        }
    }

    /// Streams chunks as server-sent events, ending with `data: [DONE]`.
    pub(super) fn stream(mut self) -> impl IntoResponse {
        let (out, events) = mpsc::channel::<Result<Event, Infallible>>(64);
        tokio::spawn(async move {
            if self.endpoint == Endpoint::Chat {
                for index in 0..self.choices.len() {
                    let first = ChatChunkChoice {
                        index,
                        delta: ChatDelta {
                            role: Some("assistant"),
                            content: Some(String::new()),
                            ..ChatDelta::default()
                        },
                        logprobs: None,
                        finish_reason: None,
                    };
                    let chunk = self.chunk(ChunkChoices::Chat(vec![first]), None);
                    if out.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
            while !self.all_done() {
                let next = tokio::select! {
                    next = self.rx.recv() => next,
                    () = out.closed() => return, // the client went away; the guard cancels
                };
                let Some((index, update)) = next else { break };
                let delta = self.apply(index, update);
                if let Some(e) = &delta.error {
                    let _ = out.send(Ok(event(&e.body()))).await;
                    let _ = out.send(Ok(Event::default().data("[DONE]"))).await;
                    return;
                }
                let parsed = &delta.parsed;
                if delta.text.is_empty()
                    && delta.finish.is_none()
                    && delta.logprobs.is_empty()
                    && parsed.reasoning.is_empty()
                    && parsed.calls.is_empty()
                {
                    continue;
                }
                for choices in self.delta_choices(index, &delta) {
                    let chunk = self.chunk(choices, None);
                    if out.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
            if self.include_usage {
                let chunk = self.chunk(self.no_choices(), Some(self.usage()));
                if out.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            let _ = out.send(Ok(Event::default().data("[DONE]"))).await;
        });
        Sse::new(ReceiverStream::new(events)).keep_alive(KeepAlive::default())
    }
}
