//! Arguments written as literals rather than JSON, rewritten as JSON as they stream: Gemma 4's
//! `{key:<|"|>text<|"|>,n:3,flag:true}` (the template's `format_argument`) and the Python
//! keyword arguments of LFM2's pythonic calls, `(key="text", n=3, flag=True)` (vLLM's
//! `pythonic` parser reads them with `ast`). What is output for a prefix of the text is a prefix of
//! what is output for the whole: a key goes out with its `:`/`=`, a string piece by piece, a bare
//! word (number, `true`, `None`) once it ends.

use super::pending_prefix;

/// Gemma 4's string delimiter.
pub(super) const GEMMA_QUOTE: &str = "<|\"|>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    /// `{key:value,...}`, strings between `<|"|>`.
    Gemma,
    /// `(key=value, ...)`, Python literals.
    Python,
}

/// The JSON of a literal's decided part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Converted {
    pub json: String,
    /// The length of the literal once it is whole.
    pub len: Option<usize>,
    /// The text stopped being a literal (what went before is in `json`).
    pub invalid: bool,
}

/// Rewrites the arguments at the start of `src` (`{` for Gemma, `(` for Python) as a JSON object.
pub(super) fn to_json(src: &str, syntax: Syntax) -> Converted {
    let mut r = Reader {
        src,
        pos: 0,
        out: String::new(),
        syntax,
    };
    let open = match syntax {
        Syntax::Gemma => '{',
        Syntax::Python => '(',
    };
    let done = match r.rest().strip_prefix(open) {
        Some(_) => {
            r.pos += 1;
            let (close, sep) = match syntax {
                Syntax::Gemma => ('}', ':'),
                Syntax::Python => (')', '='),
            };
            r.object(close, sep)
        }
        None if src.is_empty() => Err(Stop::More),
        None => Err(Stop::Invalid),
    };
    Converted {
        len: done.is_ok().then_some(r.pos),
        invalid: done == Err(Stop::Invalid),
        json: r.out,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The text ends before the literal does.
    More,
    Invalid,
}

struct Reader<'a> {
    src: &'a str,
    pos: usize,
    out: String,
    syntax: Syntax,
}

/// `s` escaped as the inside of a JSON string.
fn escaped(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_blanks(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Reads `token` if the text goes on with it (`More` while it may still).
    fn eat(&mut self, token: &str) -> Result<bool, Stop> {
        let rest = self.rest();
        if rest.starts_with(token) {
            self.pos += token.len();
            Ok(true)
        } else if token.starts_with(rest) {
            Err(Stop::More)
        } else {
            Ok(false)
        }
    }

    /// An object's members up to `close` (its opening read), each `key SEP value`.
    fn object(&mut self, close: char, sep: char) -> Result<(), Stop> {
        // The `, ` before a member goes out once its key is read.
        self.items(close, ('{', '}'), |r, comma| {
            let key = r.key(sep)?;
            r.out.push_str(comma);
            r.out.push('"');
            r.out.push_str(&escaped(&key));
            r.out.push_str("\": ");
            r.value()
        })
    }

    /// Comma-separated items up to `close` (a trailing comma allowed), written between
    /// `brackets` as a JSON list; `item` reads one and writes it, with the `, ` it is given
    /// (empty for the first) where it decides.
    fn items(
        &mut self,
        close: char,
        brackets: (char, char),
        mut item: impl FnMut(&mut Self, &str) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        self.out.push(brackets.0);
        let close = close.to_string();
        let mut first = true;
        loop {
            self.skip_blanks();
            if self.eat(&close)? {
                self.out.push(brackets.1);
                return Ok(());
            }
            if !first {
                if !self.eat(",")? {
                    return Err(Stop::Invalid);
                }
                self.skip_blanks();
                if self.eat(&close)? {
                    self.out.push(brackets.1);
                    return Ok(());
                }
            }
            item(self, if first { "" } else { ", " })?;
            first = false;
        }
    }

    /// A key and the `sep` after it: bare (`name`), or quoted.
    fn key(&mut self, sep: char) -> Result<String, Stop> {
        let key = if self.syntax == Syntax::Gemma && self.eat(GEMMA_QUOTE)? {
            let rest = self.rest();
            let at = rest.find(GEMMA_QUOTE).ok_or(Stop::More)?;
            self.pos += at + GEMMA_QUOTE.len();
            rest[..at].to_string()
        } else if self.syntax == Syntax::Python && self.rest().starts_with(['"', '\'']) {
            let mut key = String::new();
            self.python_string(&mut key)?;
            key
        } else {
            let rest = self.rest();
            let at = rest
                .find(|c: char| !(c.is_alphanumeric() || "_-.$".contains(c)))
                .ok_or(Stop::More)?;
            if at == 0 {
                return Err(Stop::Invalid);
            }
            self.pos += at;
            rest[..at].to_string()
        };
        self.skip_blanks();
        match self.eat(&sep.to_string())? {
            true => Ok(key),
            false => Err(Stop::Invalid),
        }
    }

    fn value(&mut self) -> Result<(), Stop> {
        self.skip_blanks();
        let Some(c) = self.rest().chars().next() else {
            return Err(Stop::More);
        };
        match (self.syntax, c) {
            (Syntax::Gemma, '<') if self.eat(GEMMA_QUOTE)? => self.gemma_string(),
            (Syntax::Python, '"' | '\'') => {
                self.out.push('"');
                let mut s = std::mem::take(&mut self.out);
                let done = self.python_string(&mut s);
                self.out = s;
                done?;
                self.out.push('"');
                Ok(())
            }
            (_, '{') => {
                self.pos += 1;
                self.object('}', ':')
            }
            (_, '[') => {
                self.pos += 1;
                self.array(']')
            }
            (Syntax::Python, '(') => {
                self.pos += 1;
                self.array(')')
            }
            _ => self.bare(),
        }
    }

    fn array(&mut self, close: char) -> Result<(), Stop> {
        self.items(close, ('[', ']'), |r, comma| {
            r.out.push_str(comma);
            r.value()
        })
    }

    /// A Gemma string's text up to `<|"|>` (the opening one read), piece by piece.
    fn gemma_string(&mut self) -> Result<(), Stop> {
        self.out.push('"');
        let rest = self.rest();
        match rest.find(GEMMA_QUOTE) {
            Some(at) => {
                self.out.push_str(&escaped(&rest[..at]));
                self.out.push('"');
                self.pos += at + GEMMA_QUOTE.len();
                Ok(())
            }
            None => {
                let keep = pending_prefix(rest, GEMMA_QUOTE);
                self.out.push_str(&escaped(&rest[..rest.len() - keep]));
                self.pos = self.src.len();
                Err(Stop::More)
            }
        }
    }

    /// A Python string literal (`'...'` or `"..."`), its escapes decoded, escaped for JSON onto
    /// `out` as it is read.
    fn python_string(&mut self, out: &mut String) -> Result<(), Stop> {
        let rest = self.rest();
        let mut chars = rest.char_indices();
        let Some((_, quote)) = chars.next() else {
            return Err(Stop::More);
        };
        let mut buf = [0u8; 4];
        while let Some((i, c)) = chars.next() {
            let decoded = match c {
                '\\' => {
                    let Some((_, e)) = chars.next() else {
                        return Err(Stop::More);
                    };
                    match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        'u' => {
                            let hex = rest.get(i + 2..i + 6).ok_or(Stop::More)?;
                            let code = u32::from_str_radix(hex, 16).map_err(|_| Stop::Invalid)?;
                            (0..4).for_each(|_| {
                                chars.next();
                            });
                            char::from_u32(code).ok_or(Stop::Invalid)?
                        }
                        other => other,
                    }
                }
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(());
                }
                c => c,
            };
            out.push_str(&escaped(decoded.encode_utf8(&mut buf)));
        }
        Err(Stop::More)
    }

    /// A bare word (a number, `true`, `None`), once the character after it is read.
    fn bare(&mut self) -> Result<(), Stop> {
        let rest = self.rest();
        let at = rest
            .find(|c: char| c.is_whitespace() || ",}])".contains(c))
            .ok_or(Stop::More)?;
        let word = &rest[..at];
        if word.is_empty() {
            return Err(Stop::Invalid);
        }
        let json = match word {
            "true" | "True" => "true".to_string(),
            "false" | "False" => "false".to_string(),
            "null" | "None" => "null".to_string(),
            w if serde_json::from_str::<serde_json::Number>(w).is_ok() => w.to_string(),
            w if self.syntax == Syntax::Gemma => format!("\"{}\"", escaped(w)),
            _ => return Err(Stop::Invalid),
        };
        self.out.push_str(&json);
        self.pos += at;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(src: &str, syntax: Syntax) -> String {
        let c = to_json(src, syntax);
        assert_eq!(c.len, Some(src.len()), "{src}: {c:?}");
        serde_json::from_str::<serde_json::Value>(&c.json).expect("JSON");
        // Every prefix gives a prefix of the JSON.
        for (i, _) in src.char_indices() {
            let p = to_json(&src[..i], syntax);
            assert!(
                c.json.starts_with(&p.json),
                "{:?} -> {:?}",
                &src[..i],
                p.json
            );
            assert!(!p.invalid && p.len.is_none(), "{:?}", &src[..i]);
        }
        c.json
    }

    #[test]
    fn gemma_arguments() {
        assert_eq!(
            whole(
                "{location:<|\"|>Paris, \"France\"<|\"|>,options:{lang:<|\"|>fr<|\"|>},days:3,hourly:true,at:null,tags:[<|\"|>a<|\"|>,2.5]}",
                Syntax::Gemma
            ),
            r#"{"location": "Paris, \"France\"", "options": {"lang": "fr"}, "days": 3, "hourly": true, "at": null, "tags": ["a", 2.5]}"#
        );
        assert_eq!(whole("{}", Syntax::Gemma), "{}");
        // Keys quoted as the template's `escape_keys` writes them.
        assert_eq!(whole("{<|\"|>k<|\"|>:1}", Syntax::Gemma), r#"{"k": 1}"#);
    }

    #[test]
    fn python_arguments() {
        assert_eq!(
            whole(
                "(city='Rio \\'de\\' Janeiro', n=-2, f=1.5e3, ok=True, none=None, xs=[1, \"a\\n\"], d={'k': (1, 2)}, u='\\u00e9')",
                Syntax::Python
            ),
            r#"{"city": "Rio 'de' Janeiro", "n": -2, "f": 1.5e3, "ok": true, "none": null, "xs": [1, "a\n"], "d": {"k": [1, 2]}, "u": "é"}"#
        );
        assert_eq!(whole("()", Syntax::Python), "{}");
    }

    #[test]
    fn what_is_not_a_literal() {
        for (src, syntax) in [
            ("(x=foo)", Syntax::Python),
            ("(1, 2)", Syntax::Python),
            ("{a:1 b:2}", Syntax::Gemma),
            ("[1]", Syntax::Gemma),
        ] {
            assert!(to_json(src, syntax).invalid, "{src}");
        }
    }
}
