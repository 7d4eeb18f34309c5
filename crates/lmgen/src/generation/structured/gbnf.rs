//! llama.cpp's GBNF grammars (`grammars/README.md`), translated to llguidance's Lark dialect,
//! which is what llguidance compiles (it reads GBNF only through its Python converter).
//!
//! The syntax, as llama.cpp's `llama_grammar_parser` reads it: `name ::= alternatives` rules,
//! one per line (a rule continues on the next line only after `|` or inside parentheses),
//! `root` the start; string literals `"..."` and character classes `[...]`, `[^...]` with
//! ranges `a-z`, the escapes `\x41`, `\u0041`, `\U00000041`, `\t`, `\r`, `\n`, `\\`, `\"`, `\[`,
//! `\]`; `.` any character; groups, `|`, `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`; `#` comments;
//! rule names of letters, digits and dashes.
//!
//! Every GBNF rule becomes a Lark rule (`root` is `start`; names are lower-cased with dashes as
//! underscores, and numbered apart where two would collide), and every terminal is one
//! character: a literal becomes a sequence of one-character strings. llguidance's lexer is
//! greedy, so longer terminals could swallow text that the grammar needs to split otherwise;
//! one-character terminals keep GBNF's meaning exactly, while llguidance's Earley parser
//! follows every alternative as llama.cpp's parser does.
//!
//! Deliberate differences from llama.cpp: a rule defined twice is an error (llama.cpp keeps
//! the last definition silently), an empty character class `[]` (which matches nothing) is an
//! error, and llama.cpp's newer token references (`<...>`, `<[id]>`, `!`) are refused. Left
//! recursion, which llama.cpp refuses, is accepted (Earley parses it).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::error::{Error, Result};

/// Repetition bounds past which a grammar is refused (llama.cpp's `MAX_REPETITION_THRESHOLD`).
const MAX_REPETITION: u32 = 2000;

/// `source` (GBNF) as a Lark grammar; a syntax error names its line and column.
pub fn to_lark(source: &str) -> Result<String> {
    let rules = Parser::new(source).rules()?;
    let names = lark_names(&rules)?;
    let mut out = String::new();
    for rule in &rules {
        let _ = writeln!(
            out,
            "{}: {}",
            names[rule.name.as_str()],
            emit(&rule.body, &names)
        );
    }
    Ok(out)
}

/// A GBNF expression.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A string literal's characters (empty: matches the empty string).
    Literal(Vec<char>),
    /// A character class: its ranges (inclusive), negated or not.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `.`: any one character.
    Any,
    /// A rule reference: its name and where it was written (line, column).
    Ref(String, (usize, usize)),
    Sequence(Vec<Node>),
    Alternatives(Vec<Node>),
    /// `node{min,max}` (`max` `None`: unbounded).
    Repeat(Box<Node>, u32, Option<u32>),
}

#[derive(Debug)]
struct Rule {
    name: String,
    body: Node,
}

/// A GBNF reader over the characters of the source, tracking line and column.
struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn new(source: &str) -> Self {
        Self {
            chars: source.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }

    /// The (line, column) of `pos`, both from 1.
    fn line_col(&self, pos: usize) -> (usize, usize) {
        let before = &self.chars[..pos.min(self.chars.len())];
        let line = before.iter().filter(|&&c| c == '\n').count() + 1;
        let col = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
        (line, col)
    }

    fn error_at(&self, pos: usize, problem: impl std::fmt::Display) -> Error {
        let (line, col) = self.line_col(pos);
        Error::input(format!("`gbnf`: line {line}, column {col}: {problem}"))
    }

    fn error(&self, problem: impl std::fmt::Display) -> Error {
        self.error_at(self.pos, problem)
    }

    /// What is at the cursor, for messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the grammar".to_string(),
            Some('\n') => "the end of the line".to_string(),
            Some(c) => format!("{c:?}"),
        }
    }

    /// Skips blanks and comments, and newlines too when `newlines`.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn is_name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-'
    }

    fn name(&mut self) -> Result<String> {
        let start = self.pos;
        while self.peek().is_some_and(Self::is_name_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(format!("expected a rule name, found {}", self.found())));
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn rules(mut self) -> Result<Vec<Rule>> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut defined: HashMap<String, (usize, usize)> = HashMap::new();
        self.space(true);
        while self.peek().is_some() {
            let at = self.pos;
            let name = self.name()?;
            self.space(false);
            if !(self.peek() == Some(':')
                && self.peek_at(1) == Some(':')
                && self.peek_at(2) == Some('='))
            {
                return Err(self.error(format!(
                    "expected `::=` after the rule name `{name}`, found {}",
                    self.found()
                )));
            }
            self.pos += 3;
            self.space(true);
            let body = self.alternatives(false)?;
            match self.peek() {
                None | Some('\n' | '\r') => {}
                Some(')') => return Err(self.error("unmatched `)`")),
                Some(_) => {
                    return Err(self.error(format!(
                        "expected the end of the line after rule `{name}`, found {}",
                        self.found()
                    )))
                }
            }
            if let Some((line, col)) = defined.insert(name.clone(), self.line_col(at)) {
                return Err(self.error_at(
                    at,
                    format!("rule `{name}` is defined twice (first at line {line}, column {col})"),
                ));
            }
            rules.push(Rule { name, body });
            self.space(true);
        }
        if !defined.contains_key("root") {
            return Err(Error::input(
                "`gbnf`: the grammar has no `root` rule (its start)",
            ));
        }
        for rule in &rules {
            let mut missing = None;
            visit_refs(&rule.body, &mut |name, at| {
                if missing.is_none() && !defined.contains_key(name) {
                    missing = Some((name.to_string(), at));
                }
            });
            if let Some((name, (line, col))) = missing {
                return Err(Error::input(format!(
                    "`gbnf`: line {line}, column {col}: rule `{name}` is used but never defined"
                )));
            }
        }
        Ok(rules)
    }

    /// `seq | seq | ...`; `nested`: inside parentheses (newlines are blanks there).
    fn alternatives(&mut self, nested: bool) -> Result<Node> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(match alts.len() {
            1 => alts.remove(0),
            _ => Node::Alternatives(alts),
        })
    }

    fn sequence(&mut self, nested: bool) -> Result<Node> {
        let mut items = Vec::new();
        loop {
            let at = self.pos;
            let item = match self.peek() {
                Some('"') => {
                    self.pos += 1;
                    let mut chars = Vec::new();
                    loop {
                        match self.peek() {
                            None | Some('\n' | '\r') => {
                                return Err(self.error_at(at, "unterminated string literal"))
                            }
                            Some('"') => break,
                            Some(_) => chars.push(self.char()?),
                        }
                    }
                    self.pos += 1;
                    Node::Literal(chars)
                }
                Some('[') => self.class()?,
                Some('.') => {
                    self.pos += 1;
                    Node::Any
                }
                Some('(') => {
                    self.pos += 1;
                    self.space(true);
                    let inner = self.alternatives(true)?;
                    if self.peek() != Some(')') {
                        return Err(self.error_at(at, "unclosed `(`"));
                    }
                    self.pos += 1;
                    inner
                }
                Some('<' | '!') => {
                    return Err(self.error("token references (`<...>`, `!`) are not supported"))
                }
                Some(c) if Self::is_name_char(c) => {
                    let name = self.name()?;
                    Node::Ref(name, self.line_col(at))
                }
                Some(c @ ('*' | '+' | '?' | '{')) => {
                    return Err(self.error(format!("`{c}` has nothing to repeat")))
                }
                _ => break,
            };
            self.space(nested);
            let item = self.repetition(item)?;
            self.space(nested);
            items.push(item);
        }
        Ok(match items.len() {
            0 => Node::Literal(Vec::new()),
            1 => items.remove(0),
            _ => Node::Sequence(items),
        })
    }

    /// `item` followed by `*`, `+`, `?` or `{m}`, `{m,}`, `{m,n}`, if one is there.
    fn repetition(&mut self, item: Node) -> Result<Node> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                let at = self.pos;
                self.pos += 1;
                self.space(true);
                let min = self.count()?;
                self.space(true);
                let max = match self.peek() {
                    Some('}') => Some(min),
                    Some(',') => {
                        self.pos += 1;
                        self.space(true);
                        let max = match self.peek() {
                            Some(c) if c.is_ascii_digit() => Some(self.count()?),
                            _ => None,
                        };
                        self.space(true);
                        max
                    }
                    _ => {
                        return Err(self.error(format!(
                            "expected `,` or `}}` in a repetition, found {}",
                            self.found()
                        )))
                    }
                };
                if self.peek() != Some('}') {
                    return Err(self.error(format!(
                        "expected `}}` closing the repetition, found {}",
                        self.found()
                    )));
                }
                if let Some(max) = max.filter(|&m| m < min) {
                    return Err(self.error_at(
                        at,
                        format!("repetition `{{{min},{max}}}`: the maximum is below the minimum"),
                    ));
                }
                (min, max)
            }
            _ => return Ok(item),
        };
        self.pos += 1;
        let item = Node::Repeat(Box::new(item), min, max);
        match self.peek() {
            Some(c @ ('*' | '+' | '?' | '{')) => Err(self.error(format!(
                "`{c}` repeats a repetition; group it in parentheses"
            ))),
            _ => Ok(item),
        }
    }

    fn count(&mut self) -> Result<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPETITION => Ok(n),
            Ok(_) | Err(_) if !digits.is_empty() => Err(self.error_at(
                start,
                format!("repetition count {digits} is above {MAX_REPETITION}"),
            )),
            _ => Err(self.error(format!(
                "expected a repetition count, found {}",
                self.found()
            ))),
        }
    }

    /// `[...]` or `[^...]`.
    fn class(&mut self) -> Result<Node> {
        let at = self.pos;
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error_at(at, "unterminated character class")),
                Some(']') => break,
                Some(_) => {}
            }
            let lo_at = self.pos;
            let lo = self.char()?;
            let hi = if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                self.char()?
            } else {
                lo
            };
            if hi < lo {
                return Err(self.error_at(
                    lo_at,
                    format!("character range {lo:?}-{hi:?} runs backwards"),
                ));
            }
            ranges.push((lo, hi));
        }
        self.pos += 1;
        if ranges.is_empty() && !negated {
            return Err(self.error_at(at, "empty character class `[]` matches nothing"));
        }
        Ok(Node::Class { negated, ranges })
    }

    /// One character of a literal or class, escapes read.
    fn char(&mut self) -> Result<char> {
        let at = self.pos;
        let Some(c) = self.peek() else {
            return Err(self.error("unexpected end of the grammar"));
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let Some(e) = self.peek() else {
            return Err(self.error_at(at, "unfinished escape"));
        };
        self.pos += 1;
        let digits = match e {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            't' => return Ok('\t'),
            'r' => return Ok('\r'),
            'n' => return Ok('\n'),
            '\\' | '"' | '[' | ']' => return Ok(e),
            _ => return Err(self.error_at(at, format!("unknown escape `\\{e}`"))),
        };
        let hex: String = self.chars[self.pos..].iter().take(digits).collect();
        if hex.len() != digits || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self.error_at(at, format!("`\\{e}` needs {digits} hex digits")));
        }
        self.pos += digits;
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| self.error_at(at, format!("`\\{e}{hex}` is not a Unicode character")))
    }
}

fn visit_refs(node: &Node, f: &mut impl FnMut(&str, (usize, usize))) {
    match node {
        Node::Ref(name, at) => f(name, *at),
        Node::Sequence(items) | Node::Alternatives(items) => {
            items.iter().for_each(|n| visit_refs(n, f));
        }
        Node::Repeat(inner, ..) => visit_refs(inner, f),
        Node::Literal(_) | Node::Class { .. } | Node::Any => {}
    }
}

/// Each GBNF rule name's Lark name: `root` is `start`; others lower-cased, dashes as underscores,
/// a leading digit prefixed, numbered apart where two would be the same.
fn lark_names(rules: &[Rule]) -> Result<HashMap<&str, String>> {
    let mut used: HashSet<String> = HashSet::from(["start".to_string()]);
    let mut names = HashMap::from([("root", "start".to_string())]);
    for rule in rules.iter().filter(|r| r.name != "root") {
        let mut base = rule.name.to_ascii_lowercase().replace('-', "_");
        if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
            base.insert_str(0, "r_");
        }
        let mut name = base.clone();
        let mut k = 1;
        while used.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        used.insert(name.clone());
        names.insert(rule.name.as_str(), name);
    }
    Ok(names)
}

/// `node` in Lark, one character per terminal.
fn emit(node: &Node, names: &HashMap<&str, String>) -> String {
    match node {
        Node::Literal(chars) if chars.is_empty() => "\"\"".to_string(),
        Node::Literal(chars) if chars.len() == 1 => lark_char(chars[0]),
        Node::Literal(chars) => {
            let parts: Vec<String> = chars.iter().map(|&c| lark_char(c)).collect();
            format!("({})", parts.join(" "))
        }
        Node::Any => "/(?s:.)/".to_string(),
        // `[^]`: any character (`[]` is refused by the parser).
        Node::Class { ranges, .. } if ranges.is_empty() => "/(?s:.)/".to_string(),
        Node::Class { negated, ranges } => {
            let mut rx = String::from(if *negated { "/[^" } else { "/[" });
            for &(lo, hi) in ranges {
                rx.push_str(&regex_char(lo));
                if hi != lo {
                    rx.push('-');
                    rx.push_str(&regex_char(hi));
                }
            }
            rx.push_str("]/");
            rx
        }
        Node::Ref(name, _) => names[name.as_str()].clone(),
        Node::Sequence(items) => {
            let parts: Vec<String> = items.iter().map(|n| emit(n, names)).collect();
            format!("({})", parts.join(" "))
        }
        Node::Alternatives(alts) => {
            let parts: Vec<String> = alts.iter().map(|n| emit(n, names)).collect();
            format!("({})", parts.join(" | "))
        }
        Node::Repeat(inner, min, max) => {
            let inner = emit(inner, names);
            match (min, max) {
                (_, Some(0)) => "\"\"".to_string(),
                (0, None) => format!("({inner})*"),
                (1, None) => format!("({inner})+"),
                (0, Some(1)) => format!("({inner})?"),
                (m, None) => format!("({inner}){{{m},}}"),
                (m, Some(n)) if m == n => format!("({inner}){{{m}}}"),
                (m, Some(n)) => format!("({inner}){{{m},{n}}}"),
            }
        }
    }
}

/// One character as a Lark string literal (JSON string syntax; controls and DEL escaped).
fn lark_char(c: char) -> String {
    match c {
        '"' => "\"\\\"\"".to_string(),
        '\\' => "\"\\\\\"".to_string(),
        c if (c as u32) < 0x20 || c == '\u{7f}' => format!("\"\\u{:04x}\"", c as u32),
        c => format!("\"{c}\""),
    }
}

/// One character inside a regex class: letters and digits as is, anything else by code point.
fn regex_char(c: char) -> String {
    match c {
        c if c.is_ascii_alphanumeric() => c.to_string(),
        c => format!("\\x{{{:x}}}", c as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(source: &str) -> String {
        to_lark(source).unwrap_err().to_string()
    }

    #[test]
    fn rules_become_lark_rules_of_one_character_terminals() {
        let lark = to_lark(
            "root ::= my-rule+ # a comment\nmy-rule ::= \"ab\" | [^a-c\\x41\\u00e9] | . | (\"x\" \"\\n\")? | x{2,}\nx ::= [0-9]{3} | \"\"\n",
        )
        .unwrap();
        assert_eq!(
            lark,
            "start: (my_rule)+\n\
             my_rule: ((\"a\" \"b\") | /[^a-cA\\x{e9}]/ | /(?s:.)/ | ((\"x\" \"\\u000a\"))? | (x){2,})\n\
             x: ((/[0-9]/){3} | \"\")\n"
        );
    }

    #[test]
    fn rules_continue_after_bars_and_inside_parentheses() {
        let lark = to_lark("root ::= a |\n  b\na ::= (\n \"1\"\n | \"2\" )\nb ::= \"3\"").unwrap();
        assert_eq!(lark, "start: (a | b)\na: (\"1\" | \"2\")\nb: \"3\"\n");
    }

    #[test]
    fn names_are_mapped_apart() {
        let lark = to_lark("root ::= start Foo foo 9x\nstart ::= \"a\"\nFoo ::= \"b\"\nfoo ::= \"c\"\n9x ::= \"d\"").unwrap();
        assert_eq!(
            lark,
            "start: (start_2 foo foo_2 r_9x)\nstart_2: \"a\"\nfoo: \"b\"\nfoo_2: \"c\"\nr_9x: \"d\"\n"
        );
    }

    #[test]
    fn errors_name_the_line_column_and_problem() {
        for (source, expected) in [
            (
                "root = \"a\"",
                "line 1, column 6: expected `::=` after the rule name `root`",
            ),
            (
                "root ::= \"a\"\nx ::= \"b",
                "line 2, column 7: unterminated string literal",
            ),
            (
                "root ::= [a-",
                "line 1, column 10: unterminated character class",
            ),
            (
                "root ::= [z-a]",
                "line 1, column 11: character range 'z'-'a' runs backwards",
            ),
            ("root ::= []", "line 1, column 10: empty character class"),
            (
                "root ::= \"\\q\"",
                "line 1, column 11: unknown escape `\\q`",
            ),
            (
                "root ::= \"\\x4\"",
                "line 1, column 11: `\\x` needs 2 hex digits",
            ),
            ("root ::= \"\\ud800\"", "is not a Unicode character"),
            ("root ::= (\"a\"", "line 1, column 10: unclosed `(`"),
            ("root ::= \"a\")", "line 1, column 13: unmatched `)`"),
            (
                "root ::= * \"a\"",
                "line 1, column 10: `*` has nothing to repeat",
            ),
            (
                "root ::= \"a\"{2,1}",
                "line 1, column 13: repetition `{2,1}`: the maximum is below",
            ),
            (
                "root ::= \"a\"{3001}",
                "repetition count 3001 is above 2000",
            ),
            (
                "root ::= \"a\"{x}",
                "line 1, column 14: expected a repetition count",
            ),
            (
                "root ::= \"a\"*+",
                "line 1, column 14: `+` repeats a repetition",
            ),
            (
                "root ::= thing\n",
                "line 1, column 10: rule `thing` is used but never defined",
            ),
            ("x ::= \"a\"", "the grammar has no `root` rule"),
            (
                "root ::= \"a\"\nroot ::= \"b\"",
                "line 2, column 1: rule `root` is defined twice (first at line 1, column 1)",
            ),
            ("root ::= <think>", "token references"),
            (
                "root ::= \"a\" ; \"b\"",
                "line 1, column 14: expected the end of the line after rule `root`, found ';'",
            ),
        ] {
            let e = err(source);
            assert!(e.contains("`gbnf`"), "{source:?}: {e}");
            assert!(
                e.contains(expected),
                "{source:?}: {e}\n  wanted: {expected}"
            );
        }
    }
}
