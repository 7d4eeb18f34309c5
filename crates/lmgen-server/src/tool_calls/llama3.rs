//! Llama 3.1 / 3.2 / 3.3 JSON tool calls (vLLM's `llama3_json` parser): the whole message is
//! `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`, several separated by
//! `;`. A message that does not start like one is content from its first character; one that
//! does waits for the end to be read whole.

use serde_json::Value;

use super::{call_from_value, FunctionTool, ModelFormat, Parsed, ToolCall};

const PYTHON_TAG: &str = "<|python_tag|>";

/// The calls of `body`: JSON objects separated by `;` or blanks, nothing else.
fn calls(body: &str) -> Option<Vec<ToolCall>> {
    let mut rest = body;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if rest.is_empty() {
            return (!out.is_empty()).then_some(out);
        }
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = values.next()?.ok()?;
        out.push(call_from_value(&value)?);
        rest = &rest[values.byte_offset()..];
    }
}

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    let lead = text.trim_start();
    let body = lead.strip_prefix(PYTHON_TAG).unwrap_or(lead);
    let may_be_call = body.trim_start().starts_with('{')
        || lead.starts_with(PYTHON_TAG)
        || PYTHON_TAG.starts_with(lead);
    if !may_be_call {
        out.content.push_str(text);
    } else if end {
        match calls(body) {
            Some(calls) => out.calls.extend(calls),
            None => out.content.push_str(text),
        }
    }
}

/// The rule `calls`: one call of `tools` (Llama 3's format has no parallel calls).
pub(super) fn grammar(_format: &ModelFormat, tools: &[&FunctionTool]) -> String {
    let alts: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    let mut g = format!("calls: {}\n", alts.join(" | "));
    for (i, tool) in tools.iter().enumerate() {
        let head = format!(
            "{{\"name\": {}, \"parameters\": ",
            Value::String(tool.name.clone())
        );
        g.push_str(&format!(
            "call_{i}: {} args_{i} \"}}\"\nargs_{i}: %json {}\n",
            super::lark_string(&head),
            tool.schema(),
        ));
    }
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
        assert_eq!(p.calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(p.content, "");
        let p = assert_streams_alike(llama(), " {\"name\": \"f\", \"parameters\": {\"x\": [1]}}");
        assert_eq!(
            (p.calls[0].name.as_str(), p.calls[0].arguments.as_str()),
            ("f", r#"{"x":[1]}"#)
        );
    }

    #[test]
    fn other_messages_are_content() {
        for text in [
            "The answer is {\"name\": 1}",
            "{\"not\": \"a call\"}",
            "{\"name\": \"f\", \"parameters\": {}} and more",
            "<|python",
        ] {
            let p = assert_streams_alike(llama(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
    }
}
