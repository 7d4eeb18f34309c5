//! A choice's output parsed as it streams: each push re-reads the whole text so far (outputs are
//! short next to the model's work per token) and hands out what the parse added.

use super::{OutputFormat, Parsed, ToolCall};

/// What one push added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedDelta {
    pub content: String,
    pub reasoning: String,
    /// New calls with their index among the choice's calls.
    pub calls: Vec<(usize, ToolCall)>,
}

/// The parse of one choice's text.
#[derive(Debug, Clone)]
pub struct OutputParser {
    format: OutputFormat,
    text: String,
    /// What was handed out.
    sent: Parsed,
    done: bool,
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
        if self.done {
            return ParsedDelta::default();
        }
        self.done = end;
        self.text.push_str(piece);
        let now = self.format.parse(&self.text, end);
        let added = |now: &str, sent: &str| match now.strip_prefix(sent) {
            Some(new) => new.to_string(),
            None => {
                // Each parse extends the last; say so if one did not.
                tracing::error!(now, sent, "a tool-call parse went back on its text");
                String::new()
            }
        };
        let delta = ParsedDelta {
            content: added(&now.content, &self.sent.content),
            reasoning: added(&now.reasoning, &self.sent.reasoning),
            calls: now
                .calls
                .iter()
                .enumerate()
                .skip(self.sent.calls.len())
                .map(|(i, c)| (i, c.clone()))
                .collect(),
        };
        if now.content.starts_with(&self.sent.content) {
            self.sent.content = now.content;
        }
        if now.reasoning.starts_with(&self.sent.reasoning) {
            self.sent.reasoning = now.reasoning;
        }
        if now.calls.len() > self.sent.calls.len() {
            self.sent.calls = now.calls;
        }
        delta
    }

    /// Everything handed out (the whole parse once the last piece is in).
    pub fn parsed(&self) -> &Parsed {
        &self.sent
    }
}
