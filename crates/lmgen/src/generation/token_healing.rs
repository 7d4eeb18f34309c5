//! Token healing (`token_healing`): HF `GenerationMixin.heal_tokens`
//! (`src/transformers/generation/utils.py` L2832-2915, transformers 5.17) with
//! `ExtensionsTrie.extensions` (`src/transformers/tokenization_python.py` L276-332).
//!
//! `generate()` heals the rows after `_expand_inputs_for_generation` (utils.py L2722, L2729-2730),
//! so before the streamer gets the prompt (L2733) and before `max_length` is computed from the
//! prompt length (L2736-2744); [`super::generate_with`] does the same, resolving the config again
//! for the healed length. For the whole batch:
//! 1. the tokenizer is required (`generate(tokenizer=...)`, [`GenerateOptions::tokenizer`]);
//! 2. each row is decoded with `skip_special_tokens`, stripped of leading and trailing whitespace
//!    (Python's `str.strip`; L2855), and the batch re-tokenized as `tokenizer(prompts,
//!    padding=True)` (L2856-2860): the tokenizer's special tokens added (BOS, ...), padded with
//!    `pad_token` on the tokenizer's `padding_side` (right for most tokenizer classes);
//! 3. every `bos_token_id` becomes `pad_token_id` ("not to condition healing on it", L2863);
//! 4. each row's tail token is decoded (special tokens kept) and, when `" "` converts to an id,
//!    its spaces are replaced by the *first character* of that id's token (L2871-2877).
//!    `convert_tokens_to_ids` answers `unk_token_id` for a string not in the vocabulary, so with
//!    an `unk_token` the replacement is `'<'` of `"<unk>"` (gemma, llama), and without one
//!    (byte-level BPE without unk) spaces stay: the `'Ġ'` the source's comment intends only comes
//!    out of a vocabulary that has `" "` itself as a token. Then, per row: all-pad rows are
//!    skipped; the vocabulary strings "extending" the tail (see [`extensions`]) are converted to
//!    ids; with one distinct id there is nothing to heal; else `sequence_bias` is 10.0 for each
//!    and 11.0 for the tail itself (L2884-2898), and the row minus its tail (a one-token row:
//!    skipped; a row of one real token: its last kept token set to `bos_token_id`, L2909-2911)
//!    runs through a one-token `generate()` whose output replaces the row (L2913).
//!
//! The one-token `generate()` takes the model's own generation config (HF
//! `model.generation_config`, [`GenerateOptions::model_generation_config`]) with
//! `max_new_tokens=1`, the tokenizer's `pad_token_id` and that `sequence_bias` (so it samples
//! where the checkpoint's config says `do_sample`); none of the caller's settings, processors,
//! criteria or streamer, only its seed. Its attention mask is inferred as transformers does
//! without one: `ids != pad` when the pad id is in the row and not an EOS id
//! (`_prepare_attention_mask_for_generation`).
//!
//! transformers behaviours kept (golden `tests/fixtures/token_healing/cases.json`):
//! - the healed rows go on with the attention mask of the *unhealed* input (utils.py only replaces
//!   `input_ids`): a BOS turned pad stays attended, and with right padding (llama3, gpt2) a shorter
//!   row keeps its re-tokenized, right-padded ids under the old left-padded mask; its tail is the
//!   pad token, which has no extension, so it is not healed.
//! - a tokenizer without `pad_token` fails (transformers: "Asking to pad but the tokenizer does not
//!   have a padding token"), and so does one without `bos_token` (transformers 5.17 fails with a
//!   `TypeError` in `torch.where`, L2863; qwen2 and T5 tokenizers have none): both are
//!   [`Error::GenerationConfig`] naming `token_healing` here.
//! - an extension that is not a vocabulary token converts to `unk_token_id`, or without an unk
//!   token to `None`, which transformers' `SequenceBiasLogitsProcessor` rejects: an error here too;
//!   a tail whose own decoded string does not lead back to it (a `KeyError` in transformers) too.
//!
//! Deliberate differences:
//! - when the re-tokenized batch is narrower or wider than the input (stripped whitespace, ...) and
//!   the input is padded, transformers goes on with an attention mask and position ids that no
//!   longer line up with the ids; lmgen refuses. Unpadded, it goes on with the healed width, which
//!   is what transformers computes there (golden `*_trailing_space`).
//! - a model generation config asking for `token_healing` itself does not heal recursively inside
//!   the one-token `generate()`.
//! - lmgen first resolves the config on the unhealed prompt length (to know how many copies to
//!   expand), so an explicit `max_length` that the unhealed prompt already reaches is refused
//!   even where the healed prompt would be shorter.
//! - without [`GenerateOptions::model_generation_config`] (a direct [`super::generate_with`]
//!   call), the one-token step uses the global defaults; [`crate::Pipeline`] passes the
//!   checkpoint's `generation_config.json`, as transformers' `model.generation_config`.
//! - an encoder-decoder model is refused (`generate_seq2seq`): transformers heals the decoder's
//!   start tokens there and, on T5, fails as without `bos_token`. The continuous-batching engine
//!   refuses `token_healing` too.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::generation::{generate_with, GenerateInput, GenerateOptions, GenerationConfig};
use crate::models::CausalLM;
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// Bias of every token extending the tail (`seq_bias` values in `heal_tokens`).
const EXTENSION_BIAS: f64 = 10.0;
/// Added to the tail's own bias: "slightly favor original token to limit aggressive healing".
const ORIGINAL_BONUS: f64 = 1.0;

/// HF `heal_tokens` over the (expanded) rows of `input`; the result keeps `input`'s attention mask
/// when the width did not change (see the module docs).
pub(crate) fn heal_tokens(
    model: &dyn CausalLM,
    input: &GenerateInput,
    options: &GenerateOptions<'_>,
) -> Result<GenerateInput> {
    let tok = options.tokenizer.ok_or_else(|| {
        Error::config(
            "`token_healing` needs the model's tokenizer: pass it as `tokenizer` (transformers: \
             \"you must pass the model's tokenizer to the `tokenizer` argument of `generate`\")",
        )
    })?;
    let pad = tok.pad_token_id().ok_or_else(|| {
        Error::config(
            "`token_healing` re-tokenizes the prompts with padding, which needs the tokenizer's \
             `pad_token` (transformers: \"Asking to pad but the tokenizer does not have a padding \
             token\"); set `pad_token` in tokenizer_config.json",
        )
    })?;
    let bos = tok.bos_token_id().ok_or_else(|| {
        Error::config(
            "`token_healing` needs the tokenizer's `bos_token` (transformers 5.17's `heal_tokens` \
             replaces it with the pad token and fails without one)",
        )
    })?;
    let prompts = input
        .input_ids
        .iter()
        .map(|row| Ok(python_strip(&tok.decode(row, true)?).to_string()))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = tok.encode_padded(&prompts)?;
    for id in rows.iter_mut().flatten() {
        if *id == bos {
            *id = pad;
        }
    }
    let width = rows.first().map_or(0, Vec::len);
    if width == 0 {
        return Err(Error::input(
            "`token_healing` left no prompt tokens: every prompt is empty once decoded without \
             special tokens and stripped of whitespace",
        ));
    }
    let vocab = Vocab::new(tok);
    for row in &mut rows {
        if let Some(healed) = heal_row(model, row, &vocab, bos, pad, options)? {
            *row = healed;
        }
    }
    let attention_mask = match &input.attention_mask {
        _ if width == input.input_ids[0].len() => input.attention_mask.clone(),
        Some(mask) if mask.iter().flatten().any(|&m| m == 0) => {
            return Err(Error::unsupported(format!(
                "`token_healing` re-tokenized the padded prompts to {width} tokens instead of {}: \
                 transformers then goes on with the unhealed attention mask, which no longer \
                 lines up with the ids; strip trailing whitespace from the prompts or send them \
                 one by one",
                input.input_ids[0].len()
            )));
        }
        _ => None,
    };
    Ok(GenerateInput {
        input_ids: rows,
        attention_mask,
    })
}

/// The vocabulary as `heal_tokens` searches and converts it.
struct Vocab<'t> {
    tok: &'t Tokenizer,
    /// `tokenizer.get_vocab()` keys (added tokens included), empty strings left out as
    /// `Trie.add` does.
    tokens: Vec<String>,
    /// `convert_tokens_to_ids(s)` for a string not in the vocabulary.
    unk: Option<TokenId>,
    /// What a space in a tail becomes: the first character of `convert_ids_to_tokens(
    /// convert_tokens_to_ids(" "))`, when that id exists.
    space: Option<char>,
}

impl<'t> Vocab<'t> {
    fn new(tok: &'t Tokenizer) -> Self {
        let tokens = tok
            .inner()
            .get_vocab(true)
            .into_keys()
            .filter(|t| !t.is_empty())
            .collect();
        let unk = tok.unk_token_id();
        let space = tok
            .token_to_id(" ")
            .or(unk)
            .and_then(|id| tok.inner().id_to_token(id))
            .and_then(|t| t.chars().next());
        Self {
            tok,
            tokens,
            unk,
            space,
        }
    }

    /// HF `convert_tokens_to_ids` of one string.
    fn convert(&self, token: &str) -> Option<TokenId> {
        self.tok.token_to_id(token).or(self.unk)
    }
}

/// One row of `heal_tokens`' loop: the healed row, or `None` where it stays as it is.
fn heal_row(
    model: &dyn CausalLM,
    row: &[TokenId],
    vocab: &Vocab<'_>,
    bos: TokenId,
    pad: TokenId,
    options: &GenerateOptions<'_>,
) -> Result<Option<Vec<TokenId>>> {
    let Some(&tail) = row.last() else {
        return Ok(None);
    };
    if row.iter().all(|&id| id == pad) {
        return Ok(None);
    }
    let mut tail_text = vocab.tok.decode(&[tail], false)?;
    if let Some(space) = vocab.space {
        tail_text = tail_text.replace(' ', &space.to_string());
    }
    // A dict keyed by id: distinct ids in first-seen order.
    let mut seen = HashSet::new();
    let ids: Vec<Option<TokenId>> = extensions(&vocab.tokens, &tail_text)
        .iter()
        .map(|alternative| vocab.convert(alternative))
        .filter(|id| seen.insert(*id))
        .collect();
    if ids.len() == 1 {
        return Ok(None);
    }
    if !ids.contains(&Some(tail)) {
        return Err(Error::config(format!(
            "`token_healing`: the tail token {tail} decodes to {tail_text:?}, whose extensions in \
             the vocabulary do not include the token itself (a KeyError in transformers' \
             `heal_tokens`)"
        )));
    }
    let trimmed = &row[..row.len() - 1];
    if trimmed.is_empty() {
        return Ok(None);
    }
    let Some(sequence_bias) = ids
        .iter()
        .map(|id| {
            let bias = EXTENSION_BIAS
                + if *id == Some(tail) {
                    ORIGINAL_BONUS
                } else {
                    0.0
                };
            id.map(|id| (vec![id], bias))
        })
        .collect::<Option<Vec<_>>>()
    else {
        return Err(Error::config(format!(
            "`token_healing`: an extension of the tail {tail_text:?} is not in the vocabulary and \
             the tokenizer has no `unk_token` to convert it to (transformers' \
             `SequenceBiasLogitsProcessor` rejects the `None` id)"
        )));
    };
    let mut trimmed = trimmed.to_vec();
    if row.iter().filter(|&&id| id != pad).count() == 1 {
        // "if the prompt is a single (non-pad) token, regenerate from bos"
        if let Some(last) = trimmed.last_mut() {
            *last = bos;
        }
    }
    let mut config = options.model_generation_config.cloned().unwrap_or_default();
    config.update(&GenerationConfig {
        max_new_tokens: Some(1),
        pad_token_id: Some(pad),
        sequence_bias: Some(sequence_bias),
        ..GenerationConfig::default()
    });
    config.token_healing = None;
    let input = GenerateInput {
        attention_mask: inferred_mask(&trimmed, pad, &config.eos_token_ids()),
        input_ids: vec![trimmed],
    };
    let step = GenerateOptions {
        seed: options.seed,
        ..GenerateOptions::default()
    };
    let mut out = generate_with(model, &input, &config, step)?;
    match (out.sequences.pop(), out.sequences.is_empty()) {
        (Some(healed), true) if healed.len() == row.len() => Ok(Some(healed)),
        _ => Err(Error::config(
            "`token_healing`: the one-token generate() of the model's generation config did not \
             return one row of one new token (`num_return_sequences` > 1 in \
             generation_config.json?)",
        )),
    }
}

/// transformers' `_prepare_attention_mask_for_generation` for one row given without a mask:
/// `ids != pad` when the pad id occurs and is not an EOS id; all ones (`None`) otherwise.
fn inferred_mask(ids: &[TokenId], pad: TokenId, eos: &[TokenId]) -> Option<Vec<Vec<u8>>> {
    (ids.contains(&pad) && !eos.contains(&pad))
        .then(|| vec![ids.iter().map(|&id| u8::from(id != pad)).collect()])
}

/// HF `ExtensionsTrie(vocab).extensions(prefix)`: the trie walk stops at the first character of
/// `prefix` it has no child for, so the node reached is the longest prefix of `prefix` (in
/// characters) that begins some token; every token under that node contributes `prefix` followed
/// by the rest of the token after the node. When all of `prefix` begins tokens these are exactly
/// the tokens starting with it; otherwise they are strings that need not be tokens at all.
fn extensions(tokens: &[String], prefix: &str) -> Vec<String> {
    let depth = tokens
        .iter()
        .map(|t| common_prefix_chars(t, prefix))
        .max()
        .unwrap_or(0);
    let node_len = prefix
        .char_indices()
        .nth(depth)
        .map_or(prefix.len(), |(i, _)| i);
    let node = &prefix[..node_len];
    tokens
        .iter()
        .filter_map(|t| t.strip_prefix(node))
        .map(|rest| format!("{prefix}{rest}"))
        .collect()
}

/// How many leading characters `a` and `b` share.
fn common_prefix_chars(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// Python's `str.strip()`: whitespace as `str.isspace`, which adds the separators U+001C..U+001F to
/// Rust's `char::is_whitespace`.
fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn extensions_follow_the_trie_walk() {
        let v = vocab(&["app", "apple", "application", "b", "ax"]);
        let mut got = extensions(&v, "app");
        got.sort();
        assert_eq!(got, ["app", "apple", "application"]);
        // The walk stops at "appz"'s 'z': the node is "app", so "appz" + the rest of each token.
        let mut got = extensions(&v, "appz");
        got.sort();
        assert_eq!(got, ["appz", "appzle", "appzlication"]);
        // No first character in the trie: the root, every token appended.
        assert_eq!(extensions(&v, "q").len(), v.len());
        assert_eq!(extensions(&vocab(&["b"]), "q"), ["qb"]);
        // Characters, not bytes.
        assert_eq!(extensions(&vocab(&["▁a", "▁ab"]), "▁a").len(), 2);
    }

    #[test]
    fn inferred_mask_needs_a_pad_that_is_not_eos() {
        assert_eq!(
            inferred_mask(&[0, 5, 6], 0, &[1]),
            Some(vec![vec![0, 1, 1]])
        );
        assert_eq!(inferred_mask(&[0, 5, 6], 0, &[0]), None);
        assert_eq!(inferred_mask(&[5, 6], 0, &[1]), None);
    }

    #[test]
    fn strip_is_pythons() {
        assert_eq!(python_strip(" \t a b\n\u{1f}"), "a b");
        assert_eq!(python_strip("\u{3000}x\u{a0}"), "x");
        assert_eq!(python_strip("\u{200b}x"), "\u{200b}x");
    }
}
