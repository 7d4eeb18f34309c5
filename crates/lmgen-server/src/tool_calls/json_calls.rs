//! Calls written as JSON objects `{"name": ..., "arguments" | "parameters": {...}}` one after
//! another (Llama 3's `;`-separated calls, the JSON lists of Mistral and Granite), read as they
//! stream: a whole object is a call if it names one; one being written streams as Hermes' does
//! (its name once its arguments begin, then the arguments as written).

use super::hermes::being_written;
use super::{call_from_json, json_value_prefix, ToolCall};

/// The calls at the start of a text.
#[derive(Debug, Default)]
pub(super) struct Objects<'a> {
    pub calls: Vec<ToolCall>,
    /// A call still being written (the text ends inside it).
    pub open: Option<ToolCall>,
    /// The text after the calls, separators left out; `None` while the text ends inside an
    /// object that may still be a call.
    pub rest: Option<&'a str>,
}

impl Objects<'_> {
    /// Whether a call was read or is being written.
    pub fn any(&self) -> bool {
        !self.calls.is_empty() || self.open.is_some()
    }
}

/// Reads call objects from the start of `text`, skipping blanks and `sep` between them (and
/// before the first). At the end of the text (`end`), a call being written is a call, cut short.
pub(super) fn objects(text: &str, end: bool, sep: char) -> Objects<'_> {
    let mut out = Objects::default();
    let mut rest = text;
    loop {
        let r = rest.trim_start_matches(|c: char| c.is_whitespace() || c == sep);
        if !r.starts_with('{') {
            out.rest = Some(r);
            return out;
        }
        let (len, complete) = json_value_prefix(r);
        if complete {
            match call_from_json(&r[..len]).or_else(|| being_written(&r[..len])) {
                Some(call) => out.calls.push(call),
                None => {
                    out.rest = Some(r);
                    return out;
                }
            }
            rest = &r[len..];
            continue;
        }
        match (being_written(r), end) {
            (Some(call), true) => out.calls.push(call),
            (None, true) => out.rest = Some(r),
            (open, false) => out.open = open,
        }
        return out;
    }
}

/// A JSON list of call objects, `[{...}, {...}]`, at the start of `text` (blanks before it).
/// `rest`: the text after the list's `]` (`None` while undecided or unclosed); a list that is not
/// one of calls gives no calls and `rest` the text from its start.
pub(super) fn list(text: &str, end: bool) -> Objects<'_> {
    let lead = text.trim_start();
    let Some(items) = lead.strip_prefix('[') else {
        return Objects {
            rest: (end || !lead.is_empty()).then_some(lead),
            ..Objects::default()
        };
    };
    let mut read = objects(items, end, ',');
    read.rest = match read.rest {
        Some(r) if r.starts_with(']') => Some(&r[1..]),
        Some("") if !end => None,
        // Objects that are not calls.
        Some(_) if !read.any() => Some(lead),
        other => other,
    };
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_lists() {
        let r = objects(
            "{\"name\": \"a\", \"arguments\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": [",
            false,
            ';',
        );
        assert_eq!(r.calls.len(), 1);
        assert_eq!(
            r.open,
            Some(ToolCall {
                name: "b".into(),
                arguments: "{\"x\": [".into()
            })
        );
        assert_eq!(r.rest, None);
        let r = list(
            " [{\"name\": \"a\", \"arguments\": {\"k\": 1}}] after",
            true,
        );
        assert_eq!(
            (r.calls[0].arguments.as_str(), r.rest),
            ("{\"k\": 1}", Some(" after"))
        );
        let r = list("[{\"x\": 1}]", true);
        assert!(!r.any());
        assert_eq!(r.rest, Some("[{\"x\": 1}]"));
        assert_eq!(list("[{\"name\"", false).rest, None);
    }
}
