//! Marian's tokenizer (transformers `MarianTokenizer`, `models/marian/tokenization_marian.py`):
//! Helsinki-NLP/opus-mt-* checkpoints ship `source.spm`, `target.spm` (sentencepiece models) and
//! `vocab.json` (plus `target_vocab.json` with `separate_vocabs`), and no tokenizer.json.
//!
//! As transformers 5.17 does:
//! - encoding (input mode) splits the text on the added tokens (`</s>`, `<unk>`, `<pad>`, ...:
//!   `tokens_trie.split`, honouring `lstrip` / `rstrip`), keeps a leading language code
//!   `>>xx<<` of each piece whole (`remove_language_code`), runs the **source** .spm on the rest,
//!   maps every piece through `vocab.json` (a piece not in it is `<unk>`) and appends `</s>`;
//! - decoding maps ids through the added tokens, then the vocabulary (`target_vocab.json` with
//!   `separate_vocabs`, else `vocab.json`), then the .spm's own pieces (an id past those is an
//!   error, as sentencepiece's `IdToPiece` raises); `skip_special_tokens` drops the special ids;
//!   runs of ordinary tokens go through `decode_pieces` of the **source** .spm (the **target**
//!   one with `separate_vocabs`: `_decode` defaults `use_source_tokenizer` to
//!   `not separate_vocabs`), each special token is written as itself plus a space, `▁` becomes a
//!   space and the ends are stripped (Python's `str.strip`).
//!
//! Not done: target mode (`text_target`, labels), which generation does not use; the Moses
//! punctuation normalizer, which transformers sets up but never calls when tokenizing.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};

use crate::error::{Error, Result};
use crate::tokenizer::sentencepiece::SentencePieceModel;

/// An added token of `tokenizer_config.json` (`added_tokens_decoder`) or a named special token.
#[derive(Debug, Clone)]
struct Added {
    content: String,
    id: u32,
    lstrip: bool,
    rstrip: bool,
}

/// `MarianTokenizer`'s state: the two sentencepiece models and the vocabularies.
#[doc(alias = "MarianTokenizer")]
#[derive(Debug)]
pub(crate) struct MarianText {
    source: SentencePieceModel,
    target: SentencePieceModel,
    /// `vocab.json` (`self.encoder`).
    encoder: HashMap<String, u32>,
    /// The decoding vocabulary inverted (`self.decoder`).
    decoder: HashMap<u32, String>,
    separate_vocabs: bool,
    added: Vec<Added>,
    unk_id: u32,
    eos_id: u32,
    /// `all_special_tokens` and their ids.
    special_tokens: Vec<String>,
    special_ids: HashSet<u32>,
}

/// The files `MarianTokenizer` reads (`VOCAB_FILES_NAMES`).
const SOURCE_SPM: &str = "source.spm";
const TARGET_SPM: &str = "target.spm";
const VOCAB: &str = "vocab.json";
const TARGET_VOCAB: &str = "target_vocab.json";

/// Whether `dir` (with no tokenizer.json) holds a Marian tokenizer: `tokenizer_class` says so, or
/// `source.spm` and `vocab.json` are there.
pub(crate) fn is_marian_dir(dir: &Path, cfg: &Value) -> bool {
    cfg.get("tokenizer_class").and_then(Value::as_str) == Some("MarianTokenizer")
        || (dir.join(SOURCE_SPM).is_file() && dir.join(VOCAB).is_file())
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus U+001C..U+001F).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A vocabulary file: token -> id, in file order.
fn read_vocab(path: &Path) -> Result<Vec<(String, u32)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |message: String| Error::Json {
        path: path.to_path_buf(),
        message,
    };
    let map: serde_json::Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    map.into_iter()
        .map(|(token, id)| {
            let id = id
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "the id of {token:?} must be an integer in [0, 2^32), got {id}"
                    ))
                })?;
            Ok((token, id))
        })
        .collect()
}

impl MarianText {
    /// Loads the files of `dir`; `cfg` is `tokenizer_config.json` with the special tokens filled
    /// in, `special_tokens` are `all_special_tokens`.
    pub(crate) fn from_dir(dir: &Path, cfg: &Value, special_tokens: Vec<String>) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg_error = |message: String| Error::Json {
            path: cfg_path.clone(),
            message,
        };
        let separate_vocabs = match cfg.get("separate_vocabs") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(cfg_error(format!(
                    "`separate_vocabs` must be true or false, got {other}"
                )))
            }
        };
        if cfg
            .pointer("/sp_model_kwargs/enable_sampling")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Err(cfg_error(
                "`sp_model_kwargs.enable_sampling` is true: lmgen does not sample segmentations"
                    .into(),
            ));
        }
        let file = |name: &str| {
            let path = dir.join(name);
            match path.is_file() {
                true => Ok(path),
                false => Err(Error::Tokenizer(format!(
                    "`{}` not found: a Marian tokenizer (no tokenizer.json) needs {SOURCE_SPM}, \
                     {TARGET_SPM} and {VOCAB}{}",
                    path.display(),
                    if separate_vocabs {
                        format!(" and, with `separate_vocabs`, {TARGET_VOCAB}")
                    } else {
                        String::new()
                    }
                ))),
            }
        };
        let source = SentencePieceModel::from_file(&file(SOURCE_SPM)?)?;
        let target = SentencePieceModel::from_file(&file(TARGET_SPM)?)?;
        let vocab = read_vocab(&file(VOCAB)?)?;
        let decoding = match separate_vocabs {
            true => read_vocab(&file(TARGET_VOCAB)?)?,
            false => vocab.clone(),
        };
        let decoder: HashMap<u32, String> = decoding.into_iter().map(|(t, id)| (id, t)).collect();
        let encoder: HashMap<String, u32> = vocab.into_iter().collect();
        let mut added = Vec::new();
        if let Some(table) = cfg.get("added_tokens_decoder") {
            let table = table.as_object().ok_or_else(|| {
                cfg_error("`added_tokens_decoder` must be an object of id -> token".into())
            })?;
            for (id, token) in table {
                let at = |field: &str| format!("`added_tokens_decoder.{id}.{field}`");
                let id: u32 = id.parse().map_err(|_| {
                    cfg_error(format!("`added_tokens_decoder`: {id:?} is not an id"))
                })?;
                let content = token
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| cfg_error(format!("{} must be a string", at("content"))))?;
                let flag = |field: &str| match token.get(field) {
                    None | Some(Value::Null) => Ok(false),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(other) => Err(cfg_error(format!(
                        "{} must be true or false, got {other}",
                        at(field)
                    ))),
                };
                if flag("single_word")? {
                    return Err(cfg_error(format!(
                        "{} is true, which lmgen's Marian tokenizer does not implement",
                        at("single_word")
                    )));
                }
                added.push(Added {
                    content: content.to_string(),
                    id,
                    lstrip: flag("lstrip")?,
                    rstrip: flag("rstrip")?,
                });
            }
        }
        let unk = cfg
            .get("unk_token")
            .and_then(Value::as_str)
            .unwrap_or("<unk>");
        let unk_id = *encoder.get(unk).ok_or_else(|| {
            Error::Tokenizer(format!(
                "`{}`: the unknown token {unk:?} is not in the vocabulary",
                dir.join(VOCAB).display()
            ))
        })?;
        let mut this = Self {
            source,
            target,
            encoder,
            decoder,
            separate_vocabs,
            added,
            unk_id,
            eos_id: 0,
            special_tokens: Vec::new(),
            special_ids: HashSet::new(),
        };
        // The special tokens not yet among the added ones are added with their vocabulary ids
        // (transformers adds them at init).
        for token in &special_tokens {
            if !this.added.iter().any(|a| &a.content == token) {
                let id = this.token_id(token);
                this.added.push(Added {
                    content: token.clone(),
                    id,
                    lstrip: false,
                    rstrip: false,
                });
            }
        }
        let eos = cfg
            .get("eos_token")
            .and_then(Value::as_str)
            .unwrap_or("</s>");
        this.eos_id = this.token_id(eos);
        this.special_ids = special_tokens.iter().map(|t| this.token_id(t)).collect();
        this.special_tokens = special_tokens;
        Ok(this)
    }

    /// `_convert_token_to_id_with_added_voc` in input mode: the added tokens, then `vocab.json`,
    /// else `<unk>`.
    fn token_id(&self, token: &str) -> u32 {
        self.added
            .iter()
            .find(|a| a.content == token)
            .map(|a| a.id)
            .or_else(|| self.encoder.get(token).copied())
            .unwrap_or(self.unk_id)
    }

    /// The `tokenizers` backend that stands for this tokenizer where lmgen consults one directly
    /// (token strings and ids): `vocab.json` and the added tokens as a word-level vocabulary,
    /// with a Metaspace decoder.
    pub(crate) fn backend(&self) -> Result<tokenizers::Tokenizer> {
        let mut vocab = self.encoder.clone();
        for a in &self.added {
            vocab.insert(a.content.clone(), a.id);
        }
        let unk = self
            .decoder
            .get(&self.unk_id)
            .cloned()
            .unwrap_or_else(|| "<unk>".to_string());
        let model = WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token(unk)
            .build()
            .map_err(|e| Error::Tokenizer(format!("Marian vocabulary: {e}")))?;
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_decoder(Some(Metaspace::new(
            '\u{2581}',
            PrependScheme::Always,
            true,
        )));
        Ok(tok)
    }

    /// `tokenizer(text).input_ids` (input mode): see the module docs.
    pub(crate) fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for chunk in self.split_on_added(text) {
            match chunk {
                Chunk::Added(id) => ids.push(id),
                Chunk::Text("") => {}
                Chunk::Text(t) => {
                    let (code, rest) = remove_language_code(t);
                    if let Some(code) = code {
                        ids.push(self.token_id(code));
                    }
                    for piece in self.source.encode(rest)? {
                        ids.push(self.token_id(&piece));
                    }
                }
            }
        }
        if add_special_tokens {
            ids.push(self.eos_id);
        }
        Ok(ids)
    }

    /// `tokens_trie.split` plus the `lstrip` / `rstrip` of the added tokens found.
    fn split_on_added<'a>(&'a self, text: &'a str) -> Vec<Chunk<'a>> {
        let mut chunks: Vec<Chunk<'a>> = Vec::new();
        let mut strip_next = false;
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            let hit = self
                .added
                .iter()
                .filter(|a| !a.content.is_empty() && text[i..].starts_with(a.content.as_str()))
                .max_by_key(|a| a.content.len());
            let Some(a) = hit else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
                continue;
            };
            let mut before = &text[start..i];
            if strip_next {
                before = before.trim_start_matches(is_py_space);
            }
            if a.lstrip {
                before = before.trim_end_matches(is_py_space);
            }
            chunks.push(Chunk::Text(before));
            chunks.push(Chunk::Added(a.id));
            strip_next = a.rstrip;
            i += a.content.len();
            start = i;
        }
        let mut rest = &text[start..];
        if strip_next {
            rest = rest.trim_start_matches(is_py_space);
        }
        chunks.push(Chunk::Text(rest));
        chunks
    }

    /// `decode(ids, skip_special_tokens)` without clean-up: see the module docs.
    pub(crate) fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let spm = match self.separate_vocabs {
            true => &self.target,
            false => &self.source,
        };
        let mut tokens: Vec<&str> = Vec::with_capacity(ids.len());
        for &id in ids {
            if skip_special_tokens && self.special_ids.contains(&id) {
                continue;
            }
            let token = match self.added.iter().find(|a| a.id == id) {
                Some(a) => a.content.as_str(),
                None => match self.decoder.get(&id) {
                    Some(t) => t.as_str(),
                    None => spm.id_to_piece(id).ok_or_else(|| {
                        Error::Tokenizer(format!(
                            "cannot decode id {id}: it is in neither the vocabulary ({} tokens) \
                             nor the sentencepiece model ({} pieces)",
                            self.decoder.len(),
                            spm.len()
                        ))
                    })?,
                },
            };
            tokens.push(token);
        }
        let mut out = String::new();
        let mut run: Vec<&str> = Vec::new();
        for token in tokens {
            if self.special_tokens.iter().any(|s| s == token) {
                out.push_str(&spm.decode_pieces(&run));
                out.push_str(token);
                out.push(' ');
                run.clear();
            } else {
                run.push(token);
            }
        }
        out.push_str(&spm.decode_pieces(&run));
        let out = out.replace('\u{2581}', " ");
        Ok(out.trim_matches(is_py_space).to_string())
    }
}

/// A piece of the text between added tokens, or an added token's id.
enum Chunk<'a> {
    Text(&'a str),
    Added(u32),
}

/// `remove_language_code`: a leading `>>xx<<` (up to the first `<<`) and the rest.
fn remove_language_code(text: &str) -> (Option<&str>, &str) {
    if text.starts_with(">>") {
        if let Some(end) = text.find("<<") {
            return (Some(&text[..end + 2]), &text[end + 2..]);
        }
    }
    (None, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes_are_cut_off_the_front_only() {
        assert_eq!(remove_language_code(">>de<< hi"), (Some(">>de<<"), " hi"));
        assert_eq!(remove_language_code(">><<x"), (Some(">><<"), "x"));
        assert_eq!(remove_language_code("hi >>de<<"), (None, "hi >>de<<"));
        assert_eq!(remove_language_code(">>de"), (None, ">>de"));
    }

    #[test]
    fn python_whitespace_includes_the_separators() {
        assert!(is_py_space('\u{1f}') && is_py_space('\u{3000}') && is_py_space('\u{85}'));
        assert!(!is_py_space('\u{200b}') && !is_py_space('a'));
    }
}
