//! Streamers (HF `transformers/generation/streamers.py`): `generate()` hands each step's tokens to
//! a [`TokenStreamer`]; [`TextStreamer`] turns them into text chunks as transformers' `TextStreamer`
//! does, for a callback, stdout ([`StdoutStreamer`]) or a channel ([`TextIteratorStreamer`]).
//!
//! As in transformers, `generate()` first calls `put` with the prompt, then `put` with each step's
//! new token, then `end()`; the text streamers handle one sequence (batch size 1).

use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// HF `BaseStreamer`: receives the tokens of one sequence as they are generated.
#[doc(alias = "BaseStreamer")]
pub trait TokenStreamer {
    /// New tokens: the prompt on the first call, then the tokens of each step.
    fn put(&mut self, tokens: &[TokenId]) -> Result<()>;
    /// Generation is over.
    fn end(&mut self) -> Result<()>;
}

impl<T: TokenStreamer + ?Sized> TokenStreamer for &mut T {
    fn put(&mut self, tokens: &[TokenId]) -> Result<()> {
        (**self).put(tokens)
    }
    fn end(&mut self) -> Result<()> {
        (**self).end()
    }
}

impl<T: TokenStreamer + ?Sized> TokenStreamer for Box<T> {
    fn put(&mut self, tokens: &[TokenId]) -> Result<()> {
        (**self).put(tokens)
    }
    fn end(&mut self) -> Result<()> {
        (**self).end()
    }
}

/// How a [`TextStreamer`] decodes (HF `skip_prompt` and the `decode_kwargs` it supports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextStreamerOptions {
    /// Drop the first `put` (the prompt).
    pub skip_prompt: bool,
    /// `decode(..., skip_special_tokens=True)`.
    pub skip_special_tokens: bool,
}

/// Where a [`TextStreamer`] sends finished text (HF `TextStreamer.on_finalized_text`).
///
/// Any `FnMut(&str, bool)` closure is one; `stream_end` is true on the last call, from `end()`.
pub trait TextSink {
    /// Takes the next chunk of text; `stream_end` on the last one.
    fn on_finalized_text(&mut self, text: &str, stream_end: bool) -> Result<()>;
}

impl<F: FnMut(&str, bool)> TextSink for F {
    fn on_finalized_text(&mut self, text: &str, stream_end: bool) -> Result<()> {
        self(text, stream_end);
        Ok(())
    }
}

/// HF `TextStreamer`: decodes the tokens as they come and passes on text once whole words are
/// formed.
///
/// Each `put` decodes the whole token cache, then:
/// - text ending in `"\n"` is passed on entirely, and the cache is reset;
/// - text ending in a CJK ideograph is passed on entirely;
/// - otherwise text up to and including the last space is passed on (the partial word waits).
///
/// `end()` passes on the rest. Positions are counted in characters, as Python does.
///
/// Split multi-byte characters: while some bytes of a character are still to come, the decoded
/// text ends in U+FFFD. `put` never passes such a character on: the text does not end in `"\n"`
/// or a CJK ideograph, and the cut at the last space lies before it. So a chunk holds U+FFFD only
/// where the bytes are invalid for good (a later byte cannot repair them), or at `end()`, where
/// the rest is passed on as decoded. The same rules make `print_len` safe: only text that can no
/// longer change is counted as passed on.
pub struct TextStreamer<S> {
    tokenizer: Arc<Tokenizer>,
    options: TextStreamerOptions,
    sink: S,
    token_cache: Vec<TokenId>,
    /// Characters of the decoded cache already passed on.
    print_len: usize,
    next_tokens_are_prompt: bool,
}

impl<S> std::fmt::Debug for TextStreamer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextStreamer")
            .field("options", &self.options)
            .field("token_cache", &self.token_cache)
            .field("print_len", &self.print_len)
            .finish()
    }
}

impl<F: FnMut(&str, bool)> TextStreamer<F> {
    /// A streamer that calls `on_text(text, stream_end)` with each chunk.
    pub fn new(
        tokenizer: impl Into<Arc<Tokenizer>>,
        options: TextStreamerOptions,
        on_text: F,
    ) -> Self {
        Self::with_sink(tokenizer, options, on_text)
    }
}

impl<S: TextSink> TextStreamer<S> {
    /// A streamer that sends each chunk to `sink`.
    pub fn with_sink(
        tokenizer: impl Into<Arc<Tokenizer>>,
        options: TextStreamerOptions,
        sink: S,
    ) -> Self {
        Self {
            tokenizer: tokenizer.into(),
            options,
            sink,
            token_cache: Vec::new(),
            print_len: 0,
            next_tokens_are_prompt: true,
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, giving up the streamer.
    pub fn into_sink(self) -> S {
        self.sink
    }

    fn decode(&self) -> Result<String> {
        self.tokenizer
            .decode(&self.token_cache, self.options.skip_special_tokens)
    }
}

impl<S: TextSink> TokenStreamer for TextStreamer<S> {
    fn put(&mut self, tokens: &[TokenId]) -> Result<()> {
        if self.options.skip_prompt && self.next_tokens_are_prompt {
            self.next_tokens_are_prompt = false;
            return Ok(());
        }
        self.token_cache.extend_from_slice(tokens);
        let text = self.decode()?;
        let (printable, reset) = finalized_chunk(&text, &mut self.print_len);
        if reset {
            self.token_cache.clear();
        }
        self.sink.on_finalized_text(printable, false)
    }

    fn end(&mut self) -> Result<()> {
        let printable = if self.token_cache.is_empty() {
            String::new()
        } else {
            let text = self.decode()?;
            let start = byte_offset(&text, self.print_len);
            self.token_cache.clear();
            self.print_len = 0;
            python_slice(&text, start, text.len()).to_string()
        };
        self.next_tokens_are_prompt = true;
        self.sink.on_finalized_text(&printable, true)
    }
}

/// One `put` of HF `TextStreamer` on `text`, the decoded token cache: the chunk to pass on, and
/// whether the cache is reset (after a newline). Advances `print_len` (in characters).
fn finalized_chunk<'t>(text: &'t str, print_len: &mut usize) -> (&'t str, bool) {
    let start = byte_offset(text, *print_len);
    if text.ends_with('\n') {
        *print_len = 0;
        return (python_slice(text, start, text.len()), true);
    }
    let end = if text.chars().next_back().is_some_and(is_chinese_char) {
        text.len()
    } else {
        // Python `text.rfind(" ") + 1`: 0 when there is no space.
        text.rfind(' ').map_or(0, |i| i + 1)
    };
    let printable = python_slice(text, start, end);
    *print_len += printable.chars().count();
    (printable, false)
}

/// The byte offset of character `chars` of `text` (its length when past the end).
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

/// `text[start:end]` with Python's leniency: empty when `start >= end`.
fn python_slice(text: &str, start: usize, end: usize) -> &str {
    if start < end {
        &text[start..end]
    } else {
        ""
    }
}

/// HF `TextStreamer._is_chinese_char`: a code point of the CJK Unified Ideographs blocks (not
/// Hangul, Hiragana or Katakana, which are written with spaces).
pub(crate) fn is_chinese_char(c: char) -> bool {
    matches!(u32::from(c),
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// Writes chunks to stdout, and a newline at the end (HF `TextStreamer`'s own `on_finalized_text`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stdout;

impl TextSink for Stdout {
    fn on_finalized_text(&mut self, text: &str, stream_end: bool) -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| match stream_end {
                true => out.write_all(b"\n"),
                false => Ok(()),
            })
            .and_then(|()| out.flush())
            .map_err(|e| Error::Streamer(format!("cannot write to stdout: {e}")))
    }
}

/// HF `TextStreamer` proper: prints the text to stdout as it is generated.
pub type StdoutStreamer = TextStreamer<Stdout>;

impl TextStreamer<Stdout> {
    /// A streamer that prints to stdout.
    pub fn stdout(tokenizer: impl Into<Arc<Tokenizer>>, options: TextStreamerOptions) -> Self {
        Self::with_sink(tokenizer, options, Stdout)
    }
}

/// What goes through the channel of a [`TextIteratorStreamer`].
#[derive(Debug)]
enum Message {
    Text(String),
    End,
}

/// The sending half of a [`TextIteratorStreamer`].
#[derive(Debug, Clone)]
pub struct ChannelSink {
    sender: mpsc::Sender<Message>,
}

impl TextSink for ChannelSink {
    fn on_finalized_text(&mut self, text: &str, stream_end: bool) -> Result<()> {
        let sent =
            self.sender
                .send(Message::Text(text.to_string()))
                .and_then(|()| match stream_end {
                    true => self.sender.send(Message::End),
                    false => Ok(()),
                });
        sent.map_err(|_| {
            Error::Streamer("the receiving `TextIterator` was dropped; generation stops".into())
        })
    }
}

/// HF `TextIteratorStreamer`: chunks go through a channel to a [`TextIterator`], typically
/// read on another thread than the one running `generate()`. A dropped iterator makes the next
/// `put` fail, which stops generation.
pub type TextIteratorStreamer = TextStreamer<ChannelSink>;

impl TextStreamer<ChannelSink> {
    /// The streamer and the iterator that yields its chunks (empty ones included, as
    /// transformers). `timeout` bounds each wait for the next chunk (HF `timeout`).
    pub fn channel(
        tokenizer: impl Into<Arc<Tokenizer>>,
        options: TextStreamerOptions,
        timeout: Option<Duration>,
    ) -> (Self, TextIterator) {
        let (sender, receiver) = mpsc::channel();
        let streamer = Self::with_sink(tokenizer, options, ChannelSink { sender });
        let iter = TextIterator {
            receiver,
            timeout,
            timed_out: false,
        };
        (streamer, iter)
    }
}

/// The receiving half of a [`TextIteratorStreamer`]: an iterator of text chunks.
///
/// It ends at `end()`, when the streamer is dropped without one (generation failed), or when a
/// chunk takes longer than the timeout (then [`TextIterator::timed_out`] is true; transformers
/// raises `queue.Empty` there). After the end of one generation it goes on with the next one
/// that reuses the streamer.
#[derive(Debug)]
pub struct TextIterator {
    receiver: mpsc::Receiver<Message>,
    timeout: Option<Duration>,
    timed_out: bool,
}

impl TextIterator {
    /// Whether iteration stopped because the timeout passed.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }
}

impl Iterator for TextIterator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let message = match self.timeout {
            None => self.receiver.recv().ok(),
            Some(t) => match self.receiver.recv_timeout(t) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.timed_out = true;
                    None
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        match message? {
            Message::Text(text) => Some(text),
            Message::End => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks from the successive decodes of the cache (one more token each).
    fn chunks_of(texts: &[&str]) -> Vec<String> {
        let mut print_len = 0;
        texts
            .iter()
            .map(|t| finalized_chunk(t, &mut print_len).0.to_string())
            .collect()
    }

    #[test]
    fn cjk_is_flushed_at_once() {
        assert!(is_chinese_char('你'));
        assert!(!is_chinese_char('한'));
        assert!(!is_chinese_char('a'));
        assert_eq!(chunks_of(&["你", "你好", "你好 wor"]), ["你", "好", " "]);
    }

    #[test]
    fn words_wait_for_a_space() {
        assert_eq!(
            chunks_of(&["Hel", "Hello", "Hello wor", "Hello world "]),
            ["", "", "Hello ", "world "]
        );
    }

    #[test]
    fn newline_flushes_and_resets() {
        let mut print_len = 0;
        assert_eq!(finalized_chunk("ab cd", &mut print_len), ("ab ", false));
        assert_eq!(finalized_chunk("ab cd\n", &mut print_len), ("cd\n", true));
        assert_eq!(print_len, 0);
    }

    #[test]
    fn replacement_chars_wait() {
        // A CJK character arriving byte by byte: "�" then "��" then "你".
        assert_eq!(chunks_of(&["a �", "a ��", "a 你"]), ["a ", "", "你"]);
    }

    fn tokenizer(model: &str) -> Arc<Tokenizer> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden/models")
            .join(model);
        match Tokenizer::from_dir(&dir) {
            Ok(t) => Arc::new(t),
            Err(e) => panic!("{e}"),
        }
    }

    fn id(tok: &Tokenizer, token: &str) -> TokenId {
        match tok.token_to_id(token) {
            Some(id) => id,
            None => panic!("{token:?} is not in the vocabulary"),
        }
    }

    /// Streams `prompt`, then `ids` one at a time, then `end()`: the chunks, ends marked.
    fn stream(tok: Arc<Tokenizer>, prompt: &[TokenId], ids: &[TokenId]) -> Vec<(String, bool)> {
        let mut chunks = Vec::new();
        let options = TextStreamerOptions {
            skip_prompt: true,
            skip_special_tokens: true,
        };
        let mut s = TextStreamer::new(tok, options, |t: &str, end| {
            chunks.push((t.to_string(), end))
        });
        let ok = s.put(prompt).and_then(|()| {
            ids.iter().try_for_each(|&i| s.put(&[i]))?;
            s.end()
        });
        assert!(ok.is_ok(), "{ok:?}");
        chunks
    }

    fn texts(chunks: &[(String, bool)]) -> Vec<&str> {
        chunks.iter().map(|(t, _)| t.as_str()).collect()
    }

    #[test]
    fn multi_byte_characters_split_across_byte_fallback_tokens() {
        let tok = tokenizer("llama");
        // "你好" and "한 " as `<0xXX>` tokens, one byte per step.
        let bytes = "你好한 ".bytes();
        let ids: Vec<TokenId> = bytes.map(|b| id(&tok, &format!("<0x{b:02X}>"))).collect();
        let chunks = stream(tok, &[1], &ids);
        assert_eq!(
            texts(&chunks),
            ["", "", "你", "", "", "好", "", "", "", "한 ", ""]
        );
        assert!(chunks
            .iter()
            .all(|(t, _)| !t.contains(char::REPLACEMENT_CHARACTER)));
        assert_eq!(chunks.last(), Some(&(String::new(), true)));
    }

    #[test]
    fn multi_byte_characters_split_across_byte_level_tokens() {
        let tok = tokenizer("gpt2");
        // GPT-2's byte-level alphabet: "ä" (0xC3 0xA4) is "Ã" + "¤"; "Ġ" is the space.
        let ids: Vec<TokenId> = ["Ã", "¤", "Ġ", "a", "Ã"]
            .iter()
            .map(|t| id(&tok, t))
            .collect();
        let chunks = stream(tok, &[], &ids);
        // The incomplete last character comes out only at `end()`, as transformers does.
        assert_eq!(texts(&chunks), ["", "", "ä ", "", "", "a�"]);
    }

    #[test]
    fn newline_and_prompt() {
        let tok = tokenizer("gpt2");
        let ids: Vec<TokenId> = ["a", "Ġb", "Ċ", "c"].iter().map(|t| id(&tok, t)).collect();
        let prompt = [id(&tok, "x")];
        let chunks = stream(tok.clone(), &prompt, &ids);
        assert_eq!(texts(&chunks), ["", "a ", "b\n", "", "c"]);
        // Without skip_prompt the prompt is text too.
        let mut got = String::new();
        let mut s = TextStreamer::new(tok, TextStreamerOptions::default(), |t: &str, _| {
            got.push_str(t)
        });
        assert!(s
            .put(&prompt)
            .and_then(|()| s.put(&ids))
            .and_then(|()| s.end())
            .is_ok());
        assert_eq!(got, "xa b\nc");
    }

    #[test]
    fn channel_iterator() {
        let tok = tokenizer("gpt2");
        let ids: Vec<TokenId> = ["a", "Ġb", "Ġc"].iter().map(|t| id(&tok, t)).collect();
        let (mut s, iter) = TextStreamer::channel(tok, TextStreamerOptions::default(), None);
        let producer = std::thread::spawn(move || {
            s.put(&ids[..1])?;
            s.put(&ids[1..])?;
            s.end()
        });
        let chunks: Vec<String> = iter.collect();
        assert!(matches!(producer.join(), Ok(Ok(()))));
        assert_eq!(chunks, ["", "a b ", "c"]);

        let tok = tokenizer("gpt2");
        let (mut s, mut iter) = TextStreamer::channel(
            tok,
            TextStreamerOptions::default(),
            Some(Duration::from_millis(5)),
        );
        assert_eq!(iter.next(), None);
        assert!(iter.timed_out());
        drop(iter);
        assert!(matches!(s.put(&[1]), Err(Error::Streamer(_))));
    }
}
