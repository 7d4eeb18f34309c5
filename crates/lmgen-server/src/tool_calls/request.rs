//! The request side: `tools`, `tool_choice` and `parallel_tool_calls` checked (a 400 naming the
//! field), and the grammar that makes `"required"` or a named function always a valid call.

use lmgen::generation::structured::Grammar;
use serde_json::{json, Value};

use super::{
    deepseek, gemma4, granite, harmony, hermes, lfm2, llama3, mistral, qwen3_xml, Family,
    ModelFormat,
};
use crate::error::ApiError;
use crate::validate::Plan;

/// A function tool: its name and its parameters' JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionTool {
    pub name: String,
    pub parameters: Value,
}

impl FunctionTool {
    /// The arguments' schema as a Lark `%json` body: the parameters (any object when absent),
    /// with at most one space between JSON tokens unless the schema's `x-guidance` says
    /// otherwise, so that a model cannot run on in whitespace.
    pub(super) fn schema(&self) -> Value {
        let mut schema = match &self.parameters {
            Value::Null => json!({"type": "object"}),
            p => p.clone(),
        };
        if let Some(obj) = schema.as_object_mut() {
            obj.entry("x-guidance")
                .or_insert_with(|| json!({"whitespace_pattern": "\\x20"}));
        }
        schema
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model chooses (default).
    Auto,
    /// Tools are rendered but no call is parsed (vLLM's reading).
    None,
    /// One call or more, enforced.
    Required,
    /// This function, enforced.
    Named(String),
}

/// A request's tools, checked.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `tools` as sent (what the template gets).
    pub list: Vec<Value>,
    pub functions: Vec<FunctionTool>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message)
}

impl Tools {
    /// Checks the request's fields (`None`: no tools).
    pub fn from_request(
        tools: Option<&[Value]>,
        choice: Option<&Value>,
        parallel: Option<bool>,
    ) -> Result<Option<Self>, ApiError> {
        let list = tools.unwrap_or_default();
        let mut functions = Vec::with_capacity(list.len());
        for (i, tool) in list.iter().enumerate() {
            let kind = tool.get("type");
            if kind.and_then(Value::as_str) != Some("function") {
                let param = format!("tools[{i}].type");
                return Err(invalid(
                    &param,
                    format!(
                        "`{param}` must be \"function\" (the only tools served), got {}",
                        kind.unwrap_or(&Value::Null)
                    ),
                ));
            }
            let param = format!("tools[{i}].function");
            let Some(function) = tool.get("function").and_then(Value::as_object) else {
                return Err(invalid(&param, format!("`{param}` must be an object")));
            };
            let Some(name) = function.get("name").and_then(Value::as_str) else {
                let param = format!("{param}.name");
                return Err(invalid(&param, format!("`{param}` must be a string")));
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                let param = format!("{param}.name");
                return Err(invalid(
                    &param,
                    format!("`{param}` must be letters, digits, `_`, `-` or `.`, got {name:?}"),
                ));
            }
            let parameters = function.get("parameters").cloned().unwrap_or(Value::Null);
            if !matches!(parameters, Value::Null | Value::Object(_)) {
                let param = format!("{param}.parameters");
                return Err(invalid(
                    &param,
                    format!("`{param}` must be a JSON Schema object"),
                ));
            }
            functions.push(FunctionTool {
                name: name.to_string(),
                parameters,
            });
        }
        let choice = match choice {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(invalid(
                        "tool_choice",
                        format!("`tool_choice` must be \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {other:?}"),
                    ))
                }
            },
            Some(v) => {
                let name = (v.get("type").and_then(Value::as_str) == Some("function"))
                    .then(|| v.pointer("/function/name").and_then(Value::as_str))
                    .flatten()
                    .ok_or_else(|| {
                        invalid(
                            "tool_choice",
                            format!("`tool_choice` must be a string or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {v}"),
                        )
                    })?;
                if !functions.iter().any(|f| f.name == name) {
                    return Err(invalid(
                        "tool_choice",
                        format!("`tool_choice` names the function {name:?}, which is not in `tools`"),
                    ));
                }
                ToolChoice::Named(name.to_string())
            }
        };
        if list.is_empty() {
            if choice != ToolChoice::Auto && choice != ToolChoice::None {
                return Err(invalid("tool_choice", "`tool_choice` needs `tools`"));
            }
            return Ok(None);
        }
        Ok(Some(Tools {
            list: list.to_vec(),
            functions,
            choice,
            parallel: parallel.unwrap_or(true),
        }))
    }

    /// Whether calls are parsed from the output.
    pub fn parsed(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The Lark grammar that `tool_choice` `"required"` or a named function asks for, in
    /// `family`'s format (`None`: the model chooses). `close_think`: the prompt left `<think>`
    /// open, so the output closes it first.
    pub fn grammar(
        &self,
        format: &ModelFormat,
        family: Option<Family>,
        close_think: bool,
    ) -> Result<Option<String>, ApiError> {
        let chosen: Vec<&FunctionTool> = match &self.choice {
            ToolChoice::Auto | ToolChoice::None => return Ok(None),
            ToolChoice::Required => self.functions.iter().collect(),
            ToolChoice::Named(name) => self.functions.iter().filter(|f| &f.name == name).collect(),
        };
        let Some(family) = family else {
            return Err(invalid(
                "tool_choice",
                "this model's chat template has no known tool-call format, so `tool_choice` can only be \"auto\" or \"none\"",
            ));
        };
        let parallel = self.parallel && self.choice == ToolChoice::Required;
        let calls = match family {
            Family::Hermes => hermes::grammar(format, &chosen, parallel),
            Family::Llama3 => llama3::grammar(format, &chosen),
            Family::Mistral { args } => mistral::grammar(format, &chosen, parallel, args),
            Family::Harmony => harmony::grammar(format, &chosen),
            Family::Qwen3Xml => qwen3_xml::grammar(format, &chosen, parallel),
            Family::Gemma4 => gemma4::grammar(format, &chosen, parallel),
            Family::Granite => granite::grammar(format, &chosen, parallel),
            Family::Lfm2 => lfm2::grammar(format, &chosen, parallel),
            Family::DeepSeek => deepseek::grammar(format, &chosen, parallel),
        };
        let start = match close_think {
            true => format!("start: {} calls\n", super::lark_string("</think>\n\n")),
            false => "start: calls\n".to_string(),
        };
        Ok(Some(start + &calls))
    }
}

impl Tools {
    /// How `plan` reads the output of a prompt (`text`) rendered with `tools` (or none): calls
    /// and reasoning parsed in the model's format, and an enforced `tool_choice` as a grammar.
    pub fn read_output(
        tools: Option<&Tools>,
        format: &ModelFormat,
        text: &str,
        plan: &mut Plan,
    ) -> Result<(), ApiError> {
        plan.output = format.output(tools, text);
        let Some(t) = tools else { return Ok(()) };
        let close_think = plan.output.as_ref().is_some_and(|o| o.in_reasoning);
        if let Some(grammar) = t.grammar(format, format.family(true), close_think)? {
            if plan.grammar.is_some() {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "`tool_choice` \"required\" or a named function cannot be combined with `response_format` or a grammar (`grammar`, `guided_grammar`)",
                ));
            }
            plan.grammar = Some(Grammar::Lark(grammar));
            plan.grammar_param = Some("tools"); // a parameters schema that does not compile
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(tools: Value, choice: Option<Value>) -> Option<String> {
        let tools: Option<Vec<Value>> = serde_json::from_value(tools).unwrap();
        Tools::from_request(tools.as_deref(), choice.as_ref(), None)
            .err()
            .and_then(|e| e.param)
    }

    #[test]
    fn wrong_tools_name_the_field() {
        let f = json!([{"type": "function", "function": {"name": "f"}}]);
        assert_eq!(
            param(json!([{"type": "retrieval"}]), None).as_deref(),
            Some("tools[0].type")
        );
        assert_eq!(
            param(json!([{"type": "function"}]), None).as_deref(),
            Some("tools[0].function")
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a b"}}]),
                None
            )
            .as_deref(),
            Some("tools[0].function.name")
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]),
                None
            )
            .as_deref(),
            Some("tools[0].function.parameters")
        );
        for choice in [
            json!("sometimes"),
            json!(5),
            json!({"type": "function", "function": {"name": "g"}}),
        ] {
            assert_eq!(
                param(f.clone(), Some(choice)).as_deref(),
                Some("tool_choice")
            );
        }
        assert_eq!(
            param(Value::Null, Some(json!("required"))).as_deref(),
            Some("tool_choice")
        );
        assert_eq!(param(f.clone(), Some(json!("required"))), None);
        let named = json!({"type": "function", "function": {"name": "f"}});
        let tools = Tools::from_request(f.as_array().map(Vec::as_slice), Some(&named), Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(
            (tools.choice, tools.parallel),
            (ToolChoice::Named("f".into()), false)
        );
    }

    /// Each family's grammar names each tool and compiles with llguidance for a real
    /// vocabulary, its markers written as text or (special tokens) by id.
    #[test]
    fn grammars_name_each_tool() {
        let tools = Tools::from_request(
            Some(&[json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})]),
            Some(&json!("required")),
            None,
        )
        .unwrap()
        .unwrap();
        let format = ModelFormat::default();
        for family in [
            Family::Hermes,
            Family::Llama3,
            Family::Mistral { args: true },
            Family::Mistral { args: false },
            Family::Harmony,
            Family::Qwen3Xml,
            Family::Gemma4,
            Family::Granite,
            Family::Lfm2,
            Family::DeepSeek,
        ] {
            let g = tools
                .grammar(&format, Some(family), false)
                .unwrap()
                .unwrap();
            // The JSON formats take the schema whole; the others its keys.
            let json = !matches!(family, Family::Qwen3Xml | Family::Gemma4 | Family::Lfm2);
            assert!(
                g.starts_with("start: ")
                    && g.contains("get_weather")
                    && (if json {
                        g.contains("%json {")
                    } else {
                        g.contains("city")
                    }),
                "{g}"
            );
        }
        // They compile, with the tiny Llama's vocabulary (markers as text or as token ids).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lmgen/tests/fixtures/golden/models/llama");
        let tokenizer = lmgen::Tokenizer::from_dir(&dir).unwrap();
        let structured =
            lmgen::generation::structured::StructuredOutput::new(&tokenizer, &[2]).unwrap();
        let mut format = ModelFormat::new(&tokenizer);
        format.special.push((3, "[TOOL_CALLS]".into()));
        for family in [
            Family::Hermes,
            Family::Llama3,
            Family::Mistral { args: true },
            Family::Mistral { args: false },
            Family::Harmony,
            Family::Qwen3Xml,
            Family::Gemma4,
            Family::Granite,
            Family::Lfm2,
            Family::DeepSeek,
        ] {
            let g = tools.grammar(&format, Some(family), true).unwrap().unwrap();
            let grammar = lmgen::generation::structured::Grammar::Lark(g.clone());
            assert!(structured.processor(&grammar).is_ok(), "{family:?}: {g}");
        }
        let format = ModelFormat::default();
        let g = tools
            .grammar(&format, Some(Family::Hermes), true)
            .unwrap()
            .unwrap();
        assert!(g.starts_with("start: \"</think>\\n\\n\" calls\n"), "{g}");
        assert_eq!(
            tools
                .grammar(&format, None, false)
                .unwrap_err()
                .param
                .as_deref(),
            Some("tool_choice")
        );
    }
}
