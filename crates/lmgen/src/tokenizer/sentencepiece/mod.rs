//! A sentencepiece model file (`.spm`, `.model`), as `sentencepiece.SentencePieceProcessor` encodes
//! text to pieces and decodes pieces to text. Unigram models, the kind Marian (opus-mt) and most
//! sentencepiece checkpoints use; BPE models and byte fallback are refused with an error.
//!
//! Ported from sentencepiece (`sentencepiece_processor.cc`, `unigram_model.cc`
//! `EncodeOptimized`, `normalizer.cc`, `model_interface.cc`) rather than converted into a
//! `tokenizers` Unigram model as transformers' `SpmConverter` does: tokenizers' trie matches
//! control pieces (`<s>`) in text and its normalizer maps by grapheme, so the conversion is not
//! exact, and slow tokenizers (`MarianTokenizer`) run sentencepiece itself.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};

mod normalizer;
mod proto;
mod unigram;

use normalizer::{CharsMap, Normalizer, SPACE_SYMBOL};

/// sentencepiece's `kDefaultUnknownSymbol`: the text of `<unk>` when decoding.
const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";

/// `ModelProto.SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
}

/// One piece of the vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub(crate) text: String,
    pub(crate) score: f32,
    pub(crate) kind: PieceType,
}

/// A loaded sentencepiece model (HF: the `sentencepiece.SentencePieceProcessor` that slow
/// tokenizers hold).
#[doc(alias = "SentencePieceProcessor")]
#[derive(Debug, Clone)]
pub struct SentencePieceModel {
    pieces: Vec<Piece>,
    /// NORMAL, USER_DEFINED and UNUSED pieces (what the segmenter matches; `pieces_`).
    matchable: HashMap<String, u32>,
    /// The other pieces (`reserved_id_map_`).
    reserved: HashMap<String, u32>,
    unk_id: u32,
    /// The longest matchable piece, in bytes.
    max_piece_len: usize,
    /// Lowest and highest score of the NORMAL pieces (`min_score_`, `max_score_`).
    min_score: f32,
    max_score: f32,
    normalizer: Normalizer,
    unk_surface: String,
}

impl SentencePieceModel {
    /// Reads and checks a model file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|e| Error::Tokenizer(format!("`{}`: {e}", path.display())))
    }

    /// Parses a serialized `ModelProto`; the error says what is wrong with it.
    pub(crate) fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let proto = proto::ModelProto::decode(bytes)
            .map_err(|e| format!("not a sentencepiece model (ModelProto): {e}"))?;
        let trainer = proto.trainer_spec.unwrap_or_default();
        match trainer.model_type.unwrap_or(1) {
            1 => {}
            2 => return Err("a BPE sentencepiece model; lmgen reads Unigram models only".into()),
            other => {
                return Err(format!(
                    "sentencepiece model_type {other} (3 word, 4 char); lmgen reads Unigram \
                     models only"
                ))
            }
        }
        if trainer.byte_fallback.unwrap_or(false) {
            return Err(
                "`byte_fallback` is set; lmgen does not implement sentencepiece's byte \
                        fallback"
                    .into(),
            );
        }
        if proto
            .denormalizer_spec
            .as_ref()
            .and_then(|d| d.precompiled_charsmap.as_ref())
            .is_some_and(|m| !m.is_empty())
        {
            return Err("the model has denormalization rules, which lmgen does not apply".into());
        }
        let mut pieces = Vec::with_capacity(proto.pieces.len());
        let mut matchable = HashMap::new();
        let mut reserved = HashMap::new();
        let mut unk_id = None;
        for (id, p) in proto.pieces.into_iter().enumerate() {
            let text = p.piece.unwrap_or_default();
            if text.is_empty() {
                return Err(format!("piece {id} is empty"));
            }
            let kind = match p.r#type.unwrap_or(1) {
                1 => PieceType::Normal,
                2 => PieceType::Unknown,
                3 => PieceType::Control,
                4 => PieceType::UserDefined,
                5 => PieceType::Unused,
                6 => {
                    return Err(format!(
                    "piece {id} ({text:?}) is a byte piece; lmgen does not implement byte fallback"
                ))
                }
                other => {
                    return Err(format!(
                        "piece {id} ({text:?}) has the unknown type {other}"
                    ))
                }
            };
            let id = u32::try_from(id).map_err(|_| "too many pieces".to_string())?;
            let table = match kind {
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused => &mut matchable,
                PieceType::Unknown | PieceType::Control => &mut reserved,
            };
            if table.insert(text.clone(), id).is_some() {
                return Err(format!("piece {text:?} is defined twice"));
            }
            if kind == PieceType::Unknown {
                if unk_id.is_some() {
                    return Err("more than one unknown piece".into());
                }
                unk_id = Some(id);
            }
            pieces.push(Piece {
                text,
                score: p.score.unwrap_or(0.0),
                kind,
            });
        }
        let unk_id = unk_id.ok_or("the model has no unknown piece (`<unk>`)")?;
        let normal = || pieces.iter().filter(|p| p.kind == PieceType::Normal);
        let min_score = normal().map(|p| p.score).fold(f32::MAX, f32::min);
        let max_score = normal().map(|p| p.score).fold(f32::MIN_POSITIVE, f32::max);
        let max_piece_len = matchable.keys().map(String::len).max().unwrap_or(0);
        let spec = proto.normalizer_spec.unwrap_or_default();
        let charsmap = match spec.precompiled_charsmap.as_deref() {
            None | Some([]) => None,
            Some(blob) => Some(CharsMap::parse(blob).map_err(|e| {
                format!(
                    "normalizer_spec.precompiled_charsmap ({:?}): {e}",
                    spec.name()
                )
            })?),
        };
        let user_defined = pieces
            .iter()
            .filter(|p| p.kind == PieceType::UserDefined)
            .map(|p| p.text.clone())
            .collect();
        let normalizer = Normalizer {
            charsmap,
            user_defined,
            add_dummy_prefix: spec.add_dummy_prefix.unwrap_or(true),
            remove_extra_whitespaces: spec.remove_extra_whitespaces.unwrap_or(true),
            escape_whitespaces: spec.escape_whitespaces.unwrap_or(true),
            treat_whitespace_as_suffix: trainer.treat_whitespace_as_suffix.unwrap_or(false),
        };
        Ok(Self {
            pieces,
            matchable,
            reserved,
            unk_id,
            max_piece_len,
            min_score,
            max_score,
            normalizer,
            unk_surface: trainer
                .unk_surface
                .unwrap_or_else(|| DEFAULT_UNK_SURFACE.to_string()),
        })
    }

    /// The number of pieces (`GetPieceSize`).
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the model has no pieces (never true of a loaded model: it has `<unk>`).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// `PieceToId`: the piece's id, or the unknown piece's for a string that is no piece.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.matchable
            .get(piece)
            .or_else(|| self.reserved.get(piece))
            .copied()
            .unwrap_or(self.unk_id)
    }

    /// `IdToPiece`: the piece of `id`, `None` past the vocabulary.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.text.as_str())
    }

    /// `encode(text, out_type=str)`: the pieces of `text` (a run of unknown characters is one
    /// piece, its normalized text).
    pub fn encode(&self, text: &str) -> Result<Vec<String>> {
        let normalized = self
            .normalizer
            .normalize(text)
            .map_err(|e| Error::Tokenizer(format!("sentencepiece normalizer: {e}")))?;
        let mut out: Vec<String> = Vec::new();
        let mut prev_unk = false;
        for (range, id) in unigram::viterbi(self, &normalized) {
            let piece = &normalized[range];
            let unk = id == self.unk_id;
            match out.last_mut() {
                Some(last) if unk && prev_unk => last.push_str(piece),
                _ => out.push(piece.to_string()),
            }
            prev_unk = unk;
        }
        Ok(out)
    }

    /// `decode_pieces(pieces)`: control pieces vanish, `<unk>` is `unk_surface` (" ⁇ "), a string
    /// that is no piece is copied, `▁` is a space, and the first piece's leading `▁` (every
    /// leading one with `remove_extra_whitespaces`) is dropped.
    pub fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        let mut text = String::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        let spec = &self.normalizer;
        for piece in pieces {
            let piece = piece.as_ref();
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            let id = self.piece_to_id(piece);
            bos_ws_seen = false;
            match self.pieces[id as usize].kind {
                PieceType::Control => {}
                PieceType::Unknown if self.pieces[id as usize].text == piece => {
                    text.push_str(&self.unk_surface)
                }
                PieceType::Unknown => text.push_str(piece),
                _ => {
                    let mut p = piece;
                    if is_bos_ws && (spec.add_dummy_prefix || spec.remove_extra_whitespaces) {
                        if let Some(rest) = p.strip_prefix(SPACE_SYMBOL) {
                            p = rest;
                            bos_ws_seen = !spec.remove_extra_whitespaces;
                        }
                    }
                    text.push_str(&p.replace(SPACE_SYMBOL, " "));
                }
            }
        }
        text
    }

    pub(crate) fn piece(&self, id: u32) -> &Piece {
        &self.pieces[id as usize]
    }
}
