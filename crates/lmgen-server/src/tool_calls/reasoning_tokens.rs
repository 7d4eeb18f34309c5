//! OpenAI's `reasoning_tokens` (chat's `usage.completion_tokens_details`, the Responses API's
//! `usage.output_tokens_details`): how many of a choice's generated tokens are its reasoning,
//! counted token by token as they come, by where the text stands after each one
//! ([`think::section`]).
//!
//! A token counts when it was generated inside the reasoning, the markers included: the tokens
//! of the opening marker (which the output writes, or which the prompt left open), those of the
//! reasoning, and the ones that write the closing marker. So `completion_tokens -
//! reasoning_tokens` is the answer's tokens. (vLLM's reasoning parsers leave the marker tokens
//! out; OpenAI's reasoning tokens are all the tokens the answer does not show.) Tokens written
//! while the output may still be opening a marker wait until it is known. gpt-oss's harmony
//! output counts the tokens of its `analysis` messages, header and end marker included (a token
//! belongs to the message open before it).

use super::harmony;
use super::think::{self, Section};
use super::OutputFormat;

/// The reasoning-token count of one choice.
#[derive(Debug, Clone)]
pub struct ReasoningTokens {
    /// gpt-oss's harmony messages: the tokens of each (counted once its channel is known).
    harmony: Option<HarmonyCount>,
    markers: think::Markers,
    in_reasoning: bool,
    /// Where the text stood before the next token.
    section: Section,
    counted: usize,
    /// Tokens written while the opening marker was undecided.
    pending: usize,
}

impl ReasoningTokens {
    /// The count for an output read by `format`; `None` when it reads no thinking markers.
    pub fn new(format: &OutputFormat) -> Option<Self> {
        let harmony = format.harmony.then(HarmonyCount::default);
        (format.think || format.harmony).then_some(Self {
            harmony,
            markers: format.think_markers,
            in_reasoning: format.in_reasoning,
            section: match format.in_reasoning {
                true => Section::Reasoning,
                false => Section::Pending,
            },
            counted: 0,
            pending: 0,
        })
    }

    /// One more generated token; `text` is the whole output text after it.
    pub fn push(&mut self, text: &str) {
        if let Some(h) = &mut self.harmony {
            h.push(text);
            return;
        }
        let now = think::section(text, self.in_reasoning, self.markers);
        match self.section {
            Section::Reasoning => self.counted += 1,
            Section::Pending => match now {
                Section::Reasoning | Section::Answer => {
                    self.counted += self.pending + 1;
                    self.pending = 0;
                }
                Section::Pending => self.pending += 1,
                Section::NoReasoning => self.pending = 0,
            },
            Section::Answer | Section::NoReasoning => {}
        }
        self.section = now;
    }

    /// The reasoning tokens so far.
    pub fn count(&self) -> usize {
        match &self.harmony {
            Some(h) => h.count(),
            None => self.counted,
        }
    }
}

/// The harmony count: tokens per message, and which messages are `analysis`.
#[derive(Debug, Clone, Default)]
struct HarmonyCount {
    tokens: Vec<usize>,
    analysis: Vec<Option<bool>>,
}

impl HarmonyCount {
    fn push(&mut self, text: &str) {
        // The message open before this token (the last one of the text before it).
        let open = self.analysis.len().saturating_sub(1);
        if self.tokens.len() <= open {
            self.tokens.resize(open + 1, 0);
        }
        self.tokens[open] += 1;
        self.analysis = harmony::analysis_messages(text);
    }

    fn count(&self) -> usize {
        self.tokens
            .iter()
            .zip(&self.analysis)
            .filter(|(_, a)| **a == Some(true))
            .map(|(t, _)| t)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(markers: think::Markers, in_reasoning: bool, tokens: &[&str]) -> usize {
        let format = OutputFormat {
            think: true,
            think_markers: markers,
            in_reasoning,
            ..OutputFormat::default()
        };
        let mut r = ReasoningTokens::new(&format).unwrap();
        let mut text = String::new();
        for t in tokens {
            text.push_str(t);
            r.push(&text);
        }
        r.count()
    }

    #[test]
    fn tokens_inside_the_markers_count_with_the_markers() {
        use think::Markers::*;
        // Opened by the output, in pieces: `<`, `think`, `>` wait, then count.
        assert_eq!(
            count(
                Think,
                false,
                &["<", "think", ">", "a", "b", "</", "think", ">", "\n\n", "Hi"]
            ),
            8
        );
        // Opened by the prompt: from the first token.
        assert_eq!(count(Think, true, &["a", "b", "</think>", "Hi", "!"]), 3);
        // A marker token that also starts the answer counts as reasoning.
        assert_eq!(count(Think, true, &["a", "</think>Hi", "!"]), 2);
        // No reasoning: what waited for `<think>` is answer.
        assert_eq!(count(Think, false, &["<", "b", "c"]), 0);
        // Unclosed: all of it.
        assert_eq!(count(Think, false, &["<think>", "a", "b"]), 3);
        // Magistral's special tokens.
        assert_eq!(
            count(MistralThink, false, &["[THINK]", "x", "y", "[/THINK]", "z"]),
            4
        );
        assert_eq!(count(MistralThink, false, &["z", "[THINK]"]), 0);
        // Outputs without markers are not counted.
        assert!(ReasoningTokens::new(&OutputFormat::default()).is_none());
    }

    #[test]
    fn harmony_counts_its_analysis_messages() {
        let harmony = OutputFormat {
            harmony: true,
            ..OutputFormat::default()
        };
        let count = |tokens: &[&str]| {
            let mut r = ReasoningTokens::new(&harmony).unwrap();
            let mut text = String::new();
            for t in tokens {
                text.push_str(t);
                r.push(&text);
            }
            r.count()
        };
        let analysis = [
            "<|channel|>",
            "analysis",
            "<|message|>",
            "Hm",
            "m.",
            "<|end|>",
        ];
        let fin = [
            "<|start|>",
            "assistant",
            "<|channel|>",
            "final",
            "<|message|>",
            "Hi",
            "<|return|>",
        ];
        assert_eq!(count(&[&analysis[..], &fin[..]].concat()), 6);
        // Two analysis messages around a call.
        let call = [
            "<|start|>",
            "assistant",
            "<|channel|>",
            "commentary to=functions.f",
            "<|message|>",
            "{}",
            "<|call|>",
        ];
        let again = [
            "<|start|>",
            "assistant",
            "<|channel|>",
            "analysis",
            "<|message|>",
            "ok",
            "<|end|>",
        ];
        assert_eq!(
            count(&[&analysis[..], &call[..], &again[..], &fin[..]].concat()),
            13
        );
        // An unfinished header is not counted yet; a final answer alone is not reasoning.
        assert_eq!(count(&["<|channel|>", "anal"]), 0);
        assert_eq!(count(&fin[2..]), 0);
    }
}
