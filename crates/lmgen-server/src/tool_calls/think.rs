//! Reasoning between markers, as vLLM's reasoning parsers read it: `<think>` ... `</think>`
//! (Qwen3, DeepSeek-R1, SmolLM3, the first Magistral), Magistral's `[THINK]` ... `[/THINK]`
//! (special tokens of its tekken vocabulary; vLLM's `mistral` reasoning parser) or Gemma 4's
//! thought channel `<|channel>thought` ... `<channel|>`. Reasoning is the text from the output's start (when the
//! prompt left the markers open) or from an opening marker the output begins with, to the closing
//! one; an unclosed one is reasoning to the end. The content after it starts at its first
//! non-blank.

use super::pending_prefix;

/// A family's reasoning markers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Markers {
    /// `<think>` ... `</think>`.
    #[default]
    Think,
    /// Gemma 4's `<|channel>thought` ... `<channel|>`.
    GemmaThought,
    /// Magistral's `[THINK]` ... `[/THINK]`.
    MistralThink,
}

impl Markers {
    pub(super) fn open(self) -> &'static str {
        match self {
            Markers::Think => "<think>",
            Markers::GemmaThought => "<|channel>thought",
            Markers::MistralThink => "[THINK]",
        }
    }

    pub(super) fn close(self) -> &'static str {
        match self {
            Markers::Think => "</think>",
            Markers::GemmaThought => "<channel|>",
            Markers::MistralThink => "[/THINK]",
        }
    }

    /// The special tokens among the markers (decoded for the parse).
    pub(super) fn tokens(self) -> &'static [&'static str] {
        match self {
            Markers::Think => &["<think>", "</think>"],
            Markers::GemmaThought => &["<|channel>", "<channel|>"],
            Markers::MistralThink => &["[THINK]", "[/THINK]"],
        }
    }

    /// The markers `template` writes, if any.
    pub(super) fn written_by(template: &str) -> Option<Self> {
        [Markers::Think, Markers::GemmaThought, Markers::MistralThink]
            .into_iter()
            .find(|m| template.contains(m.open()) && template.contains(m.close()))
    }

    /// The markers a vocabulary's special tokens (id, text) hold, for a template that writes
    /// none: Magistral's `[THINK]` and `[/THINK]` (a Magistral checkpoint may ship a template
    /// that only names them in its default system prompt, or none at all).
    pub(super) fn in_vocabulary(special: &[(lmgen::TokenId, String)]) -> Option<Self> {
        let has = |t: &str| special.iter().any(|(_, s)| s == t);
        let m = Markers::MistralThink;
        (has(m.open()) && has(m.close())).then_some(m)
    }
}

/// Where the end of an output's text is, for counting its tokens (see `reasoning_tokens.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Not yet known: the text so far may still become the opening marker.
    Pending,
    /// Inside the reasoning (opened by the prompt or by the output's opening marker).
    Reasoning,
    /// After the closing marker.
    Answer,
    /// The output does not open reasoning: it is all answer.
    NoReasoning,
}

/// The section the end of `text` is in, as [`split`] reads it.
pub(super) fn section(text: &str, in_reasoning: bool, markers: Markers) -> Section {
    let (open, close) = (markers.open(), markers.close());
    let lead = text.trim_start();
    let body = if let Some(body) = lead.strip_prefix(open) {
        body
    } else if open.starts_with(lead) {
        return if in_reasoning {
            Section::Reasoning
        } else {
            Section::Pending
        };
    } else if in_reasoning {
        text
    } else {
        return Section::NoReasoning;
    };
    match body.contains(close) {
        true => Section::Answer,
        false => Section::Reasoning,
    }
}

/// Appends the decided reasoning of `text` to `reasoning`; returns the decided text after it
/// (`None`: nothing yet).
pub(super) fn split<'a>(
    text: &'a str,
    end: bool,
    in_reasoning: bool,
    markers: Markers,
    reasoning: &mut String,
) -> Option<&'a str> {
    let (open, close) = (markers.open(), markers.close());
    let lead = text.trim_start();
    let body = if let Some(body) = lead.strip_prefix(open) {
        body // (a model that writes the `<think>` its prompt already opened: read once)
    } else if !end && open.starts_with(lead) {
        return None; // may still become `<think>`
    } else if in_reasoning {
        text
    } else {
        return Some(text);
    };
    match body.find(close) {
        Some(at) => {
            reasoning.push_str(&body[..at]);
            Some(body[at + close.len()..].trim_start())
        }
        None => {
            let keep = if end { 0 } else { pending_prefix(body, close) };
            reasoning.push_str(&body[..body.len() - keep]);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(text: &str, in_reasoning: bool) -> (String, Option<String>) {
        let mut r = String::new();
        let rest = split(text, true, in_reasoning, Markers::Think, &mut r).map(str::to_string);
        (r, rest)
    }

    #[test]
    fn reasoning_is_cut_at_the_markers() {
        assert_eq!(
            split_all("<think>a</think>\n\nb", false),
            ("a".into(), Some("b".into()))
        );
        assert_eq!(
            split_all("no thinking", false),
            ("".into(), Some("no thinking".into()))
        );
        assert_eq!(
            split_all("a</think>b", true),
            ("a".into(), Some("b".into()))
        );
        assert_eq!(split_all("unclosed", true), ("unclosed".into(), None));
        // DeepSeek-R1 may write the `<think>` its prompt opened.
        assert_eq!(
            split_all("<think>\na</think>b", true),
            ("\na".into(), Some("b".into()))
        );
        // Mid-text `<think>` is content.
        assert_eq!(
            split_all("x <think>y</think>", false).1.as_deref(),
            Some("x <think>y</think>")
        );
        // Undecided while it may still be the marker.
        let mut r = String::new();
        assert_eq!(split("<thi", false, false, Markers::Think, &mut r), None);
        assert_eq!(split("a</thi", false, true, Markers::Think, &mut r), None);
        assert_eq!(r, "a");
        // Gemma 4's thought channel.
        let mut r = String::new();
        let text = "<|channel>thought\nHmm.<channel|>Hi.";
        let rest = split(text, true, false, Markers::GemmaThought, &mut r);
        assert_eq!((r.as_str(), rest), ("\nHmm.", Some("Hi.")));
        let gemma4 = include_str!("../../../lmgen/tests/fixtures/chat_templates/real/gemma4.jinja");
        assert_eq!(Markers::written_by(gemma4), Some(Markers::GemmaThought));
    }

    /// Magistral's `[THINK]` ... `[/THINK]`, the text cut at every byte: each prefix parses to a
    /// prefix of the whole parse, and the undecided part is only what may still be a marker.
    #[test]
    fn magistral_think_markers_split_at_every_point() {
        let m = Markers::MistralThink;
        let text = "[THINK]Let me see. [/x] 2+2=4.[/THINK]\n\nIt is 4.";
        let mut whole = String::new();
        let rest = split(text, true, false, m, &mut whole);
        assert_eq!(
            (whole.as_str(), rest),
            ("Let me see. [/x] 2+2=4.", Some("It is 4."))
        );
        for cut in (0..=text.len()).filter(|&k| text.is_char_boundary(k)) {
            let prefix = &text[..cut];
            let mut r = String::new();
            let rest = split(prefix, false, false, m, &mut r);
            assert!(whole.starts_with(&r), "cut {cut}: reasoning {r:?}");
            let open_pending = cut < "[THINK]".len();
            let closed = prefix.contains("[/THINK]");
            match rest {
                None => {
                    assert!(!closed, "cut {cut}");
                    // Everything decided is out, only a marker's possible start waits.
                    let held = if open_pending {
                        cut
                    } else {
                        cut - "[THINK]".len() - r.len()
                    };
                    let tail = &prefix[prefix.len() - held..];
                    assert!(
                        m.open().starts_with(tail) || m.close().starts_with(tail),
                        "cut {cut}: held {tail:?}"
                    );
                }
                Some(rest) => {
                    assert!(closed, "cut {cut}");
                    assert_eq!(r, whole, "cut {cut}");
                    assert!("It is 4.".starts_with(rest), "cut {cut}: {rest:?}");
                }
            }
        }
        // Without the opening marker the text is content; a prompt that opened it starts the
        // output in reasoning; unclosed reasoning runs to the end.
        let mut r = String::new();
        assert_eq!(
            split("Hi [THINK]", true, false, m, &mut r),
            Some("Hi [THINK]")
        );
        assert_eq!(split("a[/THINK]b", true, true, m, &mut r), Some("b"));
        assert_eq!(split("[THINK]open", true, false, m, &mut r), None);
        assert_eq!(r, "aopen");
        // `<think>` markers are plain text for Magistral, and `[THINK]` for `<think>` families.
        let mut r = String::new();
        assert_eq!(
            split("<think>a</think>", true, false, m, &mut r),
            Some("<think>a</think>")
        );
        assert_eq!(
            split("[THINK]a[/THINK]", true, false, Markers::Think, &mut r),
            Some("[THINK]a[/THINK]")
        );
        assert_eq!(r, "");
    }

    #[test]
    fn sections_follow_the_split() {
        use Section::*;
        for (m, text, in_reasoning, want) in [
            (Markers::Think, "", false, Pending),
            (Markers::Think, " <thi", false, Pending),
            (Markers::Think, "<think>", false, Reasoning),
            (Markers::Think, "<think>a</thi", false, Reasoning),
            (Markers::Think, "<think>a</think>", false, Answer),
            (Markers::Think, "Hi", false, NoReasoning),
            (Markers::Think, "", true, Reasoning),
            (Markers::Think, "a</think>b", true, Answer),
            (Markers::MistralThink, "[THI", false, Pending),
            (Markers::MistralThink, "[THINK]x", false, Reasoning),
            (Markers::MistralThink, "[THINK]x[/THINK]", false, Answer),
            (Markers::MistralThink, "<think>", false, NoReasoning),
            (
                Markers::GemmaThought,
                "<|channel>thought\nx<channel|>",
                false,
                Answer,
            ),
        ] {
            assert_eq!(section(text, in_reasoning, m), want, "{m:?} {text:?}");
        }
    }

    #[test]
    fn magistral_markers_come_from_its_template_or_vocabulary() {
        let magistral = include_str!(
            "../../../lmgen/tests/fixtures/chat_templates/real/ministral3_reasoning.jinja"
        );
        assert_eq!(Markers::written_by(magistral), Some(Markers::MistralThink));
        let tekken = [(34, "[THINK]".to_string()), (35, "[/THINK]".to_string())];
        assert_eq!(Markers::in_vocabulary(&tekken), Some(Markers::MistralThink));
        assert_eq!(Markers::in_vocabulary(&tekken[..1]), None);
        assert_eq!(Markers::MistralThink.tokens(), ["[THINK]", "[/THINK]"]);
    }
}
