//! The streaming answer: server-sent events in OpenAI's chunk format (`chat.completion.chunk` /
//! `text_completion`), a usage chunk when `stream_options.include_usage` asks for one, an error
//! event if the request fails after the 200, and `data: [DONE]`. A client that goes away closes
//! the channel: the task ends and the request's [`CancelGuard`](super::CancelGuard) cancels it.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Delta, Endpoint, Run};
use crate::error::ApiError;

impl Run {
    /// One chunk object around `choices` (with `usage` when asked for).
    fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Value {
        let (_, object) = self.objects();
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        v
    }

    /// The choice object of a chunk: what `d` adds to choice `index`.
    fn delta_json(&self, index: usize, d: &Delta) -> Value {
        let logprobs = if d.logprobs.is_empty() {
            Value::Null
        } else {
            self.logprobs_json(&d.logprobs)
        };
        match self.endpoint {
            Endpoint::Completions => json!({
                "index": index, "text": d.text, "logprobs": logprobs, "finish_reason": d.finish,
            }),
            Endpoint::Chat => {
                let delta = if d.text.is_empty() && d.finish.is_some() {
                    json!({})
                } else {
                    json!({"content": d.text})
                };
                json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": d.finish})
            }
        }
    }

    /// Streams chunks as server-sent events, ending with `data: [DONE]`.
    pub(super) fn stream(mut self) -> impl IntoResponse {
        let (out, events) = mpsc::channel::<Result<Event, Infallible>>(64);
        tokio::spawn(async move {
            let send = |v: Value| Ok(Event::default().data(v.to_string()));
            if self.endpoint == Endpoint::Chat {
                for i in 0..self.choices.len() {
                    let first = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
                    if out.send(send(self.chunk(vec![first], None))).await.is_err() {
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
                    let _ = out.send(send(ApiError::internal(e.clone()).body())).await;
                    let _ = out.send(Ok(Event::default().data("[DONE]"))).await;
                    return;
                }
                if delta.text.is_empty() && delta.finish.is_none() && delta.logprobs.is_empty() {
                    continue;
                }
                let chunk = self.chunk(vec![self.delta_json(index, &delta)], None);
                if out.send(send(chunk)).await.is_err() {
                    return;
                }
            }
            if self.include_usage {
                let usage = self.usage();
                if out
                    .send(send(self.chunk(Vec::new(), Some(usage))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = out.send(Ok(Event::default().data("[DONE]"))).await;
        });
        Sse::new(ReceiverStream::new(events)).keep_alive(KeepAlive::default())
    }
}
