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
//! channels are not counted (their count stays 0).

use super::think::{self, Section};
use super::OutputFormat;

/// The reasoning-token count of one choice.
#[derive(Debug, Clone)]
pub struct ReasoningTokens {
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
        (format.think && !format.harmony).then_some(Self {
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
        self.counted
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
        // Harmony and outputs without markers are not counted.
        let harmony = OutputFormat {
            harmony: true,
            think: true,
            ..OutputFormat::default()
        };
        assert!(ReasoningTokens::new(&harmony).is_none());
        assert!(ReasoningTokens::new(&OutputFormat::default()).is_none());
    }
}
