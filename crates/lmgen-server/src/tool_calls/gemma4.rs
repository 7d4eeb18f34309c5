//! Gemma 4's tool calls, as its chat template writes them: `<|tool_call>call:NAME{ARGS}<tool_call|>`
//! per call, ARGS in the template's literal syntax (`key:value` with bare keys, strings between
//! `<|"|>`, numbers and `true`/`false` bare; vLLM's `gemma4` parser reads the same). The
//! arguments stream rewritten as JSON ([`super::literal`]); the call's name goes out with its `{`.

use super::literal::{self, GEMMA_QUOTE};
use super::param_grammar::{self, Syntax};
use super::tagged::{self, Block, Markers};
use super::{lark_string, FunctionTool, ModelFormat, Parsed, ToolCall};

const BLOCK: Markers = Markers {
    start: "<|tool_call>",
    end: "<tool_call|>",
};
const CALL: &str = "call:";

/// The special tokens the parser reads.
pub(super) const MARKERS: &[&str] = &["<|tool_call>", "<tool_call|>", GEMMA_QUOTE];

pub(super) fn parse(text: &str, end: bool, out: &mut Parsed) {
    tagged::parse(text, end, BLOCK, out, read);
}

fn read(body: &str, closed: bool) -> Block {
    let Some(after) = body.trim_start().strip_prefix(CALL) else {
        return tagged::not_starting_with(body, CALL, closed);
    };
    let Some(brace) = after.find('{') else {
        return match closed || !tagged::is_name(after.trim()) && !after.trim().is_empty() {
            true => Block::Content,
            false => Block::Wait,
        };
    };
    let name = after[..brace].trim();
    if !tagged::is_name(name) {
        return Block::Content;
    }
    let args = literal::to_json(&after[brace..], literal::Syntax::Gemma);
    let call = ToolCall {
        name: name.to_string(),
        arguments: args.json,
    };
    match closed {
        true => Block::Calls(vec![call], None),
        false => Block::Calls(Vec::new(), Some(call)),
    }
}

/// The rule `calls`: one call (or several) of `tools`, its arguments in Gemma's literal syntax
/// ([`param_grammar`]).
pub(super) fn grammar(format: &ModelFormat, tools: &[&FunctionTool], parallel: bool) -> String {
    let quote = format.atom(GEMMA_QUOTE);
    let mut g = String::from(match parallel {
        true => "calls: call+\n",
        false => "calls: call\n",
    });
    let alts: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    g.push_str(&format!("call: {}\n", alts.join(" | ")));
    for (i, tool) in tools.iter().enumerate() {
        let pair = |key: &str, value: &str| format!("{} {value}", lark_string(&format!("{key}:")));
        let params = format!("params_{i}");
        let syntax = Syntax::Gemma { quote: &quote };
        let has = param_grammar::params(&mut g, &params, tool, syntax, "\",\"", pair);
        g.push_str(&format!(
            "call_{i}: {} {} {} \"}}\" {}\n",
            format.atom(BLOCK.start),
            lark_string(&format!("{CALL}{}{{", tool.name)),
            if has { params.as_str() } else { "" },
            format.atom(BLOCK.end),
        ));
    }
    g
}

#[cfg(test)]
mod tests {
    use super::super::{assert_streams_alike, Family, OutputFormat};
    use super::*;

    fn gemma() -> OutputFormat {
        OutputFormat {
            family: Some(Family::Gemma4),
            ..Default::default()
        }
    }

    /// The calls of the template's own round-trip render (chat_templates/real/gemma4.json).
    #[test]
    fn the_templates_calls() {
        let text = "<|tool_call>call:get_weather{location:<|\"|>Paris, France<|\"|>,options:{lang:<|\"|>fr<|\"|>}}<tool_call|><|tool_call>call:search_docs{limit:2,query:<|\"|>météo<|\"|>}<tool_call|>";
        let p = assert_streams_alike(gemma(), text);
        assert_eq!(p.content, "");
        assert_eq!(
            p.calls,
            [
                ToolCall {
                    name: "get_weather".into(),
                    arguments: r#"{"location": "Paris, France", "options": {"lang": "fr"}}"#.into()
                },
                ToolCall {
                    name: "search_docs".into(),
                    arguments: r#"{"limit": 2, "query": "météo"}"#.into()
                }
            ]
        );
    }

    #[test]
    fn content_around_and_broken_calls() {
        let p = assert_streams_alike(gemma(), "Sure. <|tool_call>call:f{a:[1,true]}<tool_call|>");
        assert_eq!(
            (p.content.as_str(), p.calls[0].arguments.as_str()),
            ("Sure.", r#"{"a": [1, true]}"#)
        );
        for text in [
            "<|tool_call>nope<tool_call|> x",
            "a <|tool_c",
            "<|tool_call>call:a b{}",
        ] {
            let p = assert_streams_alike(gemma(), text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content, text);
        }
    }
}
