//! gpt-oss's harmony format (vLLM's `openai` tool and reasoning parsers): the output is a list
//! of messages, each a header (`<|channel|>NAME`, a recipient `to=functions.NAME`, a
//! `<|constrain|>json`) then `<|message|>`, the body, and `<|end|>`, `<|call|>` or `<|return|>`;
//! a later message starts with `<|start|>assistant`. The `analysis` channel is reasoning, a
//! message to `functions.NAME` a call with its body as arguments (streamed as written), anything
//! else content.

use super::{pending_prefix, FunctionTool, ModelFormat, Parsed, ToolCall};

const MESSAGE: &str = "<|message|>";
const CHANNEL: &str = "<|channel|>";
const ENDS: [&str; 4] = ["<|end|>", "<|call|>", "<|return|>", "<|start|>"];

/// The special tokens the parser reads.
pub(super) const MARKERS: &[&str] = &[
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|constrain|>",
    "<|end|>",
    "<|call|>",
    "<|return|>",
];

/// The word after `key` in `header` (up to a blank or a `<`).
fn word_after<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(key)? + key.len();
    let rest = &header[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '<')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether each message of `text` is in the `analysis` channel (`None` while its header is still
/// coming), messages split after `<|end|>`, `<|call|>` and `<|return|>` (a `<|start|>` belongs to
/// the header of the message it starts).
pub(super) fn analysis_messages(text: &str) -> Vec<Option<bool>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let close = ENDS[..3]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
            .min();
        let message = close.map_or(rest, |(i, _)| &rest[..i]);
        out.push(
            message
                .find(MESSAGE)
                .map(|at| word_after(&message[..at], CHANNEL) == Some("analysis")),
        );
        match close {
            Some((i, len)) => rest = &rest[i + len..],
            None => return out,
        }
    }
}

/// Appends the messages of `text` to `out`; calls only when `calls` (else their bodies are
/// content).
pub(super) fn parse(text: &str, end: bool, calls: bool, out: &mut Parsed) {
    let mut rest = text;
    while !rest.is_empty() {
        let Some(at) = rest.find(MESSAGE) else {
            // A header still coming; at the end, text outside any message is content.
            if end {
                out.content.push_str(rest);
            }
            return;
        };
        let header = &rest[..at];
        let body_all = &rest[at + MESSAGE.len()..];
        let close = ENDS
            .iter()
            .filter_map(|m| body_all.find(m).map(|i| (i, *m)))
            .min();
        let (body, next) = match close {
            Some((i, m)) => (
                &body_all[..i],
                &body_all[i + if m == "<|start|>" { 0 } else { m.len() }..],
            ),
            None => (body_all, ""),
        };
        let closed = close.is_some() || end;
        let channel = word_after(header, CHANNEL).unwrap_or("");
        let recipient = word_after(header, "to=").unwrap_or("");
        let function = recipient.strip_prefix("functions.").filter(|_| calls);
        let keep = match closed {
            true => 0,
            false => ENDS
                .iter()
                .map(|m| pending_prefix(body, m))
                .max()
                .unwrap_or(0),
        };
        let part = &body[..body.len() - keep];
        match function {
            // The arguments as written, blanks around them left out (those at the end wait).
            Some(name) => {
                let call = ToolCall {
                    name: name.to_string(),
                    arguments: part.trim().to_string(),
                };
                match closed {
                    true => out.calls.push(call),
                    false => out.open = Some(call),
                }
            }
            None => match channel {
                "analysis" => out.reasoning.push_str(part),
                _ => out.content.push_str(part),
            },
        }
        if close.is_none() {
            return;
        }
        rest = next;
        if let Some(after) = rest.strip_prefix("<|start|>") {
            rest = after;
        }
    }
}

/// The rule `calls`: one call of `tools` on the commentary channel (gpt-oss makes one call per turn:
/// `<|call|>` ends the output).
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool]) -> String {
    let mut g = "calls: call\n".to_string();
    g.push_str(&super::json_call_rules(tools, |tool| {
        let before = format!(
            "{} {} {} \"json\" {}",
            format.atom(CHANNEL),
            super::lark_string(&format!("commentary to=functions.{} ", tool.name)),
            format.atom("<|constrain|>"),
            format.atom(MESSAGE),
        );
        (before, String::new())
    }));
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, OutputFormat};

    fn harmony(calls: bool) -> OutputFormat {
        OutputFormat {
            family: calls.then_some(super::super::Family::Harmony),
            harmony: true,
            think: false,
            in_reasoning: false,
            one_call: false,
            ..Default::default()
        }
    }

    #[test]
    fn channels_and_calls() {
        let text = "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Rome\"}<|call|>";
        let p = assert_streams_alike(harmony(true), text);
        assert_eq!(p.reasoning, "Need the weather.");
        assert_eq!(p.content, "");
        assert_eq!(p.calls.len(), 1);
        assert_eq!(p.calls[0].name, "get_weather");
        assert_eq!(p.calls[0].arguments, r#"{"city": "Rome"}"#);
        let text = "<|channel|>analysis<|message|>Think <|e.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>";
        let p = assert_streams_alike(harmony(false), text);
        assert_eq!(
            (p.reasoning.as_str(), p.content.as_str()),
            ("Think <|e.", "It is sunny.")
        );
        // The recipient in the role part; the call ends the text (`<|call|>` was an EOS token
        // and left out).
        let text = "<|channel|>analysis<|message|>x<|end|><|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}";
        let p = assert_streams_alike(harmony(true), text);
        assert_eq!(
            (p.calls[0].name.as_str(), p.calls[0].arguments.as_str()),
            ("f", "{}")
        );
    }
}
