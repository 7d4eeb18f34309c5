//! Mistral tool calls (vLLM's `mistral` parser): content, then `[TOOL_CALLS]` and either a JSON
//! list `[{"name": ..., "arguments": {...}}, ...]` (tokenizer v3, Mistral 7B v0.3 / Small 3.1)
//! or, from tokenizer v11 on, `name[ARGS]{...}` per call, each after its own `[TOOL_CALLS]`
//! (Mistral Small 3.2, Ministral 3). Everything after the first `[TOOL_CALLS]` waits for the
//! end and is read whole.

use serde_json::Value;

use super::{call_from_value, pending_prefix, FunctionTool, ModelFormat, Parsed, ToolCall};

const TOOL_CALLS: &str = "[TOOL_CALLS]";
const ARGS: &str = "[ARGS]";
const CALL_ID: &str = "[CALL_ID]";

/// The calls after `[TOOL_CALLS]` markers (`text` starts with one).
fn calls(text: &str) -> Option<Vec<ToolCall>> {
    let mut out = Vec::new();
    for part in text.split(TOOL_CALLS).skip(1) {
        let part = part.trim();
        if part.starts_with('[') {
            let list: Vec<Value> = serde_json::from_str(part).ok()?;
            for v in &list {
                out.push(call_from_value(v)?);
            }
        } else {
            let (name, args) = part.split_once(ARGS)?;
            // `name[CALL_ID]id[ARGS]` (Magistral) names the call; the id is not kept.
            let name = name.split(CALL_ID).next()?.trim();
            let args: Value = serde_json::from_str(args.trim()).ok()?;
            if name.is_empty() {
                return None;
            }
            out.push(ToolCall {
                name: name.to_string(),
                arguments: args.to_string(),
            });
        }
    }
    (!out.is_empty()).then_some(out)
}

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    match text.find(TOOL_CALLS) {
        None => {
            let keep = if end {
                0
            } else {
                pending_prefix(text, TOOL_CALLS)
            };
            out.content.push_str(&text[..text.len() - keep]);
        }
        Some(at) => {
            out.content.push_str(&text[..at]);
            if end {
                match calls(&text[at..]) {
                    Some(calls) => out.calls.extend(calls),
                    None => out.content.push_str(&text[at..]),
                }
            }
        }
    }
}

/// The rule `calls`: one call (or several) of `tools` in the checkpoint's format.
pub(super) fn grammar(
    format: &ModelFormat,
    tools: &[&FunctionTool],
    parallel: bool,
    args_format: bool,
) -> String {
    let alts: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    let marker = format.atom(TOOL_CALLS);
    let mut g = match (args_format, parallel) {
        (true, true) => format!("calls: ({marker} call)+\n"),
        (true, false) => format!("calls: {marker} call\n"),
        (false, true) => format!("calls: {marker} \"[\" call (\", \" call)* \"]\"\n"),
        (false, false) => format!("calls: {marker} \"[\" call \"]\"\n"),
    };
    g.push_str(&format!("call: {}\n", alts.join(" | ")));
    for (i, tool) in tools.iter().enumerate() {
        let name = Value::String(tool.name.clone()).to_string();
        let head = match args_format {
            true => format!("{} {}", super::lark_string(&tool.name), format.atom(ARGS)),
            false => super::lark_string(&format!("{{\"name\": {name}, \"arguments\": ")),
        };
        let tail = if args_format { "" } else { " \"}\"" };
        g.push_str(&format!(
            "call_{i}: {head} args_{i}{tail}\nargs_{i}: %json {}\n",
            tool.schema()
        ));
    }
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat};

    fn mistral() -> OutputFormat {
        OutputFormat {
            family: Some(Family::Mistral { args: false }),
            harmony: false,
            think: false,
            in_reasoning: false,
            one_call: false,
        }
    }

    #[test]
    fn json_list_and_args_formats() {
        let p = assert_streams_alike(
            mistral(),
            "Checking. [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]",
        );
        assert_eq!(p.content, "Checking.");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(
            (p.calls[0].name.as_str(), p.calls[0].arguments.as_str()),
            ("a", r#"{"x":1}"#)
        );
        let p = assert_streams_alike(
            mistral(),
            "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Lyon\"}[TOOL_CALLS]now[CALL_ID]abc123456[ARGS]{}",
        );
        assert_eq!(p.content, "");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].arguments, r#"{"city":"Lyon"}"#);
        assert_eq!(p.calls[1].name, "now");
    }

    #[test]
    fn broken_calls_are_content() {
        for text in [
            "x [TOOL_CALLS]oops",
            "[TOOL_CALLS][{\"name\": 3}]",
            "almost [TOOL_CA",
        ] {
            let p = assert_streams_alike(mistral(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
    }
}
