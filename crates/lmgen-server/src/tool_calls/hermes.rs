//! Hermes / Qwen tool calls (vLLM's `hermes` parser): each call is a JSON object
//! `{"name": ..., "arguments": {...}}` between `<tool_call>` and `</tool_call>`; the text around
//! the calls is content. The grammar writes them as Qwen's template shows them.

use super::{call_from_json, pending_prefix, FunctionTool, ModelFormat, Parsed};

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
                match call_from_json(&body[..close]) {
                    Some(call) => out.calls.push(call),
                    None => out.content.push_str(whole),
                }
                rest = &body[close + END.len()..];
            }
            // Unclosed: a call if the text ends with its JSON (stopped before `</tool_call>`).
            None if end => {
                match call_from_json(body) {
                    Some(call) => out.calls.push(call),
                    None => out.content.push_str(&rest[at..]),
                }
                return;
            }
            None => return,
        }
    }
}

/// `start`: one call (or several, one per line) of `tools` in Lark.
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool], parallel: bool) -> String {
    let mut g = String::new();
    g.push_str(if parallel {
        "start: call (\"\\n\" call)*\n"
    } else {
        "start: call\n"
    });
    let alts: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    g.push_str(&format!("call: {}\n", alts.join(" | ")));
    for (i, tool) in tools.iter().enumerate() {
        let head = format!(
            "\n{{\"name\": {}, \"arguments\": ",
            serde_json::Value::String(tool.name.clone())
        );
        g.push_str(&format!(
            "call_{i}: {} {} args_{i} {} {}\nargs_{i}: %json {}\n",
            format.atom(START),
            super::lark_string(&head),
            super::lark_string("}\n"),
            format.atom(END),
            tool.schema(),
        ));
    }
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
                    arguments: r#"{"city":"Paris","days":[1,2]}"#.into()
                },
                ToolCall {
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
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
        // Stopped before the closing tag, the JSON is whole: a call.
        let p = assert_streams_alike(
            hermes(),
            "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}\n",
        );
        assert_eq!(p.calls[0].arguments, "{\"x\": 1}");
        assert_eq!(p.content, "");
    }
}
