//! Reasoning between markers, as vLLM's reasoning parsers read it: `<think>` ... `</think>`
//! (Qwen3, DeepSeek-R1, SmolLM3, Mistral's Magistral) or Gemma 4's thought channel
//! `<|channel>thought` ... `<channel|>`. Reasoning is the text from the output's start (when the
//! prompt left the markers open) or from an opening marker the output begins with, to the closing
//! one; an unclosed one is reasoning to the end. The content after it starts at its first
//! non-blank.

use super::pending_prefix;

/// A family's reasoning markers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Markers {
    /// `<think>` ... `</think>`.
    #[default]
    Think,
    /// Gemma 4's `<|channel>thought` ... `<channel|>`.
    GemmaThought,
}

impl Markers {
    pub(super) fn open(self) -> &'static str {
        match self {
            Markers::Think => "<think>",
            Markers::GemmaThought => "<|channel>thought",
        }
    }

    pub(super) fn close(self) -> &'static str {
        match self {
            Markers::Think => "</think>",
            Markers::GemmaThought => "<channel|>",
        }
    }

    /// The special tokens among the markers (decoded for the parse).
    pub(super) fn tokens(self) -> &'static [&'static str] {
        match self {
            Markers::Think => &["<think>", "</think>"],
            Markers::GemmaThought => &["<|channel>", "<channel|>"],
        }
    }

    /// The markers `template` writes, if any.
    pub(super) fn written_by(template: &str) -> Option<Self> {
        [Markers::Think, Markers::GemmaThought]
            .into_iter()
            .find(|m| template.contains(m.open()) && template.contains(m.close()))
    }
}

/// Appends the decided reasoning of `text` to `reasoning`; returns the decided text after it
/// (`None`: nothing yet).
pub(super) fn split<'a>(
    text: &'a str,
    end: bool,
    in_reasoning: bool,
    markers: Markers,
    reasoning: &mut String,
) -> Option<&'a str> {
    let (open, close) = (markers.open(), markers.close());
    let lead = text.trim_start();
    let body = if let Some(body) = lead.strip_prefix(open) {
        body // (a model that writes the `<think>` its prompt already opened: read once)
    } else if !end && open.starts_with(lead) {
        return None; // may still become `<think>`
    } else if in_reasoning {
        text
    } else {
        return Some(text);
    };
    match body.find(close) {
        Some(at) => {
            reasoning.push_str(&body[..at]);
            Some(body[at + close.len()..].trim_start())
        }
        None => {
            let keep = if end { 0 } else { pending_prefix(body, close) };
            reasoning.push_str(&body[..body.len() - keep]);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(text: &str, in_reasoning: bool) -> (String, Option<String>) {
        let mut r = String::new();
        let rest = split(text, true, in_reasoning, Markers::Think, &mut r).map(str::to_string);
        (r, rest)
    }

    #[test]
    fn reasoning_is_cut_at_the_markers() {
        assert_eq!(
            split_all("<think>a</think>\n\nb", false),
            ("a".into(), Some("b".into()))
        );
        assert_eq!(
            split_all("no thinking", false),
            ("".into(), Some("no thinking".into()))
        );
        assert_eq!(
            split_all("a</think>b", true),
            ("a".into(), Some("b".into()))
        );
        assert_eq!(split_all("unclosed", true), ("unclosed".into(), None));
        // DeepSeek-R1 may write the `<think>` its prompt opened.
        assert_eq!(
            split_all("<think>\na</think>b", true),
            ("\na".into(), Some("b".into()))
        );
        // Mid-text `<think>` is content.
        assert_eq!(
            split_all("x <think>y</think>", false).1.as_deref(),
            Some("x <think>y</think>")
        );
        // Undecided while it may still be the marker.
        let mut r = String::new();
        assert_eq!(split("<thi", false, false, Markers::Think, &mut r), None);
        assert_eq!(split("a</thi", false, true, Markers::Think, &mut r), None);
        assert_eq!(r, "a");
        // Gemma 4's thought channel.
        let mut r = String::new();
        let text = "<|channel>thought\nHmm.<channel|>Hi.";
        let rest = split(text, true, false, Markers::GemmaThought, &mut r);
        assert_eq!((r.as_str(), rest), ("\nHmm.", Some("Hi.")));
        let gemma4 = include_str!("../../../lmgen/tests/fixtures/chat_templates/real/gemma4.jinja");
        assert_eq!(Markers::written_by(gemma4), Some(Markers::GemmaThought));
    }
}
