//! Llama 3.1 / 3.2 / 3.3 JSON tool calls (vLLM's `llama3_json` parser): the message is
//! `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`, several separated by
//! `;`. A message that does not start like one is content from its first character; calls stream
//! as they are written ([`super::json_calls`]), and text after them is content.

use serde_json::Value;

use super::{json_calls, FunctionTool, ModelFormat, Parsed};

const PYTHON_TAG: &str = "<|python_tag|>";

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    let lead = text.trim_start();
    if !end && PYTHON_TAG.starts_with(lead) {
        return; // may still be the tag
    }
    let body = lead.strip_prefix(PYTHON_TAG).unwrap_or(lead);
    let read = json_calls::objects(body, end, ';');
    if !read.any() {
        match read.rest {
            // Only the tag so far, or an object that may still be a call.
            Some("") | None if !end => {}
            _ => out.content.push_str(text),
        }
        return;
    }
    out.calls.extend(read.calls);
    out.open = read.open;
    if let Some(rest) = read.rest {
        out.content.push_str(rest);
    }
}

/// The rule `calls`: one call of `tools` (Llama 3's format has no parallel calls).
pub(super) fn grammar(_format: &ModelFormat, tools: &[&FunctionTool]) -> String {
    let mut g = "calls: call\n".to_string();
    g.push_str(&super::json_call_rules(tools, |tool| {
        let head = format!(
            "{{\"name\": {}, \"parameters\": ",
            Value::String(tool.name.clone())
        );
        (super::lark_string(&head), "\"}\"".into())
    }));
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat};

    fn llama() -> OutputFormat {
        OutputFormat {
            family: Some(Family::Llama3),
            harmony: false,
            think: false,
            in_reasoning: false,
            one_call: false,
            ..Default::default()
        }
    }

    #[test]
    fn whole_message_calls() {
        let p = assert_streams_alike(
            llama(),
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"now\", \"parameters\": {}}",
        );
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].name, "get_weather");
        assert_eq!(p.calls[0].arguments, r#"{"city": "Oslo"}"#);
        assert_eq!(p.content, "");
        let p = assert_streams_alike(llama(), " {\"name\": \"f\", \"parameters\": {\"x\": [1]}}");
        assert_eq!(
            (p.calls[0].name.as_str(), p.calls[0].arguments.as_str()),
            ("f", r#"{"x": [1]}"#)
        );
        // Text after the calls is content (they went out while written).
        let p = assert_streams_alike(llama(), "{\"name\": \"f\", \"parameters\": {}} and more");
        assert_eq!((p.calls.len(), p.content.as_str()), (1, "and more"));
    }

    #[test]
    fn arguments_stream_as_written() {
        let text = "{\"name\": \"f\", \"parameters\": {\"a\": \"x}\", \"b\": [1, 2]}}";
        let mut parser = super::super::OutputParser::new(llama());
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
        assert_eq!(args, r#"{"a": "x}", "b": [1, 2]}"#);
    }

    #[test]
    fn other_messages_are_content() {
        for text in [
            "The answer is {\"name\": 1}",
            "{\"not\": \"a call\"}",
            "<|python_tag|>print(1)",
            "<|python",
        ] {
            let p = assert_streams_alike(llama(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
    }
}
