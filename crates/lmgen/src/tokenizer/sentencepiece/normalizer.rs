//! sentencepiece's `Normalizer` (`normalizer.cc`): the precompiled character map (`nmt_nfkc` and
//! the like) applied by longest prefix, user-defined pieces kept as they are, then the whitespace
//! rules of `NormalizerSpec` (`remove_extra_whitespaces`, `add_dummy_prefix`,
//! `escape_whitespaces`) and `TrainerSpec.treat_whitespace_as_suffix`.
//!
//! transformers' `SpmConverter` approximates this with tokenizers' `Precompiled` normalizer (which
//! maps by grapheme, not by longest prefix), `Strip` and `Replace(" {2,}", "▁")`; lmgen follows
//! sentencepiece itself, which is what `MarianTokenizer` runs.

/// U+2581, sentencepiece's `kSpaceSymbol`.
pub(crate) const SPACE_SYMBOL: &str = "\u{2581}";

/// `Normalizer::kMaxTrieResultsSize`: how many prefix matches the longest rule is chosen from.
const MAX_TRIE_RESULTS: usize = 32;

/// The normalizer of one `.spm` file.
#[derive(Debug, Clone)]
pub(crate) struct Normalizer {
    pub(crate) charsmap: Option<CharsMap>,
    /// USER_DEFINED pieces: matched first (longest) and never normalized (`PrefixMatcher`).
    pub(crate) user_defined: Vec<String>,
    pub(crate) add_dummy_prefix: bool,
    pub(crate) remove_extra_whitespaces: bool,
    pub(crate) escape_whitespaces: bool,
    pub(crate) treat_whitespace_as_suffix: bool,
}

/// `precompiled_charsmap`: `<trie size: u32 LE><Darts double-array trie><NUL-terminated
/// replacement strings>` (`Normalizer::DecodePrecompiledCharsMap`).
#[derive(Debug, Clone)]
pub(crate) struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl CharsMap {
    /// Checks the blob as sentencepiece does before using it.
    pub(crate) fn parse(blob: &[u8]) -> Result<Self, String> {
        let size = match blob.get(..4) {
            Some(b) if blob.len() > 4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            _ => return Err("blob for normalization rule is broken".into()),
        };
        if size >= blob.len() - 4 {
            return Err(format!(
                "trie size {size} exceeds the blob ({} bytes)",
                blob.len()
            ));
        }
        if size < 1024 || size & 0x3FF != 0 {
            return Err(format!(
                "trie size {size} is not a multiple of 1024 (at least 1024)"
            ));
        }
        let units = blob[4..4 + size]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let normalized = blob[4 + size..].to_vec();
        if normalized.last() != Some(&0) {
            return Err("the normalized block is not NUL-terminated".into());
        }
        Ok(Self { units, normalized })
    }

    /// Darts' `commonPrefixSearch` on `key`, keeping the longest of the first
    /// [`MAX_TRIE_RESULTS`] matches: `(matched length, offset of its replacement)`.
    fn longest_match(&self, key: &[u8]) -> Option<(usize, usize)> {
        // A unit: bit 8 has_leaf, label = bits 0-7 and 31, offset = (u >> 10) << ((u & 512) >> 6),
        // value = bits 0-30.
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut node = offset(*self.units.first()?);
        let mut best: Option<(usize, usize)> = None;
        let mut found = 0;
        for (i, &c) in key.iter().enumerate() {
            node ^= c as usize;
            let unit = *self.units.get(node)?;
            if unit & ((1 << 31) | 0xFF) != c as u32 {
                break;
            }
            node ^= offset(unit);
            if (unit >> 8) & 1 == 1 {
                let value = (*self.units.get(node)? & 0x7FFF_FFFF) as usize;
                if found < MAX_TRIE_RESULTS && best.is_none_or(|(len, _)| i + 1 > len) {
                    best = Some((i + 1, value));
                }
                found += 1;
            }
        }
        best
    }

    /// The replacement starting at `offset` (up to its NUL).
    fn replacement(&self, offset: usize) -> Option<&[u8]> {
        let rest = self.normalized.get(offset..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..end])
    }
}

impl Normalizer {
    /// `NormalizePrefix`: the normalized text of the start of `input` and how many bytes it
    /// consumed (at least one character).
    fn normalize_prefix<'a>(&'a self, input: &'a str) -> Result<(&'a str, usize), String> {
        if let Some(piece) = self
            .user_defined
            .iter()
            .filter(|p| input.starts_with(p.as_str()))
            .max_by_key(|p| p.len())
        {
            return Ok((&input[..piece.len()], piece.len()));
        }
        let matched = self
            .charsmap
            .as_ref()
            .and_then(|m| m.longest_match(input.as_bytes()).map(|hit| (m, hit)));
        if let Some((map, (len, offset))) = matched {
            if let Some(bytes) = map.replacement(offset) {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    format!("precompiled_charsmap: the replacement at {offset} is not UTF-8")
                })?;
                if !input.is_char_boundary(len) {
                    return Err(format!(
                        "precompiled_charsmap: a rule ends inside a character of {input:?}"
                    ));
                }
                return Ok((text, len));
            }
        }
        let len = input.chars().next().map_or(0, char::len_utf8);
        Ok((&input[..len], len))
    }

    /// `Normalizer::Normalize`: the text the model segments.
    pub(crate) fn normalize(&self, text: &str) -> Result<String, String> {
        let mut input = text;
        if self.remove_extra_whitespaces {
            // Leading whitespace goes.
            while !input.is_empty() {
                let (p, n) = self.normalize_prefix(input)?;
                if p != " " {
                    break;
                }
                input = &input[n..];
            }
        }
        let mut out = String::with_capacity(input.len() * 3 / 2);
        if input.is_empty() {
            return Ok(out);
        }
        let space = if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            " "
        };
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.push_str(space);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (p, n) = self.normalize_prefix(input)?;
            let mut sp = p;
            if is_prev_space {
                sp = sp.trim_start_matches(' ');
            }
            if !sp.is_empty() {
                for c in sp.chars() {
                    match c {
                        ' ' => out.push_str(space),
                        c => out.push(c),
                    }
                }
                is_prev_space = sp.ends_with(' ');
            }
            input = &input[n..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.push_str(space);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(remove_extra_whitespaces: bool, add_dummy_prefix: bool) -> Normalizer {
        Normalizer {
            charsmap: None,
            user_defined: Vec::new(),
            add_dummy_prefix,
            remove_extra_whitespaces,
            escape_whitespaces: true,
            treat_whitespace_as_suffix: false,
        }
    }

    #[test]
    fn whitespace_rules_without_a_charsmap() {
        let n = plain(true, true);
        assert_eq!(n.normalize("  a   b  ").unwrap(), "▁a▁b");
        assert_eq!(n.normalize("   ").unwrap(), "");
        assert_eq!(n.normalize("").unwrap(), "");
        let n = plain(false, true);
        assert_eq!(n.normalize(" a  b ").unwrap(), "▁▁a▁▁b▁");
        let n = plain(true, false);
        assert_eq!(n.normalize(" a b").unwrap(), "a▁b");
    }

    #[test]
    fn user_defined_pieces_are_kept_whole() {
        let mut n = plain(true, true);
        n.user_defined = vec!["<x>".into(), "<x> y".into()];
        assert_eq!(n.normalize("a<x> y").unwrap(), "▁a<x>▁y");
    }

    #[test]
    fn broken_charsmaps_are_errors() {
        assert!(CharsMap::parse(&[]).is_err());
        assert!(CharsMap::parse(&[0, 4, 0, 0, 1, 2]).is_err());
        let mut blob = 1024u32.to_le_bytes().to_vec();
        blob.extend(vec![0u8; 1024]);
        blob.extend(b"ab");
        assert!(CharsMap::parse(&blob).is_err(), "not NUL-terminated");
        blob.push(0);
        let map = CharsMap::parse(&blob).unwrap();
        assert_eq!(map.longest_match(b"abc"), None);
    }
}
