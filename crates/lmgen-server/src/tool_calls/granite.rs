//! Granite 3.3's tool calls (vLLM's `granite` parser): `<|tool_call|>` and a JSON list of calls,
//! `[{"name": ..., "arguments": {...}}, ...]`, streamed as written ([`super::json_calls`]). Text
//! before the marker is content; a list that holds no call is content, marker and all.

use super::{json_calls, pending_prefix, FunctionTool, ModelFormat, Parsed};

pub(super) const TOOL_CALL: &str = "<|tool_call|>";

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    let Some(at) = text.find(TOOL_CALL) else {
        let keep = if end {
            0
        } else {
            pending_prefix(text, TOOL_CALL)
        };
        out.content.push_str(&text[..text.len() - keep]);
        return;
    };
    out.content.push_str(&text[..at]);
    let read = json_calls::list(&text[at + TOOL_CALL.len()..], end);
    if !read.any() {
        if read.rest.is_some() {
            out.content.push_str(&text[at..]);
        }
        return;
    }
    out.calls.extend(read.calls);
    out.open = read.open;
    if let Some(rest) = read.rest {
        out.content.push_str(rest.trim_start());
    }
}

/// The rule `calls`: `<|tool_call|>` and a list of one call (or several) of `tools`.
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool], parallel: bool) -> String {
    let list = match parallel {
        true => "call (\", \" call)*",
        false => "call",
    };
    let mut g = format!("calls: {} \"[\" {list} \"]\"\n", format.atom(TOOL_CALL));
    g.push_str(&super::json_call_rules(tools, |tool| {
        let head = format!(
            "{{\"name\": {}, \"arguments\": ",
            serde_json::Value::String(tool.name.clone())
        );
        (super::lark_string(&head), "\"}\"".into())
    }));
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat, ToolCall};

    fn granite() -> OutputFormat {
        OutputFormat {
            family: Some(Family::Granite),
            ..Default::default()
        }
    }

    #[test]
    fn a_list_of_calls() {
        let text = "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}, {\"name\": \"now\", \"arguments\": {}}]";
        let p = assert_streams_alike(granite(), text);
        assert_eq!(p.content, "");
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
    fn what_is_not_a_call_stays_content() {
        for text in [
            "<|tool_call|>[{\"x\": 1}]",
            "<|tool_call|>not a list",
            "<|tool_call|>[]",
            "so <|tool_ca",
            "plain",
        ] {
            let p = assert_streams_alike(granite(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
    }
}
