//! Whisper's languages (HF `LANGUAGES` and `TO_LANGUAGE_CODE`, `models/whisper/tokenization_whisper.py`)
//! and how `generate(language=...)` turns a language into its token (`_retrieve_init_tokens`'s
//! `language_to_id`).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::TokenId;

/// `(code, name)` of every language Whisper knows, in transformers' order.
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];

/// Other names of some languages (`TO_LANGUAGE_CODE` beyond [`LANGUAGES`]).
const ALIASES: &[(&str, &str)] = &[
    ("burmese", "my"),
    ("valencian", "ca"),
    ("flemish", "nl"),
    ("haitian", "ht"),
    ("letzeburgesch", "lb"),
    ("pushto", "ps"),
    ("panjabi", "pa"),
    ("moldavian", "ro"),
    ("moldovan", "ro"),
    ("sinhalese", "si"),
    ("castilian", "es"),
    ("mandarin", "zh"),
];

/// The language code of a language name (`TO_LANGUAGE_CODE`).
fn code_of(name: &str) -> Option<&'static str> {
    let by_name = LANGUAGES.iter().find(|(_, n)| *n == name).map(|(c, _)| *c);
    by_name.or_else(|| ALIASES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c))
}

/// The code and name of a language token (`"<|de|>"` -> `("de", "german")`).
pub fn language_of_token(token: &str) -> Option<(&'static str, &'static str)> {
    let code = token.strip_prefix("<|")?.strip_suffix("|>")?;
    LANGUAGES.iter().find(|(c, _)| *c == code).copied()
}

/// The token id of `language` (HF `language_to_id`): a token of `lang_to_id` as it is
/// (`"<|de|>"`), a language name (`"german"`, any case) or a code (`"de"`); errors as
/// transformers' `ValueError`s.
pub fn language_to_id(language: &str, lang_to_id: &BTreeMap<String, TokenId>) -> Result<TokenId> {
    let language = language.to_lowercase();
    let token = if lang_to_id.contains_key(&language) {
        language.clone()
    } else if let Some(code) = code_of(&language) {
        format!("<|{code}|>")
    } else if LANGUAGES.iter().any(|(c, _)| *c == language) {
        format!("<|{language}|>")
    } else {
        let known: Vec<&str> = if language.chars().count() == 2 {
            LANGUAGES.iter().map(|(c, _)| *c).collect()
        } else {
            LANGUAGES
                .iter()
                .map(|(_, n)| *n)
                .chain(ALIASES.iter().map(|(n, _)| *n))
                .collect()
        };
        return Err(Error::config(format!(
            "Unsupported language: {language}. Language should be one of: {known:?}."
        )));
    };
    lang_to_id.get(&token).copied().ok_or_else(|| {
        Error::config(format!(
            "{token} is not supported by this specific model as it is not in the \
             `generation_config.lang_to_id`. (You should just add it to the generation config)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_tokens_resolve_as_transformers() {
        let ids: BTreeMap<String, TokenId> =
            [("<|en|>".to_string(), 7), ("<|de|>".to_string(), 9)].into();
        for given in ["<|de|>", "German", "de", "DE"] {
            assert_eq!(language_to_id(given, &ids).unwrap(), 9, "{given}");
        }
        assert_eq!(LANGUAGES.len(), 100);
        assert_eq!(code_of("castilian"), Some("es"));
        assert_eq!(language_of_token("<|de|>"), Some(("de", "german")));
        assert_eq!(language_of_token("de"), None);
        let err = language_to_id("xx", &ids).unwrap_err().to_string();
        assert!(
            err.contains("Unsupported language: xx") && err.contains("\"en\""),
            "{err}"
        );
        let err = language_to_id("klingon", &ids).unwrap_err().to_string();
        assert!(err.contains("\"english\""), "{err}");
        let err = language_to_id("french", &ids).unwrap_err().to_string();
        assert!(
            err.contains("<|fr|> is not supported by this specific model"),
            "{err}"
        );
    }
}
