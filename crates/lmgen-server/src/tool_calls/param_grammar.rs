//! A tool's parameters in a grammar, for the formats that do not write JSON (Qwen3-Coder's XML,
//! Gemma 4's literals, LFM2's Python keyword arguments): the required keys in the schema's order,
//! then any of the others, each value written as the format writes its type. A string is raw
//! text up to its `maxLength` (64 characters without one), a string `enum` one of its values, a
//! boolean or `null` the format's words, and anything else JSON under the key's own schema
//! (`%json`: numbers with their bounds, objects, arrays), as the parsers read them back.

use serde_json::{json, Value};

use super::{lark_string, FunctionTool};

/// How a format writes values.
#[derive(Debug, Clone, Copy)]
pub(super) enum Syntax<'a> {
    /// Qwen3-Coder: raw text on its own lines.
    Xml,
    /// Gemma 4: strings between `quote` (a Lark atom), keys bare.
    Gemma { quote: &'a str },
    /// LFM2: Python literals.
    Python,
}

/// The schema's type of a value (the first that is not `"null"` of a list).
fn value_type(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

/// Defines rule `name`: a value under `schema`, written in `syntax`.
fn value_rule(g: &mut String, name: &str, schema: &Value, syntax: Syntax<'_>) {
    let strings: Option<Vec<&str>> = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.iter().map(Value::as_str).collect());
    let quoted = |s: &str| match syntax {
        Syntax::Xml => lark_string(s),
        Syntax::Gemma { quote } => format!("{quote} {} {quote}", lark_string(s)),
        Syntax::Python => lark_string(&Value::from(s).to_string()),
    };
    let expr = match (strings, value_type(schema)) {
        (Some(values), _) if !values.is_empty() => values
            .iter()
            .map(|v| quoted(v))
            .collect::<Vec<_>>()
            .join(" | "),
        (_, Some("string")) => {
            let max = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .unwrap_or(64)
                .min(512);
            match syntax {
                Syntax::Xml => format!("/[^<\\n]{{0,{max}}}/"),
                Syntax::Gemma { quote } => format!("{quote} /[^<]{{0,{max}}}/ {quote}"),
                Syntax::Python => format!("/\"[^\"\\\\\\n]{{0,{max}}}\"/"),
            }
        }
        (_, Some("boolean")) => match syntax {
            Syntax::Python => "\"True\" | \"False\"".to_string(),
            _ => "\"true\" | \"false\"".to_string(),
        },
        (_, Some("null")) => match syntax {
            Syntax::Python => "\"None\"".to_string(),
            _ => "\"null\"".to_string(),
        },
        _ => {
            let mut schema = schema.clone();
            if let Some(obj) = schema.as_object_mut() {
                obj.entry("x-guidance")
                    .or_insert_with(|| json!({"whitespace_pattern": "\\x20"}));
            }
            format!("%json {schema}")
        }
    };
    g.push_str(&format!("{name}: {expr}\n"));
}

/// Defines rule `name`: `tool`'s parameters, each `pair(key, value_rule)` (a Lark expression),
/// separated by `sep` (a Lark expression, or empty); `false` (no rule) when it has none.
pub(super) fn params(
    g: &mut String,
    name: &str,
    tool: &FunctionTool,
    syntax: Syntax<'_>,
    sep: &str,
    pair: impl Fn(&str, &str) -> String,
) -> bool {
    let empty = serde_json::Map::new();
    let properties = tool
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = tool
        .parameters
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut first = Vec::new();
    let mut optional = Vec::new();
    for (k, (key, schema)) in properties.iter().enumerate() {
        let value = format!("{name}_v{k}");
        value_rule(g, &value, schema, syntax);
        match required.contains(&key.as_str()) {
            true => first.push((required.iter().position(|r| r == key), pair(key, &value))),
            false => optional.push(pair(key, &value)),
        }
    }
    first.sort_by_key(|(at, _)| *at);
    let first: Vec<String> = first.into_iter().map(|(_, p)| p).collect();
    let sep = match sep {
        "" => " ".to_string(),
        s => format!(" {s} "),
    };
    let mut expr = first.join(&sep);
    if !optional.is_empty() {
        let any = format!("({})", optional.join(" | "));
        expr = match expr.is_empty() {
            true => format!("({any} ({}{any})*)?", sep.trim_start()),
            false => format!("{expr} ({}{any})*", sep.trim_start()),
        };
    }
    if expr.is_empty() {
        return false;
    }
    g.push_str(&format!("{name}: {expr}\n"));
    true
}
