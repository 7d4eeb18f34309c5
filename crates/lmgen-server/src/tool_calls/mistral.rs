//! Mistral tool calls (vLLM's `mistral` parser): content, then `[TOOL_CALLS]` and either a JSON
//! list `[{"name": ..., "arguments": {...}}, ...]` (tokenizer v3, Mistral 7B v0.3 / Small 3.1)
//! or, from tokenizer v11 on, `name[ARGS]{...}` per call, each after its own `[TOOL_CALLS]`
//! (Mistral Small 3.2, Ministral 3; Magistral's `name[CALL_ID]id[ARGS]{...}`, the id not kept).
//! Calls stream as they are written: a call's name once its arguments begin, then the arguments
//! as written. What follows `[TOOL_CALLS]` and is no call is content, marker and all (after a
//! call went out, text that is no call is content).

use serde_json::Value;

use super::{
    json_calls, json_value_prefix, pending_prefix, FunctionTool, ModelFormat, Parsed, ToolCall,
};

const TOOL_CALLS: &str = "[TOOL_CALLS]";
const ARGS: &str = "[ARGS]";
const CALL_ID: &str = "[CALL_ID]";

/// What follows a `[TOOL_CALLS]`.
enum Read<'a> {
    /// Calls, and the text after them (`None`: the text ends in a call or undecided).
    Calls(Vec<ToolCall>, Option<ToolCall>, Option<&'a str>),
    /// Not a call.
    Other,
}

/// The calls after one `[TOOL_CALLS]` (`text` is what follows it).
fn read(text: &str, end: bool) -> Read<'_> {
    let lead = text.trim_start();
    if lead.starts_with('[') {
        let r = json_calls::list(lead, end);
        return match (r.any(), r.rest) {
            (false, Some(_)) => Read::Other,
            (_, rest) => Read::Calls(r.calls, r.open, rest),
        };
    }
    // `name[ARGS]{...}`
    let Some(at) = lead.find(ARGS) else {
        // `name`, `name[CALL_ID]id`, or on its way to a marker.
        let keep = pending_prefix(lead, ARGS).max(pending_prefix(lead, CALL_ID));
        let so_far = &lead[..lead.len() - keep];
        let may_be = !end
            && so_far
                .split(CALL_ID)
                .all(|p| p.is_empty() || super::tagged::is_name(p));
        return match may_be {
            true => Read::Calls(Vec::new(), None, None),
            false => Read::Other,
        };
    };
    let name = lead[..at].split(CALL_ID).next().unwrap_or("").trim();
    let args = lead[at + ARGS.len()..].trim_start();
    if !super::tagged::is_name(name) || !(args.starts_with('{') || args.is_empty() && !end) {
        return Read::Other;
    }
    let (len, complete) = json_value_prefix(args);
    let call = ToolCall {
        name: name.to_string(),
        arguments: args[..len].to_string(),
    };
    match (complete, end) {
        _ if args.is_empty() => Read::Calls(Vec::new(), None, None),
        (true, _) | (false, true) => Read::Calls(vec![call], None, Some(&args[len..])),
        (false, false) => Read::Calls(Vec::new(), Some(call), None),
    }
}

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    let Some(at) = text.find(TOOL_CALLS) else {
        let keep = if end {
            0
        } else {
            pending_prefix(text, TOOL_CALLS)
        };
        out.content.push_str(&text[..text.len() - keep]);
        return;
    };
    out.content.push_str(&text[..at]);
    let mut rest = &text[at..];
    while let Some(after) = rest.strip_prefix(TOOL_CALLS) {
        match read(after, end) {
            Read::Other if out.calls.is_empty() => {
                out.content.push_str(&text[at..]);
                return;
            }
            Read::Other => {
                out.content.push_str(rest);
                return;
            }
            Read::Calls(calls, open, next) => {
                out.calls.extend(calls);
                out.open = open;
                let Some(next) = next else { return };
                rest = next.trim_start();
            }
        }
    }
    // Text after the calls: another `[TOOL_CALLS]` may be coming.
    let keep = if end {
        0
    } else {
        pending_prefix(rest, TOOL_CALLS)
    };
    out.content.push_str(&rest[..rest.len() - keep]);
}

/// The rule `calls`: one call (or several) of `tools` in the checkpoint's format.
pub(super) fn grammar(
    format: &ModelFormat,
    tools: &[&FunctionTool],
    parallel: bool,
    args_format: bool,
) -> String {
    let marker = format.atom(TOOL_CALLS);
    let mut g = match (args_format, parallel) {
        (true, true) => format!("calls: ({marker} call)+\n"),
        (true, false) => format!("calls: {marker} call\n"),
        (false, true) => format!("calls: {marker} \"[\" call (\", \" call)* \"]\"\n"),
        (false, false) => format!("calls: {marker} \"[\" call \"]\"\n"),
    };
    g.push_str(&super::json_call_rules(tools, |tool| {
        let name = Value::String(tool.name.clone()).to_string();
        let head = match args_format {
            true => format!("{} {}", super::lark_string(&tool.name), format.atom(ARGS)),
            false => super::lark_string(&format!("{{\"name\": {name}, \"arguments\": ")),
        };
        let tail = if args_format { "" } else { "\"}\"" };
        (head, tail.to_string())
    }));
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
            ..Default::default()
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
            ("a", r#"{"x": 1}"#)
        );
        let p = assert_streams_alike(
            mistral(),
            "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Lyon\"}[TOOL_CALLS]now[CALL_ID]abc123456[ARGS]{}",
        );
        assert_eq!(p.content, "");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].arguments, r#"{"city": "Lyon"}"#);
        assert_eq!(p.calls[1].name, "now");
    }

    #[test]
    fn arguments_stream_as_written() {
        for text in [
            "[TOOL_CALLS]f[ARGS]{\"a\": \"x]\", \"b\": [1, 2]}",
            "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": \"x]\", \"b\": [1, 2]}}]",
        ] {
            let mut parser = super::super::OutputParser::new(mistral());
            let mut seen = Vec::new();
            for (i, c) in text.char_indices() {
                seen.extend(parser.push(&c.to_string(), i + 1 == text.len()).calls);
            }
            assert_eq!(
                (seen[0].name.as_deref(), seen[0].arguments.as_str()),
                (Some("f"), "{")
            );
            assert!(seen.len() > 10, "{seen:?}");
            let args: String = seen.iter().map(|d| d.arguments.as_str()).collect();
            assert_eq!(args, r#"{"a": "x]", "b": [1, 2]}"#);
            assert_streams_alike(mistral(), text);
        }
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
