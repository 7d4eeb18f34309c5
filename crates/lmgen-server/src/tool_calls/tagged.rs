//! The shape most formats share: content, and calls in blocks between a start and an end marker
//! (`<tool_call>`...`</tool_call>`, `<|tool_call>`...`<tool_call|>`,
//! `<|tool_call_start|>`...`<|tool_call_end|>`, DeepSeek's `<｜tool▁calls▁begin｜>`...). Each
//! family reads a block's body; a block that holds no call is content, markers and all.

use super::{pending_prefix, Parsed, ToolCall};

/// What a family reads in a block's body.
#[derive(Debug)]
pub(super) enum Block {
    /// Calls, whole; `open`: one still being written (only in an unclosed block).
    Calls(Vec<ToolCall>, Option<ToolCall>),
    /// Not a call: the block is content.
    Content,
    /// Undecided (only in an unclosed block).
    Wait,
}

/// The block markers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Markers {
    pub start: &'static str,
    pub end: &'static str,
}

/// Appends the content and calls of `text` to `out`. `read(body, closed)` reads a block's body:
/// `closed` when its end marker came (or the text ended: a call cut short stays a call).
pub(super) fn parse(
    text: &str,
    end: bool,
    markers: Markers,
    out: &mut Parsed,
    read: impl Fn(&str, bool) -> Block,
) {
    let mut rest = text;
    loop {
        let Some(at) = rest.find(markers.start) else {
            let keep = if end {
                0
            } else {
                pending_prefix(rest, markers.start)
            };
            out.content.push_str(&rest[..rest.len() - keep]);
            return;
        };
        out.content.push_str(&rest[..at]);
        let after = &rest[at + markers.start.len()..];
        let (body, next) = match after.find(markers.end) {
            Some(close) => (&after[..close], Some(&after[close + markers.end.len()..])),
            None => (after, None),
        };
        let closed = next.is_some() || end;
        match read(body, closed) {
            Block::Calls(calls, open) => {
                out.calls.extend(calls);
                if !closed {
                    out.open = open;
                    return;
                }
            }
            Block::Content => match next {
                Some(_) => {
                    let whole = at + markers.start.len() + body.len() + markers.end.len();
                    out.content.push_str(&rest[at..whole]);
                }
                None => {
                    // Content for good: out while it streams, but for an end marker's start.
                    let keep = if end {
                        0
                    } else {
                        pending_prefix(body, markers.end)
                    };
                    out.content.push_str(markers.start);
                    out.content.push_str(&body[..body.len() - keep]);
                    return;
                }
            },
            Block::Wait => return,
        }
        match next {
            Some(next) => rest = next,
            None => return,
        }
    }
}

/// `Wait` while `body` (trimmed) may still become `prefix`, else `Content`: for a body that does
/// not start with `prefix`.
pub(super) fn not_starting_with(body: &str, prefix: &str, closed: bool) -> Block {
    match !closed && prefix.starts_with(body.trim_start()) {
        true => Block::Wait,
        false => Block::Content,
    }
}

/// Whether `name` can be a function's name (`tools[].function.name`'s characters).
pub(super) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}
