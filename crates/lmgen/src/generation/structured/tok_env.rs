//! llguidance's view of a checkpoint's tokenizer: the bytes of every token in a trie
//! (`toktrie::TokTrie`), and our tokenizer to turn forced text back into tokens.

use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// The trie and the tokenizer, shared by every grammar compiled for one model.
pub(super) struct LmgenTokEnv {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl TokenizerEnv for LmgenTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // llguidance asks for the tokens of text in the middle of an output (forced text, the
        // bytes it re-tokenizes at a token boundary): no space may be prepended, so the
        // tokenizer here has SentencePiece's "prepend a space" steps removed. Bytes that are
        // not UTF-8 on their own, or an encoding failure, take the trie's greedy split.
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .encode_fast(text, false)
                .map(|enc| enc.get_ids().to_vec())
                .unwrap_or_else(|_| self.trie.greedy_tokenize(text.as_bytes()))
        })
    }
}

/// Builds the environment for `tokenizer`; `eos` is the token the trie calls end-of-sequence
/// (the others of `eos_token_id` are allowed beside it, see the processor).
pub(super) fn tok_env(tokenizer: &Tokenizer, eos: TokenId) -> Result<TokEnv> {
    let inner = tokenizer.inner();
    let json: serde_json::Value = serde_json::from_str(&inner.to_string(false).map_err(|e| {
        Error::input(format!(
            "structured output: cannot serialise the tokenizer: {e}"
        ))
    })?)
    .map_err(|e| Error::input(format!("structured output: cannot read the tokenizer: {e}")))?;
    // llguidance's reader asserts on some malformed vocabularies instead of returning an error.
    let bytes = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
        .map_err(|_| {
            Error::unsupported(
                "structured output: llguidance cannot read this tokenizer's vocabulary \
                 (a `<0x..>` byte token that is not a byte)",
            )
        })?
        .map_err(|e| {
            Error::unsupported(format!(
                "structured output needs a byte-level or byte-fallback tokenizer: {e}"
            ))
        })?;
    let mut bytes = bytes;
    // The added tokens the model may emit that the vocabulary does not list.
    let vocab_size = inner.get_vocab_size(true).max(bytes.len());
    bytes.resize(vocab_size, Vec::new());
    let info = TokRxInfo::new(vocab_size as u32, eos);
    if eos as usize >= vocab_size {
        return Err(Error::input(format!(
            "structured output: `eos_token_id` {eos} is outside the tokenizer's {vocab_size} tokens"
        )));
    }
    let trie = TokTrie::from(&info, &bytes);
    Ok(Arc::new(LmgenTokEnv {
        trie,
        tokenizer: without_prepended_space(inner.clone()),
    }))
}

/// `tokenizer` without the steps that put a space before the text (SentencePiece's `Prepend`
/// normalizer, `Metaspace` with `prepend_scheme` first or always): text in the middle of an output
/// has no space in front of it.
fn without_prepended_space(mut tokenizer: tokenizers::Tokenizer) -> tokenizers::Tokenizer {
    use tokenizers::normalizers::{NormalizerWrapper, Sequence as Normalizers};
    use tokenizers::pre_tokenizers::metaspace::PrependScheme;
    use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;

    fn normalizer(n: NormalizerWrapper) -> Option<NormalizerWrapper> {
        match n {
            NormalizerWrapper::Prepend(_) => None,
            NormalizerWrapper::Sequence(seq) => {
                let kept: Vec<_> = seq
                    .as_ref()
                    .iter()
                    .filter_map(|n| normalizer(n.clone()))
                    .collect();
                (!kept.is_empty()).then(|| NormalizerWrapper::Sequence(Normalizers::new(kept)))
            }
            other => Some(other),
        }
    }
    fn pre_tokenizer(p: PreTokenizerWrapper) -> PreTokenizerWrapper {
        match p {
            PreTokenizerWrapper::Metaspace(mut m) => {
                m.prepend_scheme = PrependScheme::Never;
                PreTokenizerWrapper::Metaspace(m)
            }
            PreTokenizerWrapper::Sequence(seq) => {
                PreTokenizerWrapper::Sequence(PreTokenizers::new(
                    seq.as_ref()
                        .iter()
                        .map(|p| pre_tokenizer(p.clone()))
                        .collect(),
                ))
            }
            other => other,
        }
    }
    if let Some(n) = tokenizer.get_normalizer().cloned() {
        tokenizer.with_normalizer(normalizer(n));
    }
    if let Some(p) = tokenizer.get_pre_tokenizer().cloned() {
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer(p)));
    }
    tokenizer
}
