//! Qwen3-Coder's and Qwen3.5's XML tool calls (vLLM's `qwen3_coder` parser):
//!
//! ```text
//! <tool_call>
//! <function=NAME>
//! <parameter=KEY>
//! VALUE
//! </parameter>
//! </function>
//! </tool_call>
//! ```
//!
//! A value is raw text (one newline after `<parameter=KEY>` and one before `</parameter>` left
//! out), typed by the tool's JSON schema as vLLM types it: a string for a `string` parameter and
//! for a key the schema does not list, a number, a boolean, JSON for an object or an array, and
//! `null` for `null` (a value that does not read as its type stays a string). The call's name goes
//! out with `<function=NAME>`, then its arguments one parameter at a time as a JSON object.

use serde_json::{Number, Value};

use super::param_grammar::{self, Syntax};
use super::tagged::{self, Block, Markers};
use super::{lark_string, FunctionTool, ModelFormat, Parsed, ToolCall};

const MARKERS: Markers = Markers {
    start: "<tool_call>",
    end: "</tool_call>",
};
const FUNCTION: &str = "<function=";
const PARAMETER: &str = "<parameter=";
const PARAMETER_END: &str = "</parameter>";
const FUNCTION_END: &str = "</function>";

pub(super) fn parse(text: &str, end: bool, functions: &[FunctionTool], out: &mut Parsed) {
    tagged::parse(text, end, MARKERS, out, |body, closed| {
        read(body, closed, functions)
    });
}

fn read(body: &str, closed: bool, functions: &[FunctionTool]) -> Block {
    let Some(after) = body.trim_start().strip_prefix(FUNCTION) else {
        return tagged::not_starting_with(body, FUNCTION, closed);
    };
    let Some(gt) = after.find('>') else {
        return match closed || after.contains(['<', '\n']) {
            true => Block::Content,
            false => Block::Wait,
        };
    };
    let name = after[..gt].trim();
    if !tagged::is_name(name) {
        return Block::Content;
    }
    let schema = functions
        .iter()
        .find(|f| f.name == name)
        .map(|f| &f.parameters);
    let mut arguments = String::from("{");
    let mut rest = &after[gt + 1..];
    // Parameters, each once it is whole; what is not one ends the call.
    while let Some(p) = rest.trim_start().strip_prefix(PARAMETER) {
        let Some(gt) = p.find('>') else { break };
        let (key, value) = (p[..gt].trim(), &p[gt + 1..]);
        // The value ends at `</parameter>`, or where the next parameter or the function's end
        // starts (a model that left it out).
        let stop = [PARAMETER_END, PARAMETER, FUNCTION_END]
            .iter()
            .filter_map(|m| value.find(m).map(|i| (i, *m)))
            .min();
        let (value, next) = match stop {
            Some((i, m)) if m == PARAMETER_END => (&value[..i], &value[i + m.len()..]),
            Some((i, _)) => (&value[..i], &value[i..]),
            None if closed => (value, ""),
            None => break,
        };
        if arguments.len() > 1 {
            arguments.push_str(", ");
        }
        arguments.push_str(&Value::String(key.to_string()).to_string());
        arguments.push_str(": ");
        arguments.push_str(&typed(trim_newline(value), param_type(schema, key)).to_string());
        rest = next;
    }
    if closed {
        arguments.push('}');
    }
    let call = ToolCall {
        name: name.to_string(),
        arguments,
    };
    match closed {
        true => Block::Calls(vec![call], None),
        false => Block::Calls(Vec::new(), Some(call)),
    }
}

/// `value` less one newline at its start and one at its end, as the template writes it.
fn trim_newline(value: &str) -> &str {
    let value = value.strip_prefix('\n').unwrap_or(value);
    value.strip_suffix('\n').unwrap_or(value)
}

/// The schema's type of parameter `key` (`None`: not listed; `Some("")`: listed, no type).
fn param_type<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a str> {
    let property = schema?.get("properties")?.get(key)?;
    Some(match property.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or(""),
        _ => "",
    })
}

/// `value` as the JSON value of a parameter of type `ty` (vLLM's `_convert_param_value`).
fn typed(value: &str, ty: Option<&str>) -> Value {
    let string = || Value::String(value.to_string());
    if value.eq_ignore_ascii_case("null") {
        return Value::Null;
    }
    let Some(ty) = ty else { return string() };
    let ty = ty.trim().to_ascii_lowercase();
    let parsed = || serde_json::from_str::<Value>(value.trim()).ok();
    match ty.as_str() {
        "string" | "str" | "text" | "varchar" | "char" | "enum" => string(),
        t if ["int", "uint", "long", "short", "unsigned"]
            .iter()
            .any(|p| t.starts_with(p)) =>
        {
            value
                .trim()
                .parse::<i64>()
                .map_or_else(|_| string(), Value::from)
        }
        t if t.starts_with("num") || t.starts_with("float") => {
            let v = value.trim();
            if let Ok(i) = v.parse::<i64>() {
                Value::from(i)
            } else {
                v.parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map_or_else(string, Value::Number)
            }
        }
        "boolean" | "bool" | "binary" => match value.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => string(),
        },
        _ => parsed().unwrap_or_else(string),
    }
}

/// The rule `calls`: one call (or several) of `tools`, each naming its function and writing its
/// schema's parameters ([`param_grammar`]).
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool], parallel: bool) -> String {
    let mut g = String::from(match parallel {
        true => "calls: call (\"\\n\" call)*\n",
        false => "calls: call\n",
    });
    let alts: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    g.push_str(&format!("call: {}\n", alts.join(" | ")));
    for (i, tool) in tools.iter().enumerate() {
        let pair = |key: &str, value: &str| {
            format!(
                "{} {value} {}",
                lark_string(&format!("{PARAMETER}{key}>\n")),
                lark_string(&format!("\n{PARAMETER_END}\n"))
            )
        };
        let params = format!("params_{i}");
        let has = param_grammar::params(&mut g, &params, tool, Syntax::Xml, "", pair);
        g.push_str(&format!(
            "call_{i}: {} {} {} {} {}\n",
            format.atom(MARKERS.start),
            lark_string(&format!("\n{FUNCTION}{}>\n", tool.name)),
            if has { params.as_str() } else { "" },
            lark_string(&format!("{FUNCTION_END}\n")),
            format.atom(MARKERS.end),
        ));
    }
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat};
    use super::*;

    fn qwen(functions: Vec<FunctionTool>) -> OutputFormat {
        OutputFormat {
            family: Some(Family::Qwen3Xml),
            functions: functions.into(),
            ..Default::default()
        }
    }

    fn weather() -> FunctionTool {
        FunctionTool {
            name: "get_weather".into(),
            parameters: serde_json::json!({"type": "object", "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"},
                "scale": {"type": "number"}, "hourly": {"type": "boolean"},
                "options": {"type": "object"}, "at": {"type": ["string", "null"]},
                "tags": {"type": "array"}}}),
        }
    }

    #[test]
    fn values_are_typed_by_the_schema() {
        let text = "I'll check.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=scale>\n1.5\n</parameter>\n<parameter=hourly>\nTrue\n</parameter>\n<parameter=options>\n{\"lang\": \"en\"}\n</parameter>\n<parameter=at>\nnull\n</parameter>\n<parameter=tags>\nnot json\n</parameter>\n<parameter=extra>\n42\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=now>\n</function>\n</tool_call>";
        let p = assert_streams_alike(qwen(vec![weather()]), text);
        assert_eq!(p.content, "I'll check.");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].name, "get_weather");
        let args: Value = serde_json::from_str(&p.calls[0].arguments).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"city": "New York", "days": 3, "scale": 1.5, "hourly": true,
                "options": {"lang": "en"}, "at": null, "tags": "not json", "extra": "42"})
        );
        assert_eq!(
            (p.calls[1].name.as_str(), p.calls[1].arguments.as_str()),
            ("now", "{}")
        );
    }

    #[test]
    fn multi_line_values_and_a_missing_end() {
        // A value keeps its inner newlines; a parameter the model did not close ends at the
        // next one; a call cut short keeps what was written.
        let text = "<tool_call>\n<function=write>\n<parameter=text>\nline 1\n\nline 2\n<parameter=n>\n7\n</function>\n</tool_call>";
        let p = assert_streams_alike(qwen(vec![]), text);
        assert_eq!(
            p.calls[0].arguments,
            r#"{"text": "line 1\n\nline 2", "n": "7"}"#
        );
        let p = assert_streams_alike(qwen(vec![weather()]), "<tool_call>\n<function=get_weather>\n<parameter=days>\n2\n</parameter>\n<parameter=city>\nRo");
        assert_eq!(p.calls[0].arguments, r#"{"days": 2, "city": "Ro"}"#);
    }

    #[test]
    fn arguments_stream_a_parameter_at_a_time() {
        let text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>";
        let mut parser = super::super::OutputParser::new(qwen(vec![weather()]));
        let mut pieces = Vec::new();
        for (i, c) in text.char_indices() {
            let d = parser.push(&c.to_string(), i + 1 == text.len());
            pieces.extend(d.calls.into_iter().map(|c| (c.name, c.arguments)));
        }
        assert_eq!(
            pieces,
            [
                (Some("get_weather".to_string()), "{".to_string()),
                (None, "\"city\": \"Oslo\"".to_string()),
                (None, ", \"days\": 2".to_string()),
                (None, "}".to_string()),
            ]
        );
    }

    #[test]
    fn what_is_not_a_call_stays_content() {
        for text in [
            "a <tool_call>{\"name\": \"f\"}</tool_call> b",
            "<tool_call>\n<function=bad name>\n</function>\n</tool_call>",
            "x <tool_ca",
            "<tool_call>\n<func",
        ] {
            let p = assert_streams_alike(qwen(vec![]), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text.trim_end());
        }
    }
}
