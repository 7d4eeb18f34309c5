//! The event stream of an API that frames a request's text in typed, named events (Anthropic's
//! Messages, OpenAI's Responses): events before the text, events for each new piece of it,
//! events once every choice ended, and events for an error after the 200. A client that goes
//! away closes the channel: the task ends and the request's [`CancelGuard`](super::CancelGuard)
//! cancels it.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Delta, Run};
use crate::error::ApiError;

/// What an API sends around a request's text.
pub(super) trait Framing: Send + 'static {
    /// Before any text.
    fn open(&mut self, run: &Run) -> Vec<Event>;
    /// What `delta` adds to choice `index` (nothing for an empty delta).
    fn delta(&mut self, run: &Run, index: usize, delta: &Delta) -> Vec<Event>;
    /// After every choice ended.
    fn close(&mut self, run: &Run) -> Vec<Event>;
    /// The request failed after its 200; nothing follows.
    fn error(&mut self, run: &Run, error: &ApiError) -> Vec<Event>;
}

/// `data` as an event named `name` (the SSE `event:` line, before the data as the APIs send it).
pub(super) fn named(name: &'static str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| {
            // The API structs always serialize; say so if one did not.
            tracing::error!(error = %e, event = name, "cannot serialize an event");
            Event::default().event(name).data("{}")
        })
}

/// Streams `run` as server-sent events framed by `framing`.
pub(super) fn stream(mut run: Run, mut framing: impl Framing) -> Response {
    let (out, events) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let send = |batch: Vec<Event>| {
            let out = out.clone();
            async move {
                for e in batch {
                    if out.send(Ok(e)).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        if !send(framing.open(&run)).await {
            return;
        }
        while !run.all_done() {
            let next = tokio::select! {
                next = run.rx.recv() => next,
                () = out.closed() => return, // the client went away; the guard cancels
            };
            let Some((index, update)) = next else { break };
            let delta = run.apply(index, update);
            if let Some(e) = &delta.error {
                send(framing.error(&run, e)).await;
                return;
            }
            if !send(framing.delta(&run, index, &delta)).await {
                return;
            }
        }
        send(framing.close(&run)).await;
    });
    Sse::new(ReceiverStream::new(events))
        .keep_alive(KeepAlive::default())
        .into_response()
}
