//! Tool calls and reasoning in a chat completion's text: the model family's wire format, read
//! from the chat template (which markers it writes), parsed out of the generated text into
//! OpenAI's `message.tool_calls` and `message.reasoning_content`, and, for `tool_choice`
//! `"required"` or a named function, written as a grammar so that the output is always a call.
//!
//! | family | a call | reasoning |
//! |---|---|---|
//! | [`Family::Hermes`] (Qwen2.5, Qwen3, Granite 4, Hermes) | `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` | `<think>`...`</think>` |
//! | [`Family::Llama3`] | the whole message `{"name": ..., "parameters": {...}}` (after `<\|python_tag\|>`) | |
//! | [`Family::Mistral`] | `[TOOL_CALLS][{"name": ..., "arguments": {...}}]`, or `[TOOL_CALLS]name[ARGS]{...}` | |
//! | [`Family::Harmony`] (gpt-oss) | `<\|channel\|>commentary to=functions.NAME <\|constrain\|>json<\|message\|>{...}<\|call\|>` | the `analysis` channel |
//! | [`Family::Qwen3Xml`] (Qwen3-Coder, Qwen3.5) | `<tool_call>\n<function=NAME>\n<parameter=P>\nVALUE\n</parameter>\n</function>\n</tool_call>` | `<think>`...`</think>` |
//! | [`Family::Gemma4`] | `<\|tool_call>call:NAME{key:<\|"\|>text<\|"\|>,n:1}<tool_call\|>` | `<\|channel>thought`...`<channel\|>` |
//! | [`Family::Granite`] (Granite 3.3) | `<\|tool_call\|>[{"name": ..., "arguments": {...}}]` | |
//! | [`Family::Lfm2`] (LFM2, LFM2.5) | `<\|tool_call_start\|>[name(key="text", n=1)]<\|tool_call_end\|>` | |
//! | [`Family::DeepSeek`] (DeepSeek-R1, V3) | `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>` | `<think>`...`</think>`, opened by the prompt |
//!
//! `<think>` reasoning is read for any template that writes both markers (Qwen3, DeepSeek-R1,
//! SmolLM3), with or without tools; DeepSeek-R1's output starts inside it unless the prompt
//! closed it (vLLM's `deepseek_r1` reasoning parser). A template that writes no call format takes
//! it from the vocabulary (SmolLM3's unsloth template: `<tool_call>`, Hermes; LFM2.5:
//! `<|tool_call_start|>`). Gemma 4's `<|channel>thought` ... `<channel|>` is reasoning too, and
//! so is Magistral's `[THINK]` ... `[/THINK]` (from its template, else from special tokens of the
//! vocabulary).
//!
//! Parsing is a function of the whole text so far ([`OutputFormat::parse`]): with `end` false it
//! leaves out what is undecided (text that may still start a marker, the unsure end of a call's
//! arguments), so the parse of a prefix is a prefix of the parse of the whole. [`OutputParser`]
//! hands out what each new parse adds, for streamed and non-streamed answers alike. A Hermes or
//! harmony call streams as it is written, its name first (once its arguments have begun), then
//! its arguments as written, and so do the JSON calls of Llama 3, Mistral, Granite and DeepSeek;
//! Qwen3-Coder's, Gemma 4's and LFM2's arguments, rewritten as JSON, stream one parameter (or
//! one piece of a value) at a time. Like vLLM's parsers, these follow the markers, not a grammar:
//! text a model writes in a call's place that does not parse stays content (a call that went out
//! while being written stays a call).
//!
//! The markers are special tokens in several families (`[TOOL_CALLS]`, `<|channel|>`): a request
//! that parses decodes them ([`ModelFormat::dropped`] lists the special tokens still left out).

mod deepseek;
mod gemma4;
mod granite;
mod harmony;
mod hermes;
mod json_calls;
mod lfm2;
mod literal;
mod llama3;
mod mistral;
mod param_grammar;
mod qwen3_xml;
mod reasoning_tokens;
mod request;
mod stream;
mod tagged;
mod think;
mod thinking_budget;

pub use reasoning_tokens::ReasoningTokens;

use std::collections::HashSet;
use std::sync::Arc;

use lmgen::{TokenId, Tokenizer};
use serde_json::Value;

pub use request::{FunctionTool, ToolChoice, Tools};
pub use stream::{CallDelta, OutputParser, ParsedDelta};
pub use thinking_budget::ThinkingBudgetLogitsProcessor;

/// One parsed call: the function's name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// What a chat output holds, in OpenAI's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub content: String,
    pub reasoning: String,
    pub calls: Vec<ToolCall>,
    /// A call still being written (only while `end` is false): its name, and the part of its
    /// arguments written so far that is surely theirs. The whole call's arguments start with it.
    pub open: Option<ToolCall>,
}

/// A model family's tool-call wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Hermes,
    Llama3,
    /// `args`: the `[TOOL_CALLS]name[ARGS]{...}` format (Mistral Small 3.2, Ministral 3), else
    /// the JSON list.
    Mistral {
        args: bool,
    },
    Harmony,
    /// Qwen3-Coder's and Qwen3.5's XML calls, values typed by the tool's schema.
    Qwen3Xml,
    Gemma4,
    /// Granite 3.3's `<|tool_call|>` JSON list.
    Granite,
    /// LFM2's pythonic calls.
    Lfm2,
    DeepSeek,
}

impl Family {
    /// The family whose markers `template` writes (`None`: no tool calls known).
    pub fn detect(template: &str) -> Option<Self> {
        if template.contains("<|channel|>") && template.contains("<|message|>") {
            Some(Family::Harmony)
        } else if template.contains("[TOOL_CALLS]") {
            Some(Family::Mistral {
                args: template.contains("[ARGS]"),
            })
        } else if template.contains("<tool_call>") && template.contains("<function=") {
            // Qwen3.5's and Qwen3-Coder's `<tool_call>` holds XML, not Hermes' JSON.
            Some(Family::Qwen3Xml)
        } else if template.contains("<tool_call>") {
            Some(Family::Hermes)
        } else if template.contains("<|tool_call>") {
            Some(Family::Gemma4)
        } else if template.contains("<|tool_call|>") {
            Some(Family::Granite)
        } else if template.contains("<|tool_call_start|>")
            || template.contains("<|tool_list_start|>")
        {
            Some(Family::Lfm2)
        } else if template.contains(deepseek::CALLS_BEGIN) {
            Some(Family::DeepSeek)
        } else if template.contains("<|python_tag|>")
            || (template.contains("<|start_header_id|>") && template.contains("parameters"))
        {
            Some(Family::Llama3)
        } else {
            None
        }
    }

    /// The markers the parser reads (decoded even when they are special tokens).
    fn markers(self) -> &'static [&'static str] {
        match self {
            Family::Hermes => &["<tool_call>", "</tool_call>"],
            Family::Llama3 => &["<|python_tag|>"],
            Family::Mistral { .. } => &["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"],
            Family::Harmony => harmony::MARKERS,
            Family::Qwen3Xml => &["<tool_call>", "</tool_call>"],
            Family::Gemma4 => gemma4::MARKERS,
            Family::Granite => &[granite::TOOL_CALL],
            Family::Lfm2 => &[lfm2::START, lfm2::END],
            Family::DeepSeek => deepseek::MARKERS,
        }
    }

    /// The family of vLLM's `--tool-call-parser` `name` (`None`: not one lmgen reads).
    pub fn from_parser_name(name: &str) -> Option<Self> {
        Some(match name {
            "hermes" => Family::Hermes,
            "llama3_json" => Family::Llama3,
            "mistral" => Family::Mistral { args: false },
            "openai" => Family::Harmony,
            "qwen3_coder" | "qwen3_xml" => Family::Qwen3Xml,
            "gemma4" => Family::Gemma4,
            "granite" => Family::Granite,
            "pythonic" => Family::Lfm2,
            "deepseek_v3" | "deepseek_v31" => Family::DeepSeek,
            _ => return None,
        })
    }

    /// The parser names [`Family::from_parser_name`] takes.
    pub const PARSER_NAMES: &'static str = "hermes, llama3_json, mistral, openai, qwen3_coder, \
        qwen3_xml, gemma4, granite, pythonic, deepseek_v3, deepseek_v31";

    /// The family a vocabulary's special tokens show, for a template that writes no call format.
    fn from_vocabulary(special: &[(TokenId, String)]) -> Option<Self> {
        let has = |t: &str| special.iter().any(|(_, s)| s == t);
        if has(lfm2::START) {
            Some(Family::Lfm2)
        } else if has("<tool_call>") {
            Some(Family::Hermes)
        } else {
            None
        }
    }

    /// Appends the calls and the content of `text` (the part after any reasoning) to `out`;
    /// `functions`: the request's tools (their schemas type Qwen3-Coder's values).
    fn parse(self, text: &str, end: bool, functions: &[FunctionTool], out: &mut Parsed) {
        match self {
            Family::Hermes => hermes::parse(text, end, out),
            Family::Llama3 => llama3::parse(text, end, out),
            Family::Mistral { .. } => mistral::parse(text, end, out),
            Family::Harmony => harmony::parse(text, end, true, out),
            Family::Qwen3Xml => qwen3_xml::parse(text, end, functions, out),
            Family::Gemma4 => gemma4::parse(text, end, out),
            Family::Granite => granite::parse(text, end, out),
            Family::Lfm2 => lfm2::parse(text, end, out),
            Family::DeepSeek => deepseek::parse(text, end, out),
        }
    }
}

/// The output formats of a served checkpoint: its template's family and thinking markers, and
/// its special tokens.
#[derive(Debug, Clone, Default)]
pub struct ModelFormat {
    /// The family of the template that renders without tools, and with them (`"tool_use"`).
    family: [Option<Family>; 2],
    /// The reasoning markers that template writes.
    think: [Option<think::Markers>; 2],
    /// Whether it is DeepSeek-R1's, whose output starts in reasoning.
    starts_thinking: [bool; 2],
    /// Special tokens: (id, text).
    special: Vec<(TokenId, String)>,
}

impl ModelFormat {
    /// Reads `tokenizer`'s chat template(s) and special tokens.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let mut format = ModelFormat::default();
        if let Some(template) = tokenizer.chat_template() {
            for (i, tools) in [false, true].into_iter().enumerate() {
                if let Ok(source) = template.source(tools) {
                    format.read_template(i, &source);
                }
            }
        }
        format.special = tokenizer
            .inner()
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        format.special.sort();
        for family in &mut format.family {
            if family.is_none() {
                *family = Family::from_vocabulary(&format.special);
            }
        }
        for think in &mut format.think {
            if think.is_none() {
                *think = think::Markers::in_vocabulary(&format.special);
            }
        }
        format
    }

    /// `family` (the server's `--tool-call-parser`) for every request, in place of the
    /// template's (whose Mistral variant is kept).
    pub fn with_family(mut self, family: Option<Family>) -> Self {
        if let Some(f) = family {
            for slot in &mut self.family {
                *slot = match (f, *slot) {
                    (Family::Mistral { .. }, Some(Family::Mistral { args })) => {
                        Some(Family::Mistral { args })
                    }
                    _ => Some(f),
                };
            }
        }
        self
    }

    /// Reads template `i` (0: without tools, 1: with them).
    fn read_template(&mut self, i: usize, source: &str) {
        self.family[i] = Family::detect(source);
        self.think[i] = think::Markers::written_by(source);
        self.starts_thinking[i] =
            self.think[i] == Some(think::Markers::Think) && source.contains("<｜Assistant｜>");
    }

    /// The tool-call family of the template a request renders with.
    pub fn family(&self, with_tools: bool) -> Option<Family> {
        self.family[usize::from(with_tools)]
    }

    /// How the output of a request with `tools` is read: calls are parsed unless `tool_choice`
    /// is `"none"`; `prompt` is the rendered prompt (a generation prompt that opens `<think>`
    /// starts the output inside reasoning, and so does DeepSeek-R1's unless it closes it).
    /// `None`: the text is all content.
    pub fn output(&self, tools: Option<&Tools>, prompt: &str) -> Option<OutputFormat> {
        let i = usize::from(tools.is_some());
        let family = self.family[i];
        let harmony = family == Some(Family::Harmony);
        let markers = self.think[i].filter(|_| !harmony);
        let think = markers.is_some();
        let markers = markers.unwrap_or_default();
        let calls = tools.filter(|t| t.parsed()).and(family);
        if calls.is_none() && !think && !harmony {
            return None;
        }
        let opened = prompt.rfind(markers.open()) > prompt.rfind(markers.close());
        let closed = prompt.trim_end().ends_with(markers.close());
        let in_reasoning = think && (opened || (self.starts_thinking[i] && !closed));
        Some(OutputFormat {
            family: calls,
            harmony,
            think,
            think_markers: markers,
            in_reasoning,
            one_call: tools.is_some_and(|t| !t.parallel),
            functions: tools.map_or_else(Default::default, |t| t.functions.clone().into()),
        })
    }

    /// The special tokens a request reading `format` leaves out of its text (all but its
    /// markers), as `skip_special_tokens` does.
    pub fn dropped(&self, format: &OutputFormat) -> HashSet<TokenId> {
        let mut kept: Vec<&str> = format.family.map_or(&[][..], Family::markers).to_vec();
        if format.harmony {
            kept.extend(harmony::MARKERS);
        }
        if format.think {
            kept.extend(format.think_markers.tokens());
        }
        self.special
            .iter()
            .filter(|(_, t)| !kept.contains(&t.as_str()))
            .map(|&(id, _)| id)
            .collect()
    }

    /// `text` as a Lark atom: the special token's id when it is one, else a string literal.
    pub fn atom(&self, text: &str) -> String {
        match self.special.iter().find(|(_, t)| t == text) {
            Some((id, _)) => format!("<[{id}]>"),
            None => lark_string(text),
        }
    }
}

/// The rule `call`, one alternative per tool, and each tool's rule `call_i: BEFORE args_i AFTER`,
/// `args_i` its arguments as JSON under the tool's schema; `around(tool)` gives BEFORE and AFTER
/// (Lark).
fn json_call_rules(
    tools: &[&FunctionTool],
    around: impl Fn(&FunctionTool) -> (String, String),
) -> String {
    let alts: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    let mut g = format!("call: {}\n", alts.join(" | "));
    for (i, tool) in tools.iter().enumerate() {
        let (before, after) = around(tool);
        g.push_str(&format!(
            "call_{i}: {before} args_{i} {after}\nargs_{i}: %json {}\n",
            tool.schema()
        ));
    }
    g
}

/// `s` as a Lark string literal (JSON string syntax).
fn lark_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// How one request's output is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputFormat {
    /// The family whose calls are parsed (`None`: none are).
    pub family: Option<Family>,
    /// gpt-oss's channels (reasoning and final text even without tools).
    pub harmony: bool,
    /// Text between reasoning markers is reasoning.
    pub think: bool,
    /// Those markers.
    pub think_markers: think::Markers,
    /// The prompt left `<think>` open: the output starts inside reasoning.
    pub in_reasoning: bool,
    /// `parallel_tool_calls: false`: only the first call counts (as vLLM); the text of later
    /// ones is dropped.
    pub one_call: bool,
    /// The request's tools (Qwen3-Coder's values are typed by their schemas).
    pub functions: Arc<[FunctionTool]>,
}

impl OutputFormat {
    /// The parse of `text`; with `end` false only its decided part.
    pub fn parse(&self, text: &str, end: bool) -> Parsed {
        let mut out = Parsed::default();
        if self.harmony {
            harmony::parse(text, end, self.family.is_some(), &mut out);
        } else {
            let rest = match self.think {
                true => think::split(
                    text,
                    end,
                    self.in_reasoning,
                    self.think_markers,
                    &mut out.reasoning,
                ),
                false => Some(text),
            };
            match (rest, self.family) {
                (Some(rest), Some(family)) => family.parse(rest, end, &self.functions, &mut out),
                (Some(rest), None) => out.content.push_str(rest),
                (None, _) => {}
            }
        }
        if self.one_call && !out.calls.is_empty() {
            out.calls.truncate(1);
            out.open = None;
        }
        if !end {
            // Whitespace at the end waits: it is dropped if a call follows.
            let kept = out.content.trim_end().len();
            out.content.truncate(kept);
        } else if !out.calls.is_empty() {
            let kept = out.content.trim_end().len();
            out.content.truncate(kept);
        }
        out
    }
}

/// The longest proper prefix of `marker` that `text` ends with (0: none).
fn pending_prefix(text: &str, marker: &str) -> usize {
    (1..marker.len())
        .rev()
        .filter(|&k| marker.is_char_boundary(k))
        .find(|&k| text.ends_with(&marker[..k]))
        .unwrap_or(0)
}

/// A call from the JSON text `{"name": ..., "arguments" | "parameters": ...}` (`None` if it is
/// not one), its arguments as written (an object's text as is, so that what was streamed of
/// them is their start; a string's value).
fn call_from_json(text: &str) -> Option<ToolCall> {
    #[derive(serde::Deserialize)]
    struct RawCall<'a> {
        name: String,
        #[serde(borrow)]
        arguments: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        parameters: Option<&'a serde_json::value::RawValue>,
    }
    let call: RawCall<'_> = serde_json::from_str(text.trim()).ok()?;
    let arguments = match call.arguments.or(call.parameters) {
        None => "{}".to_string(),
        Some(raw) if raw.get().starts_with('"') => serde_json::from_str(raw.get()).ok()?,
        Some(raw) => raw.get().to_string(),
    };
    Some(ToolCall {
        name: call.name,
        arguments,
    })
}

/// How much of `text`, which starts with a JSON object or array, is surely inside that value,
/// and whether the value is complete there (a scan of brackets and strings, not a parse).
fn json_value_prefix(text: &str) -> (usize, bool) {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (i + 1, true);
                }
            }
            '"' => in_string = true,
            _ if depth == 0 => return (0, false),
            _ => {}
        }
    }
    (text.len(), false)
}

/// Test support: every split of `text` into two pushes, and the one-character-at-a-time
/// stream, give the whole parse.
#[cfg(test)]
fn assert_streams_alike(format: OutputFormat, text: &str) -> Parsed {
    let whole = format.parse(text, true);
    let mut splits: Vec<Vec<&str>> = Vec::new();
    for (i, _) in text.char_indices().skip(1) {
        splits.push(vec![&text[..i], &text[i..]]);
    }
    splits.push(
        text.char_indices()
            .map(|(i, c)| &text[i..i + c.len_utf8()])
            .collect(),
    );
    for pieces in splits {
        let mut parser = OutputParser::new(format.clone());
        let mut got = Parsed::default();
        for (k, piece) in pieces.iter().enumerate() {
            let d = parser.push(piece, k + 1 == pieces.len());
            got.content.push_str(&d.content);
            got.reasoning.push_str(&d.reasoning);
            for call in d.calls {
                // A call's first delta names it; later ones only add to its arguments.
                match call.name {
                    Some(name) => {
                        assert_eq!(call.index, got.calls.len(), "{pieces:?}");
                        got.calls.push(ToolCall {
                            name,
                            arguments: call.arguments,
                        });
                    }
                    None => got.calls[call.index].arguments.push_str(&call.arguments),
                }
            }
        }
        assert_eq!(got, whole, "{text:?} split as {pieces:?}");
        assert_eq!(parser.parsed(), &whole);
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_read_from_the_template() {
        assert_eq!(
            Family::detect("{{ '<tool_call>\\n' }}"),
            Some(Family::Hermes)
        );
        assert_eq!(
            Family::detect("[TOOL_CALLS]{{ name }}[ARGS]"),
            Some(Family::Mistral { args: true })
        );
        assert_eq!(
            Family::detect("{{- '[TOOL_CALLS][' }}"),
            Some(Family::Mistral { args: false })
        );
        assert_eq!(
            Family::detect("<|start|>{{ x }}<|channel|>final<|message|>"),
            Some(Family::Harmony)
        );
        assert_eq!(
            Family::detect("<|python_tag|>{{ x }}<|eom_id|>"),
            Some(Family::Llama3)
        );
        assert_eq!(Family::detect("{{ '<|user|>' + m }}"), None);
        let gpt_oss = include_str!("../../../lmgen/tests/fixtures/chat_templates/gpt_oss.jinja");
        assert_eq!(Family::detect(gpt_oss), Some(Family::Harmony));
    }

    /// The published templates of tests/chat_template_real.rs: each family's markers.
    #[test]
    fn real_templates_give_their_familys_format() {
        macro_rules! real {
            ($name:literal) => {
                include_str!(concat!(
                    "../../../lmgen/tests/fixtures/chat_templates/real/",
                    $name,
                    ".jinja"
                ))
            };
        }
        let mistral = Some(Family::Mistral { args: true });
        let cases = [
            (real!("qwen3"), Some(Family::Hermes), true),
            (real!("qwen2_5"), Some(Family::Hermes), false),
            (real!("granite4"), Some(Family::Hermes), false),
            (real!("llama3_1"), Some(Family::Llama3), false),
            (real!("llama3_2"), Some(Family::Llama3), false),
            (real!("mistral_small3_2"), mistral, false),
            (real!("ministral3_reasoning"), mistral, false), // `[THINK]` (think.rs)
            (real!("devstral_small"), mistral, false),
            (
                real!("deepseek_r1_distill_qwen"),
                Some(Family::DeepSeek),
                true,
            ),
            (real!("qwen3_5"), Some(Family::Qwen3Xml), true),
            (real!("gemma4"), Some(Family::Gemma4), false),
            (real!("granite3_3"), Some(Family::Granite), true),
            (real!("lfm2"), Some(Family::Lfm2), false),
            // No call format in the template: the vocabulary's (below).
            (real!("smollm3"), None, true),
            (real!("lfm2_5"), None, false),
            (real!("phi3_5_mini"), None, false),
        ];
        for (i, (source, family, think)) in cases.into_iter().enumerate() {
            assert_eq!(Family::detect(source), family, "case {i}");
            let writes_think = source.contains("<think>") && source.contains("</think>");
            assert_eq!(writes_think, think, "case {i}");
        }
    }

    #[test]
    fn a_request_reads_its_output_by_its_template() {
        let format = ModelFormat {
            family: [None, Some(Family::Hermes)],
            think: [Some(think::Markers::Think); 2],
            starts_thinking: [false, false],
            special: vec![(5, "<|im_end|>".into()), (7, "<tool_call>".into())],
        };
        let tools = |choice: &str, parallel: bool| {
            let f = serde_json::json!({"type": "function", "function": {"name": "f"}});
            Tools::from_request(Some(&[f]), Some(&choice.into()), Some(parallel))
                .unwrap()
                .unwrap()
        };
        let auto = tools("auto", true);
        // Tools: calls parsed; `<think>` left open by the prompt starts in reasoning.
        let o = format
            .output(Some(&auto), "<|im_start|>assistant\n<think>\n")
            .unwrap();
        assert_eq!(
            (o.family, o.think, o.in_reasoning, o.one_call),
            (Some(Family::Hermes), true, true, false)
        );
        let o = format
            .output(Some(&auto), "<think>\n\n</think>\n\n")
            .unwrap();
        assert!(!o.in_reasoning);
        assert!(
            format
                .output(Some(&tools("required", false)), "")
                .unwrap()
                .one_call
        );
        // `tool_choice: "none"` and no tools: reasoning only.
        assert_eq!(
            format
                .output(Some(&tools("none", true)), "")
                .unwrap()
                .family,
            None
        );
        assert_eq!(format.output(None, "").unwrap().family, None);
        // Special tokens other than the markers stay out of the text; a special marker is
        // written in a grammar by its id.
        assert_eq!(format.dropped(&o), HashSet::from([5]));
        assert_eq!(
            (format.atom("<tool_call>"), format.atom("</tool_call>")),
            ("<[7]>".to_string(), "\"</tool_call>\"".to_string())
        );
        let plain = ModelFormat::default();
        assert_eq!(plain.output(Some(&auto), "<think>"), None);
    }

    #[test]
    fn deepseek_r1_starts_in_reasoning_and_vocabularies_name_a_family() {
        let r1 = include_str!(
            "../../../lmgen/tests/fixtures/chat_templates/real/deepseek_r1_distill_qwen.jinja"
        );
        let mut format = ModelFormat::default();
        format.read_template(0, r1);
        format.read_template(1, r1);
        assert_eq!(format.family(true), Some(Family::DeepSeek));
        // Reasoning from the output's start, unless the prompt closed it (thinking off).
        for (prompt, in_reasoning) in [
            ("<｜User｜>Hi<｜Assistant｜>", true),
            ("<｜User｜>Hi<｜Assistant｜><think>\n", true),
            ("<｜User｜>Hi<｜Assistant｜><think>\n</think>", false),
        ] {
            let o = format.output(None, prompt).unwrap();
            assert_eq!((o.think, o.in_reasoning), (true, in_reasoning), "{prompt}");
        }
        let o = format.output(None, "<｜Assistant｜>").unwrap();
        let p = assert_streams_alike(o, "<think>\nHmm.\n</think>\n\nHello.");
        assert_eq!(
            (p.reasoning.as_str(), p.content.as_str()),
            ("\nHmm.\n", "Hello.")
        );
        let qwen3 = include_str!("../../../lmgen/tests/fixtures/chat_templates/real/qwen3.jinja");
        format.read_template(0, qwen3);
        assert!(
            !format
                .output(None, "<|im_start|>assistant\n")
                .unwrap()
                .in_reasoning
        );
        // A template without a call format: the vocabulary's.
        let special = |t: &str| vec![(1, "<|im_end|>".to_string()), (2, t.to_string())];
        assert_eq!(
            Family::from_vocabulary(&special("<|tool_call_start|>")),
            Some(Family::Lfm2)
        );
        assert_eq!(
            Family::from_vocabulary(&special("<tool_call>")),
            Some(Family::Hermes)
        );
        assert_eq!(Family::from_vocabulary(&special("<|eot_id|>")), None);
    }

    #[test]
    fn the_parser_flag_overrides_the_template() {
        assert_eq!(
            Family::from_parser_name("qwen3_coder"),
            Some(Family::Qwen3Xml)
        );
        assert_eq!(Family::from_parser_name("no_such_parser"), None);
        for name in Family::PARSER_NAMES.split(", ") {
            assert!(Family::from_parser_name(name).is_some(), "{name}");
        }
        let mut format = ModelFormat::default();
        let mistral = include_str!(
            "../../../lmgen/tests/fixtures/chat_templates/real/mistral_small3_2.jinja"
        );
        format.read_template(1, mistral);
        let format = format.with_family(Family::from_parser_name("mistral"));
        assert_eq!(
            (format.family(false), format.family(true)),
            (
                Some(Family::Mistral { args: false }),
                Some(Family::Mistral { args: true })
            )
        );
        let format = format.with_family(Some(Family::Lfm2));
        assert_eq!(format.family(true), Some(Family::Lfm2));
        assert_eq!(ModelFormat::default().with_family(None).family(true), None);
    }

    #[test]
    fn gemma4_thinks_in_its_thought_channel() {
        let gemma4 = include_str!("../../../lmgen/tests/fixtures/chat_templates/real/gemma4.jinja");
        let mut format = ModelFormat {
            special: vec![
                (3, "<|channel>".into()),
                (4, "<channel|>".into()),
                (5, "<eos>".into()),
            ],
            ..ModelFormat::default()
        };
        format.read_template(0, gemma4);
        format.read_template(1, gemma4);
        assert_eq!(format.family(true), Some(Family::Gemma4));
        // Thinking off: the prompt holds an empty, closed thought.
        let off = format
            .output(None, "<|turn>model\n<|channel>thought\n<channel|>")
            .unwrap();
        assert!(off.think && !off.in_reasoning);
        let on = format.output(None, "<|turn>model\n").unwrap();
        assert_eq!(format.dropped(&on), HashSet::from([5]));
        let p = assert_streams_alike(on, "<|channel>thought\nThe user greets.<channel|>Hello!");
        assert_eq!(
            (p.reasoning.as_str(), p.content.as_str()),
            ("\nThe user greets.", "Hello!")
        );
    }

    #[test]
    fn thinking_then_hermes_calls() {
        let format = OutputFormat {
            family: Some(Family::Hermes),
            harmony: false,
            think: true,
            in_reasoning: false,
            one_call: false,
            ..Default::default()
        };
        let text = "<think>\nLook it up.\n</think>\n\nSure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>\n";
        let p = assert_streams_alike(format.clone(), text);
        assert_eq!(p.reasoning, "\nLook it up.\n");
        assert_eq!(p.content, "Sure.");
        assert_eq!(
            p.calls,
            [ToolCall {
                name: "f".into(),
                arguments: r#"{"a": 1}"#.into()
            }]
        );
        // A prompt that opened `<think>`: the output starts in reasoning; unclosed, it is all
        // reasoning.
        let open = OutputFormat {
            in_reasoning: true,
            ..format.clone()
        };
        let p = assert_streams_alike(open.clone(), "still thinking <thi");
        assert_eq!(
            (p.reasoning.as_str(), p.content.as_str()),
            ("still thinking <thi", "")
        );
        let p = assert_streams_alike(open, "a</think>b");
        assert_eq!((p.reasoning.as_str(), p.content.as_str()), ("a", "b"));
        // Without a family, text after reasoning is content as is.
        let plain = OutputFormat {
            family: None,
            ..format.clone()
        };
        let p = assert_streams_alike(plain, "<think>x</think>  y <tool_call>");
        assert_eq!(
            (p.reasoning.as_str(), p.content.as_str()),
            ("x", "y <tool_call>")
        );
        // `parallel_tool_calls: false`: the first call only.
        let one = OutputFormat {
            one_call: true,
            ..format
        };
        let call = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>";
        let p = assert_streams_alike(one, &format!("{call}\n{call}\n{call} end"));
        assert_eq!((p.calls.len(), p.content.as_str()), (1, "\n\n end"));
    }
}
