//! A choice's output parsed as it streams: each push re-reads the whole text so far (outputs are
//! short next to the model's work per token) and hands out what the parse added. The answer of a
//! non-streamed request is what was handed out, so both kinds of answer agree.

use super::{OutputFormat, Parsed, ToolCall};

/// What a push added to one call: its name when it is new, then text to append to its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDelta {
    /// The call's index among the choice's calls.
    pub index: usize,
    pub name: Option<String>,
    pub arguments: String,
}

/// What one push added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedDelta {
    pub content: String,
    pub reasoning: String,
    pub calls: Vec<CallDelta>,
}

/// The parse of one choice's text.
#[derive(Debug, Clone)]
pub struct OutputParser {
    format: OutputFormat,
    text: String,
    /// What was handed out (calls with the arguments sent so far).
    sent: Parsed,
    done: bool,
}

/// The part of `now` after `sent` (nothing, with an error logged, if `now` went back on it).
fn added(now: &str, sent: &str) -> Option<String> {
    match now.strip_prefix(sent) {
        Some(new) => Some(new.to_string()),
        None => {
            tracing::error!(now, sent, "a tool-call parse went back on its text");
            None
        }
    }
}

impl OutputParser {
    pub fn new(format: OutputFormat) -> Self {
        Self {
            format,
            text: String::new(),
            sent: Parsed::default(),
            done: false,
        }
    }

    /// Adds `piece` of text (`end`: the last); returns what became decided.
    pub fn push(&mut self, piece: &str, end: bool) -> ParsedDelta {
        if self.done || (piece.is_empty() && !end) {
            return ParsedDelta::default(); // nothing new to read
        }
        self.done = end;
        self.text.push_str(piece);
        let now = self.format.parse(&self.text, end);
        let mut delta = ParsedDelta::default();
        if let Some(new) = added(&now.content, &self.sent.content) {
            self.sent.content.push_str(&new);
            delta.content = new;
        }
        if let Some(new) = added(&now.reasoning, &self.sent.reasoning) {
            self.sent.reasoning.push_str(&new);
            delta.reasoning = new;
        }
        for (index, call) in now.calls.iter().chain(&now.open).enumerate() {
            let name = match self.sent.calls.get(index) {
                None => {
                    self.sent.calls.push(ToolCall {
                        name: call.name.clone(),
                        arguments: String::new(),
                    });
                    Some(call.name.clone())
                }
                Some(sent) if sent.name == call.name => None,
                Some(sent) => {
                    tracing::error!(
                        now = call.name,
                        sent = sent.name,
                        "a tool call changed name"
                    );
                    continue;
                }
            };
            let sent = &mut self.sent.calls[index];
            let arguments = added(&call.arguments, &sent.arguments).unwrap_or_default();
            sent.arguments.push_str(&arguments);
            if name.is_some() || !arguments.is_empty() {
                delta.calls.push(CallDelta {
                    index,
                    name,
                    arguments,
                });
            }
        }
        delta
    }

    /// Everything handed out (the whole parse once the last piece is in).
    pub fn parsed(&self) -> &Parsed {
        &self.sent
    }
}
