//! `<think>` ... `</think>` reasoning (Qwen3, DeepSeek-R1, SmolLM3, Mistral's Magistral), as
//! vLLM's reasoning parsers read it: reasoning is the text from the output's start (when the
//! prompt left `<think>` open) or from a `<think>` the output begins with, to `</think>`; an
//! unclosed one is reasoning to the end. The content after it starts at its first non-blank.

use super::pending_prefix;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Appends the decided reasoning of `text` to `reasoning`; returns the decided text after it
/// (`None`: nothing yet).
pub(super) fn split<'a>(
    text: &'a str,
    end: bool,
    in_reasoning: bool,
    reasoning: &mut String,
) -> Option<&'a str> {
    let lead = text.trim_start();
    let body = if let Some(body) = lead.strip_prefix(OPEN) {
        body // (a model that writes the `<think>` its prompt already opened: read once)
    } else if !end && OPEN.starts_with(lead) {
        return None; // may still become `<think>`
    } else if in_reasoning {
        text
    } else {
        return Some(text);
    };
    match body.find(CLOSE) {
        Some(at) => {
            reasoning.push_str(&body[..at]);
            Some(body[at + CLOSE.len()..].trim_start())
        }
        None => {
            let keep = if end { 0 } else { pending_prefix(body, CLOSE) };
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
        let rest = split(text, true, in_reasoning, &mut r).map(str::to_string);
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
        assert_eq!(split("<thi", false, false, &mut r), None);
        assert_eq!(split("a</thi", false, true, &mut r), None);
        assert_eq!(r, "a");
    }
}
