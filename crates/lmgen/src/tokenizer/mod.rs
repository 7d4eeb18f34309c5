//! The tokenizer: HF `tokenizers` from `tokenizer.json`, special tokens and flags from
//! `tokenizer_config.json`, the chat template (see [`crate::chat_template`]).
//!
//! transformers 5 (`TokenizersBackend`, `tokenization_utils_tokenizers.py`) loads `tokenizer.json`
//! and then applies `tokenizer_config.json` on top; lmgen does the same:
//! - special tokens are the `special: true` added tokens of `tokenizer.json` *and* every token that
//!   `tokenizer_config.json` names as special (`bos_token`, `eos_token`, `unk_token`, `sep_token`,
//!   `pad_token`, `cls_token`, `mask_token`, `additional_special_tokens`, `extra_special_tokens`).
//!   `decode(skip_special_tokens=True)` skips the named ones and the `special: true` added tokens;
//!   an `extra_special_tokens` entry that `tokenizer.json` marks `special: false` (llama's
//!   `<|system|>`) is kept, as transformers 5.17 does (golden streaming.json pins it).
//! - `add_bos_token` / `add_eos_token`, where set, rebuild the post-processor (`update_post_processor`).
//! - `add_prefix_space`, where set, updates a `ByteLevel` or `Metaspace` pre-tokenizer.
//! - `clean_up_tokenization_spaces` (default false in transformers 5) applies on decode.
//!
//! [`IncrementalText`] decodes generated tokens a piece at a time, each piece final.
//!
//! `legacy` only changes how transformers converts a sentencepiece model into `tokenizer.json`;
//! with `tokenizer.json` present that conversion is already in the file.
//!
//! A folder without `tokenizer.json` that holds a Marian tokenizer (`source.spm` + `vocab.json`,
//! or `tokenizer_class: MarianTokenizer`) loads as transformers' slow `MarianTokenizer`
//! ([`marian`]): encoding and decoding run its sentencepiece models, and [`Tokenizer::inner`] is
//! a word-level stand-in over `vocab.json` for lookups of token strings and ids.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokenizers::pre_tokenizers::metaspace::PrependScheme;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

use crate::chat_template::ChatTemplate;
use crate::error::{Error, Result};

mod incremental;
mod marian;
mod padding;
pub mod sentencepiece;
pub use incremental::{is_byte_token, Detokenizer, IncrementalText};
pub use padding::PaddingSide;

/// A checkpoint's tokenizer (HF `PreTrainedTokenizerFast` / `TokenizersBackend`).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `bos_token`, `eos_token`, ... of `tokenizer_config.json` (a string or an `AddedToken` object).
    pub(crate) bos_token: Option<String>,
    pub(crate) eos_token: Option<String>,
    pub(crate) pad_token: Option<String>,
    pub(crate) unk_token: Option<String>,
    pub(crate) sep_token: Option<String>,
    pub(crate) cls_token: Option<String>,
    pub(crate) mask_token: Option<String>,
    /// `additional_special_tokens` and `extra_special_tokens` (list, or the values of a map).
    pub(crate) extra_special_tokens: Vec<String>,
    /// `clean_up_tokenization_spaces` (transformers' default for a missing key: false in v5).
    pub(crate) clean_up_tokenization_spaces: bool,
    /// `padding_side` (see [`PaddingSide`] for where it comes from).
    padding_side: PaddingSide,
    chat_template: Option<ChatTemplate>,
    /// Marian's sentencepiece text path, which encodes and decodes in place of `inner`.
    marian: Option<Arc<marian::MarianText>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("pad_token", &self.pad_token)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// A special token in `tokenizer_config.json`: a string, or an `AddedToken` object with `content`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// A list of tokens, or (transformers 5 `extra_special_tokens`) a map of named tokens.
fn token_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|t| token_string(Some(t))).collect(),
        Some(Value::Object(named)) => named
            .values()
            .filter_map(|t| token_string(Some(t)))
            .collect(),
        _ => Vec::new(),
    }
}

/// `tokenizer_config.json` of `dir` (an empty object when absent) and its path.
fn read_config(dir: &Path) -> Result<(std::path::PathBuf, Value)> {
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg: Value = if cfg_path.is_file() {
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path: cfg_path.clone(),
            message: e.to_string(),
        })?
    } else {
        Value::Object(Map::new())
    };
    if !cfg.is_object() {
        return Err(Error::Json {
            path: cfg_path,
            message: "expected a JSON object".into(),
        });
    }
    Ok((cfg_path, cfg))
}

/// A boolean flag of `tokenizer_config.json`; `null` or absent is `None`.
fn flag(cfg: &Value, key: &str, path: &Path) -> Result<Option<bool>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::Json {
            path: path.to_path_buf(),
            message: format!("`{key}` must be true, false or null, got {other}"),
        }),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (required) and `tokenizer_config.json`, `chat_template.jinja`
    /// (optional), as transformers' `AutoTokenizer.from_pretrained`.
    ///
    /// Without `tokenizer.json`, a Marian tokenizer (`source.spm`, `target.spm`, `vocab.json`)
    /// loads as `MarianTokenizer` does (see the module docs).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let (cfg_path, mut cfg) = read_config(dir)?;
        if !path.is_file() {
            if marian::is_marian_dir(dir, &cfg) {
                // MarianTokenizer's defaults for what the config leaves out.
                for (key, token) in [
                    ("unk_token", "<unk>"),
                    ("eos_token", "</s>"),
                    ("pad_token", "<pad>"),
                ] {
                    if cfg.get(key).is_none_or(Value::is_null) {
                        cfg[key] = Value::String(token.into());
                    }
                }
                let mut tok = Self::with_config(
                    tokenizers::Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default()),
                    &cfg,
                    &cfg_path,
                )?;
                let mut specials = tok.named_special_tokens();
                for t in &tok.extra_special_tokens {
                    if !specials.contains(t) {
                        specials.push(t.clone());
                    }
                }
                let text = marian::MarianText::from_dir(dir, &cfg, specials)?;
                tok.inner = text.backend()?;
                tok.marian = Some(Arc::new(text));
                tok.padding_side = PaddingSide::resolve(&cfg, &tok.inner)?;
                tok.mark_special_tokens();
                tok.chat_template = ChatTemplate::from_dir(dir, &cfg)?;
                return Ok(tok);
            }
            return Err(Error::Tokenizer(format!(
                "`{}` not found: lmgen needs the fast tokenizer file (tokenizer.json), or a \
                 Marian tokenizer's source.spm, target.spm and vocab.json",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        // What tokenizers panics on instead of answering an error (found by the
        // `tokenizer_json` fuzz target): malformed JSON inside `decoder`, and a
        // TemplateProcessing whose template names a special token it does not define.
        let cannot_load =
            |e: String| Error::Tokenizer(format!("cannot load `{}`: {e}", path.display()));
        let outline: Outline =
            serde_json::from_str(&text).map_err(|e| cannot_load(e.to_string()))?;
        if let Some(processor) = &outline.post_processor {
            check_templates(processor)
                .map_err(|e| cannot_load(format!("`post_processor`: {e}")))?;
        }
        let inner = text
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| cannot_load(e.to_string()))?;
        let mut tok = Self::with_config(inner, &cfg, &cfg_path)?;
        tok.mark_special_tokens();
        if let Some(add_prefix_space) = flag(&cfg, "add_prefix_space", &cfg_path)? {
            tok.set_add_prefix_space(add_prefix_space);
        }
        let add_bos = flag(&cfg, "add_bos_token", &cfg_path)?;
        let add_eos = flag(&cfg, "add_eos_token", &cfg_path)?;
        if add_bos.is_some() || add_eos.is_some() {
            tok.update_post_processor(add_bos, add_eos)?;
        }
        tok.chat_template = ChatTemplate::from_dir(dir, &cfg)?;
        Ok(tok)
    }

    /// The tokenizer of backend `inner` with the special tokens and flags of
    /// `tokenizer_config.json` (`cfg`, read from `cfg_path`).
    fn with_config(inner: tokenizers::Tokenizer, cfg: &Value, cfg_path: &Path) -> Result<Self> {
        let mut extra_special_tokens = token_list(cfg.get("additional_special_tokens"));
        extra_special_tokens.extend(token_list(cfg.get("extra_special_tokens")));
        let padding_side = PaddingSide::resolve(cfg, &inner)?;
        Ok(Self {
            inner,
            bos_token: token_string(cfg.get("bos_token")),
            eos_token: token_string(cfg.get("eos_token")),
            pad_token: token_string(cfg.get("pad_token")),
            unk_token: token_string(cfg.get("unk_token")),
            sep_token: token_string(cfg.get("sep_token")),
            cls_token: token_string(cfg.get("cls_token")),
            mask_token: token_string(cfg.get("mask_token")),
            extra_special_tokens,
            clean_up_tokenization_spaces: flag(cfg, "clean_up_tokenization_spaces", cfg_path)?
                .unwrap_or(false),
            padding_side,
            chat_template: None,
            marian: None,
        })
    }

    /// The named special tokens (`bos_token`, `eos_token`, ...), deduplicated.
    fn named_special_tokens(&self) -> Vec<String> {
        let named = [
            &self.bos_token,
            &self.eos_token,
            &self.unk_token,
            &self.sep_token,
            &self.pad_token,
            &self.cls_token,
            &self.mask_token,
        ];
        let mut all: Vec<String> = Vec::new();
        for t in named.into_iter().flatten() {
            if !all.contains(t) {
                all.push(t.clone());
            }
        }
        all
    }

    /// Marks the named special tokens (`bos_token`, `eos_token`, ...) as special in the backend, so
    /// that decoding with `skip_special_tokens` drops them; a token missing from the vocabulary is
    /// added, as transformers does. The flags of an already added token (`lstrip`, `normalized`,
    /// ...) are kept. `extra_special_tokens` are left as `tokenizer.json` has them: transformers
    /// 5.17 keeps an extra token marked `special: false` there when decoding with
    /// `skip_special_tokens` (golden streaming.json: llama's `<|system|>`).
    fn mark_special_tokens(&mut self) {
        let added = self.inner.get_added_tokens_decoder();
        let tokens: Vec<AddedToken> = self
            .named_special_tokens()
            .into_iter()
            .map(|content| {
                let existing = self
                    .inner
                    .token_to_id(&content)
                    .and_then(|id| added.get(&id))
                    .filter(|t| t.content == content);
                match existing {
                    Some(t) => t.clone().special(true),
                    None => AddedToken::from(content, true),
                }
            })
            .collect();
        self.inner.add_special_tokens(&tokens);
    }

    /// `add_prefix_space` of a `ByteLevel` pre-tokenizer, or the prepend scheme of a `Metaspace`
    /// one (`never` for false; `first` for true where it was `never`).
    fn set_add_prefix_space(&mut self, add_prefix_space: bool) {
        fn update(pt: &mut PreTokenizerWrapper, yes: bool) {
            match pt {
                PreTokenizerWrapper::ByteLevel(b) => b.add_prefix_space = yes,
                PreTokenizerWrapper::Metaspace(m) => match (yes, m.get_prepend_scheme()) {
                    (false, _) => m.set_prepend_scheme(PrependScheme::Never),
                    (true, PrependScheme::Never) => m.set_prepend_scheme(PrependScheme::First),
                    (true, _) => {}
                },
                PreTokenizerWrapper::Sequence(seq) => {
                    for p in seq.as_mut() {
                        update(p, yes);
                    }
                }
                _ => {}
            }
        }
        if let Some(mut pt) = self.inner.get_pre_tokenizer().cloned() {
            update(&mut pt, add_prefix_space);
            self.inner.with_pre_tokenizer(Some(pt));
        }
    }

    /// transformers' `update_post_processor`: `bos $A eos` / `bos $A eos bos $B eos` with each of
    /// BOS and EOS where its flag is true. A flag that is not set keeps what the tokenizer did.
    fn update_post_processor(
        &mut self,
        add_bos: Option<bool>,
        add_eos: Option<bool>,
    ) -> Result<()> {
        let adds = self
            .inner
            .encode("", true)
            .map_err(|e| Error::Tokenizer(format!("cannot encode \"\": {e}")))?
            .get_ids()
            .to_vec();
        let bos = self.bos_token.clone().zip(self.bos_token_id());
        let eos = self.eos_token.clone().zip(self.eos_token_id());
        let add_bos =
            add_bos.unwrap_or(bos.is_some() && adds.first() == bos.as_ref().map(|t| &t.1));
        let add_eos = add_eos.unwrap_or(eos.is_some() && adds.last() == eos.as_ref().map(|t| &t.1));
        let wanted = |token: &Option<(String, u32)>, add: bool, name: &str| match (add, token) {
            (false, _) => Ok(None),
            (true, Some(t)) => Ok(Some(t.clone())),
            (true, None) => Err(Error::Tokenizer(format!(
                "`add_{name}_token` is true but `{name}_token` is not set or not in the vocabulary"
            ))),
        };
        let bos = wanted(&bos, add_bos, "bos")?;
        let eos = wanted(&eos, add_eos, "eos")?;
        let sequence = |seq: &str, type_id: u32| -> String {
            let parts = [
                bos.as_ref().map(|t| t.0.as_str()),
                Some(seq),
                eos.as_ref().map(|t| t.0.as_str()),
            ];
            let parts: Vec<String> = parts
                .into_iter()
                .flatten()
                .map(|p| format!("{p}:{type_id}"))
                .collect();
            parts.join(" ")
        };
        let single = sequence("$A", 0);
        let pair = format!("{single} {}", sequence("$B", 1));
        let specials: Vec<(String, u32)> = bos.iter().chain(eos.iter()).cloned().collect();
        let template = TemplateProcessing::builder()
            .try_single(single)
            .and_then(|b| b.try_pair(pair))
            .map_err(|e| Error::Tokenizer(format!("post-processor template: {e}")))?
            .special_tokens(specials)
            .build()
            .map_err(|e| Error::Tokenizer(format!("post-processor template: {e}")))?;
        self.inner.with_post_processor(Some(template));
        Ok(())
    }

    /// Token ids of `text`, with the special tokens the tokenizer adds by default (e.g. BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// Token ids of `text`; `add_special_tokens` as in transformers (false for text that already
    /// has them, such as a rendered chat template).
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        if let Some(marian) = &self.marian {
            return marian.encode(text, add_special_tokens);
        }
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (HF `decode`), optionally without special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self.decode_raw(ids, skip_special_tokens)?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// [`Tokenizer::decode`] without `clean_up_tokenization_spaces`.
    pub(crate) fn decode_raw(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match &self.marian {
            Some(marian) => marian.decode(ids, skip_special_tokens),
            None => self
                .inner
                .decode(ids, skip_special_tokens)
                .map_err(|e| Error::Tokenizer(format!("cannot decode {ids:?}: {e}"))),
        }
    }

    /// Whether encoding and decoding run sentencepiece models in place of [`Tokenizer::inner`]
    /// (a Marian checkpoint without tokenizer.json).
    pub fn is_sentencepiece(&self) -> bool {
        self.marian.is_some()
    }

    /// The chat template, if the checkpoint has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt=...,
    /// **extra)`: the conversation rendered as text. `extra` holds `tools`, `documents` and any
    /// other template variable (they override the special-token variables such as `bos_token`).
    /// Tokenize the result with [`Tokenizer::encode_with`]`(text, false)`: the template already
    /// wrote the special tokens.
    pub fn apply_chat_template(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        extra: &Map<String, Value>,
    ) -> Result<String> {
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::ChatTemplate(
                "this tokenizer has no chat template (neither `chat_template.jinja` nor \
                 `chat_template` in tokenizer_config.json)"
                    .into(),
            )
        })?;
        let mut vars = Map::new();
        let named = [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("sep_token", &self.sep_token),
            ("pad_token", &self.pad_token),
            ("cls_token", &self.cls_token),
            ("mask_token", &self.mask_token),
        ];
        for (name, token) in named {
            if let Some(t) = token {
                vars.insert(name.into(), Value::String(t.clone()));
            }
        }
        if !self.extra_special_tokens.is_empty() {
            vars.insert(
                "additional_special_tokens".into(),
                Value::from(self.extra_special_tokens.clone()),
            );
        }
        vars.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        template.render(messages, add_generation_prompt, vars)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of `pad_token`, if any.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// The id of `eos_token`, if any.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// The id of `bos_token`, if any.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// The id of `unk_token`, if any.
    pub fn unk_token_id(&self) -> Option<u32> {
        self.unk_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// transformers' `clean_up_tokenization`: drops spaces before punctuation and contractions.
pub(crate) fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |s, (from, to)| s.replace(from, to))
}

/// The parts of `tokenizer.json` lmgen checks before handing it to tokenizers (the rest is read
/// as JSON syntax only).
#[derive(serde::Deserialize)]
struct Outline {
    post_processor: Option<Value>,
}

/// Every `TemplateProcessing` in `processor` (a `Sequence` nests them) defines the special
/// tokens its `single` and `pair` templates name.
fn check_templates(processor: &Value) -> std::result::Result<(), String> {
    if let Some(list) = processor.get("processors").and_then(Value::as_array) {
        return list.iter().try_for_each(check_templates);
    }
    if processor.get("type").and_then(Value::as_str) != Some("TemplateProcessing") {
        return Ok(());
    }
    let defined = processor.get("special_tokens").and_then(Value::as_object);
    for template in ["single", "pair"] {
        let pieces = processor.get(template).and_then(Value::as_array);
        for piece in pieces.into_iter().flatten() {
            let Some(id) = piece.pointer("/SpecialToken/id").and_then(Value::as_str) else {
                continue;
            };
            if !defined.is_some_and(|d| d.contains_key(id)) {
                return Err(format!(
                    "TemplateProcessing's `{template}` template uses the special token `{id}`, \
                     which its `special_tokens` does not define"
                ));
            }
        }
    }
    Ok(())
}
