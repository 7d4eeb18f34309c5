//! LFM2's and LFM2.5's pythonic tool calls (vLLM's `pythonic` parser, which Liquid AI's model
//! cards point to): `<|tool_call_start|>[get_weather(city="Paris", days=3), now()]<|tool_call_end|>`,
//! keyword arguments as Python literals. Each call's name goes out with its `(`, its arguments
//! stream rewritten as JSON ([`super::literal`]).

use super::literal;
use super::param_grammar::{self, Syntax};
use super::tagged::{self, Block, Markers};
use super::{lark_string, FunctionTool, ModelFormat, Parsed, ToolCall};

pub(super) const START: &str = "<|tool_call_start|>";
pub(super) const END: &str = "<|tool_call_end|>";
const BLOCK: Markers = Markers {
    start: START,
    end: END,
};

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    tagged::parse(text, end, BLOCK, out, read);
}

fn read(body: &str, closed: bool) -> Block {
    let Some(mut rest) = body.trim_start().strip_prefix('[') else {
        return tagged::not_starting_with(body, "[", closed);
    };
    let mut calls = Vec::new();
    // What was read is calls; anything else ends the list.
    let finish = |calls: Vec<ToolCall>, open: Option<ToolCall>| match (&open, calls.is_empty()) {
        (None, true) if closed => Block::Content,
        (None, true) => Block::Wait,
        _ => Block::Calls(calls, open),
    };
    loop {
        rest = rest.trim_start();
        if !calls.is_empty() {
            match rest.strip_prefix(',') {
                Some(r) => rest = r.trim_start(),
                None => return finish(calls, None),
            }
        }
        let Some(paren) = rest.find('(') else {
            return finish(calls, None);
        };
        let name = rest[..paren].trim();
        if !tagged::is_name(name) {
            return finish(calls, None);
        }
        let args = literal::to_json(&rest[paren..], literal::Syntax::Python);
        let call = ToolCall {
            name: name.to_string(),
            arguments: args.json,
        };
        match args.len {
            Some(len) => {
                calls.push(call);
                rest = &rest[paren + len..];
            }
            None if closed || args.invalid => {
                calls.push(call);
                return finish(calls, None);
            }
            None => return finish(calls, Some(call)),
        }
    }
}

/// The rule `calls`: one call (or several, in one list) of `tools`, their keyword arguments
/// Python literals ([`param_grammar`]).
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool], parallel: bool) -> String {
    let list = match parallel {
        true => "call (\", \" call)*",
        false => "call",
    };
    let mut g = format!(
        "calls: {} \"[\" {list} \"]\" {}\n",
        format.atom(START),
        format.atom(END)
    );
    let alts: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    g.push_str(&format!("call: {}\n", alts.join(" | ")));
    for (i, tool) in tools.iter().enumerate() {
        let pair = |key: &str, value: &str| format!("{} {value}", lark_string(&format!("{key}=")));
        let params = format!("params_{i}");
        let has = param_grammar::params(&mut g, &params, tool, Syntax::Python, "\", \"", pair);
        g.push_str(&format!(
            "call_{i}: {} {} \")\"\n",
            lark_string(&format!("{}(", tool.name)),
            if has { params.as_str() } else { "" },
        ));
    }
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat};
    use super::*;

    fn lfm2() -> OutputFormat {
        OutputFormat {
            family: Some(Family::Lfm2),
            ..Default::default()
        }
    }

    #[test]
    fn pythonic_calls() {
        let text = "Checking.<|tool_call_start|>[get_weather(location=\"Paris, France\", days=3, options={\"lang\": \"fr\"}), now()]<|tool_call_end|>Done.";
        let p = assert_streams_alike(lfm2(), text);
        assert_eq!(p.content, "Checking.Done.");
        assert_eq!(
            p.calls,
            [
                ToolCall {
                    name: "get_weather".into(),
                    arguments:
                        r#"{"location": "Paris, France", "days": 3, "options": {"lang": "fr"}}"#
                            .into()
                },
                ToolCall {
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
    }

    #[test]
    fn what_is_not_a_call_stays_content() {
        for text in [
            "<|tool_call_start|>get_weather()<|tool_call_end|>",
            "<|tool_call_start|>[1 + 2]<|tool_call_end|> x",
            "a <|tool_call_st",
        ] {
            let p = assert_streams_alike(lfm2(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
    }
}
