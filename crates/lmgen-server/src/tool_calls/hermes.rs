//! Hermes / Qwen tool calls (vLLM's `hermes` parser): each call is a JSON object
//! `{"name": ..., "arguments": {...}}` between `<tool_call>` and `</tool_call>`; the text around
//! the calls is content. A call written as Qwen writes it (the name, then the arguments' object)
//! streams while it is written. The grammar writes them as Qwen's template shows them.

use super::{
    call_from_json, json_value_prefix, pending_prefix, FunctionTool, ModelFormat, Parsed, ToolCall,
};

const START: &str = "<tool_call>";
const END: &str = "</tool_call>";

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    let mut rest = text;
    loop {
        let Some(at) = rest.find(START) else {
            let keep = if end { 0 } else { pending_prefix(rest, START) };
            out.content.push_str(&rest[..rest.len() - keep]);
            return;
        };
        out.content.push_str(&rest[..at]);
        let body = &rest[at + START.len()..];
        match body.find(END) {
            Some(close) => {
                let whole = &rest[at..at + START.len() + close + END.len()];
                match call_from_json(&body[..close]).or_else(|| being_written(&body[..close])) {
                    Some(call) => out.calls.push(call),
                    None => out.content.push_str(whole),
                }
                rest = &body[close + END.len()..];
            }
            // Unclosed: a call if the text ends with its JSON (stopped before `</tool_call>`).
            None if end => {
                match call_from_json(body).or_else(|| being_written(body)) {
                    Some(call) => out.calls.push(call),
                    None => out.content.push_str(&rest[at..]),
                }
                return;
            }
            None => {
                out.open = being_written(body);
                return;
            }
        }
    }
}

/// A call being written as Qwen writes them, `{"name": "NAME", "arguments": {...`: its name and
/// the arguments so far (`None` until the arguments' object has begun). Such a call went out
/// while it was written, so it stays a call even if it does not end as JSON (cut by
/// `max_tokens`, or text after its arguments): its arguments are what was written of them.
pub(super) fn being_written(body: &str) -> Option<ToolCall> {
    let rest = body.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest
        .strip_prefix("\"name\"")?
        .trim_start()
        .strip_prefix(':')?;
    let rest = rest.trim_start().strip_prefix('"')?;
    let (name, rest) = rest.split_once('"')?;
    if name.contains('\\') {
        return None;
    }
    let rest = rest.trim_start().strip_prefix(',')?.trim_start();
    let rest = rest
        .strip_prefix("\"arguments\"")
        .or_else(|| rest.strip_prefix("\"parameters\""))?;
    let value = rest.trim_start().strip_prefix(':')?.trim_start();
    if !value.starts_with('{') {
        return None;
    }
    let (len, _) = json_value_prefix(value);
    Some(ToolCall {
        name: name.to_string(),
        arguments: value[..len].to_string(),
    })
}

/// The rule `calls`: one call (or several, one per line) of `tools` in Lark.
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool], parallel: bool) -> String {
    let mut g = String::new();
    g.push_str(if parallel {
        "calls: call (\"\\n\" call)*\n"
    } else {
        "calls: call\n"
    });
    g.push_str(&super::json_call_rules(tools, |tool| {
        let head = format!(
            "\n{{\"name\": {}, \"arguments\": ",
            serde_json::Value::String(tool.name.clone())
        );
        (
            format!("{} {}", format.atom(START), super::lark_string(&head)),
            format!("{} {}", super::lark_string("}\n"), format.atom(END)),
        )
    }));
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat, ToolCall};

    fn hermes() -> OutputFormat {
        OutputFormat {
            family: Some(Family::Hermes),
            harmony: false,
            think: false,
            in_reasoning: false,
            one_call: false,
            ..Default::default()
        }
    }

    #[test]
    fn calls_and_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        let p = assert_streams_alike(hermes(), text);
        assert_eq!(p.content, "Let me check.");
        assert_eq!(
            p.calls,
            [
                ToolCall {
                    name: "get_weather".into(),
                    arguments: r#"{"city": "Paris", "days": [1, 2]}"#.into()
                },
                ToolCall {
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
    }

    #[test]
    fn arguments_stream_as_written() {
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"s\": \"a}\\\"]\", \"n\": [{}]}}\n</tool_call>";
        let mut parser = super::super::OutputParser::new(hermes());
        let mut seen = Vec::new();
        for (i, c) in text.char_indices() {
            let d = parser.push(&c.to_string(), i + 1 == text.len());
            seen.extend(d.calls);
        }
        // The name as soon as the arguments begin, then the arguments piece by piece.
        assert_eq!(seen[0].name.as_deref(), Some("f"));
        assert_eq!(seen[0].arguments, "{");
        assert!(seen.len() > 10, "{seen:?}");
        let args: String = seen.iter().map(|d| d.arguments.as_str()).collect();
        assert_eq!(args, r#"{"s": "a}\"]", "n": [{}]}"#);
        assert_streams_alike(hermes(), text);
        // Arguments given as a JSON string come whole.
        let p = assert_streams_alike(
            hermes(),
            "<tool_call>{\"name\": \"g\", \"arguments\": \"{}\"}</tool_call>",
        );
        assert_eq!(p.calls[0].arguments, "{}");
    }

    #[test]
    fn what_does_not_parse_stays_content() {
        for text in [
            "a <tool_call>not json</tool_call> b",
            "<tool_call>{\"arguments\": {}}</tool_call>",
            "unclosed <tool_call>{\"name\": ",
            "a < b <tool_ca",
            "plain text, no calls\n\n",
        ] {
            let p = assert_streams_alike(hermes(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
        // A call cut short keeps what was written of its arguments (it was streamed).
        let p = assert_streams_alike(
            hermes(),
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, ",
        );
        assert_eq!(
            (p.calls[0].arguments.as_str(), p.content.as_str()),
            ("{\"a\": [1, ", "")
        );
        // Stopped before the closing tag, the JSON is whole: a call.
        let p = assert_streams_alike(
            hermes(),
            "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}\n",
        );
        assert_eq!(p.calls[0].arguments, "{\"x\": 1}");
        assert_eq!(p.content, "");
    }
}
