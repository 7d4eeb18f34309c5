//! DeepSeek's tool calls (vLLM's `deepseek_v3` parser, for R1 and V3, and `deepseek_v31`): after
//! `<｜tool▁calls▁begin｜>`, each call is
//! `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>`
//! (V3.1: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`), up to
//! `<｜tool▁calls▁end｜>`. The name goes out once the arguments' object begins, the arguments
//! stream as written.

use super::tagged::{self, Block, Markers};
use super::{json_value_prefix, FunctionTool, ModelFormat, Parsed, ToolCall};

pub(super) const CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const CALLS_END: &str = "<｜tool▁calls▁end｜>";
const CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const CALL_END: &str = "<｜tool▁call▁end｜>";
const SEP: &str = "<｜tool▁sep｜>";
const FENCE: &str = "```json";

/// The special tokens the parser reads.
pub(super) const MARKERS: &[&str] = &[CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP];

const BLOCK: Markers = Markers {
    start: CALLS_BEGIN,
    end: CALLS_END,
};

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    tagged::parse(text, end, BLOCK, out, read);
}

fn read(body: &str, closed: bool) -> Block {
    let mut calls = Vec::new();
    let finish = |calls: Vec<ToolCall>, open: Option<ToolCall>| match (&open, calls.is_empty()) {
        (None, true) if closed => Block::Content,
        (None, true) => Block::Wait,
        _ => Block::Calls(calls, open),
    };
    let mut rest = body;
    loop {
        let Some(call) = rest.trim_start().strip_prefix(CALL_BEGIN) else {
            return finish(calls, None);
        };
        let Some((head, tail)) = call.split_once(SEP) else {
            return finish(calls, None);
        };
        // R1 / V3: `function<sep>NAME\n```json\n{...}\n````; V3.1: `NAME<sep>{...}`.
        let (name, args) = match head.trim() {
            "function" => {
                let Some((name, a)) = tail.split_once('\n') else {
                    return finish(calls, None);
                };
                let a = a.trim_start();
                match a.strip_prefix(FENCE) {
                    Some(a) => (name.trim(), a.trim_start()),
                    None => return finish(calls, None),
                }
            }
            name => (name, tail.trim_start()),
        };
        if !tagged::is_name(name) || !args.starts_with('{') {
            return finish(calls, None);
        }
        let (len, complete) = json_value_prefix(args);
        let call = ToolCall {
            name: name.to_string(),
            arguments: args[..len].to_string(),
        };
        if !complete {
            return match closed {
                true => {
                    calls.push(call);
                    finish(calls, None)
                }
                false => finish(calls, Some(call)),
            };
        }
        calls.push(call);
        match args[len..].find(CALL_END) {
            Some(at) => rest = &args[len + at + CALL_END.len()..],
            None => return finish(calls, None),
        }
    }
}

/// The rule `calls`: the calls block with one call (or several) of `tools`, R1's way.
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool], parallel: bool) -> String {
    let list = match parallel {
        true => "call (\"\\n\" call)*",
        false => "call",
    };
    let mut g = format!(
        "calls: {} {list} {}\n",
        format.atom(CALLS_BEGIN),
        format.atom(CALLS_END)
    );
    g.push_str(&super::json_call_rules(tools, |tool| {
        (
            format!(
                "{} \"function\" {} {}",
                format.atom(CALL_BEGIN),
                format.atom(SEP),
                super::lark_string(&format!("{}\n{FENCE}\n", tool.name)),
            ),
            format!("{} {}", super::lark_string("\n```"), format.atom(CALL_END)),
        )
    }));
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat};
    use super::*;

    fn deepseek() -> OutputFormat {
        OutputFormat {
            family: Some(Family::DeepSeek),
            ..Default::default()
        }
    }

    /// The calls as the R1 template's round-trip render writes them
    /// (chat_templates/real/deepseek_r1_distill_qwen.json).
    #[test]
    fn r1_and_v3_1_calls() {
        let text = "Let me look.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"location\": \"Paris, France\", \"options\": {\"lang\": \"fr\"}}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>now\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let p = assert_streams_alike(deepseek(), text);
        assert_eq!(p.content, "Let me look.");
        assert_eq!(
            p.calls,
            [
                ToolCall {
                    name: "get_weather".into(),
                    arguments: r#"{"location": "Paris, France", "options": {"lang": "fr"}}"#.into()
                },
                ToolCall {
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
        let text = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Rome\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let p = assert_streams_alike(deepseek(), text);
        assert_eq!(p.calls[0].arguments, r#"{"city": "Rome"}"#);
    }

    #[test]
    fn what_is_not_a_call_stays_content() {
        for text in [
            "<｜tool▁calls▁begin｜>nothing<｜tool▁calls▁end｜> x",
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\nplain<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "a <｜tool▁calls",
        ] {
            let p = assert_streams_alike(deepseek(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
    }
}
