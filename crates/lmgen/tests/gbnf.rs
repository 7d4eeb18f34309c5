//! GBNF grammars (llama.cpp's format) enforced on the golden tiny Llama: grammars written like
//! llama.cpp's `grammars/` examples (JSON, arithmetic, a list, chess moves with repetition
//! counts), seeded samples at temperature 1 (and beams), and every finished output accepted by an
//! independent matcher: the same grammar written again as Rust combinators and matched by
//! backtracking over every alternative (so neither llguidance nor the translator decides).

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::Path;
use std::sync::OnceLock;

use lmgen::generation::config::UnknownFields;
use lmgen::generation::structured::{Grammar, StructuredOutput};
use lmgen::generation::GenerateOptions;
use lmgen::{GenerationConfig, Pipeline};
use serde_json::json;

fn pipe() -> &'static Pipeline {
    static LLAMA: OnceLock<Pipeline> = OnceLock::new();
    LLAMA.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/models/llama");
        Pipeline::from_pretrained(dir.to_str().unwrap()).unwrap()
    })
}

fn compiler() -> &'static StructuredOutput {
    static C: OnceLock<StructuredOutput> = OnceLock::new();
    C.get_or_init(|| {
        pipe()
            .structured_output(&GenerationConfig::default())
            .unwrap()
    })
}

/// Samples (temperature 1) under `gbnf`; each sequence's text and whether it ended with EOS.
fn sample(gbnf: &str, max_new_tokens: usize, seed: u64) -> Vec<(String, bool)> {
    let fields =
        json!({"do_sample": true, "max_new_tokens": max_new_tokens, "num_return_sequences": 2});
    generate(gbnf, fields, seed)
}

/// Generates under `gbnf` with `fields`; each returned sequence's text and whether it ended.
fn generate(gbnf: &str, fields: serde_json::Value, seed: u64) -> Vec<(String, bool)> {
    let p = pipe();
    let input = p
        .encode_prompts(
            &["Once upon a time".to_string()],
            &GenerationConfig::default(),
        )
        .unwrap();
    let processor = compiler()
        .processor(&Grammar::Gbnf(gbnf.to_string()))
        .unwrap();
    let options = GenerateOptions {
        seed: Some(seed),
        logits_processors: vec![Box::new(processor)],
        ..Default::default()
    };
    let config = GenerationConfig::from_json(&fields, UnknownFields::Reject).unwrap();
    let out = p.generate_with(&input, &config, options).unwrap();
    let eos = p.config_with(&GenerationConfig::default()).eos_token_ids();
    (0..out.sequences.len())
        .map(|i| {
            let gen = out.generated(i);
            let end = gen.iter().position(|t| eos.contains(t));
            let text = p
                .tokenizer
                .decode(&gen[..end.unwrap_or(gen.len())], false)
                .unwrap();
            (text, end.is_some())
        })
        .collect()
}

/// A grammar as Rust combinators, matched by backtracking: the set of ends of every match.
enum P {
    Lit(&'static str),
    Class(fn(char) -> bool),
    Seq(Vec<P>),
    Alt(Vec<P>),
    Rep(Box<P>, usize, Option<usize>),
    /// Rule `i` of the grammar.
    Rule(usize),
}

fn lit(s: &'static str) -> P {
    P::Lit(s)
}
fn seq(v: Vec<P>) -> P {
    P::Seq(v)
}
fn alt(v: Vec<P>) -> P {
    P::Alt(v)
}
fn rep(p: P, min: usize, max: Option<usize>) -> P {
    P::Rep(Box::new(p), min, max)
}
fn opt(p: P) -> P {
    rep(p, 0, Some(1))
}

/// Every end position of a match of `p` in `s` starting at `at` (positions are char indices).
fn ends(rules: &[P], p: &P, s: &[char], at: usize) -> Vec<usize> {
    let mut out: Vec<usize> = match p {
        P::Lit(l) => {
            let l: Vec<char> = l.chars().collect();
            match s[at..].starts_with(&l) {
                true => vec![at + l.len()],
                false => vec![],
            }
        }
        P::Class(f) => match s.get(at) {
            Some(&c) if f(c) => vec![at + 1],
            _ => vec![],
        },
        P::Seq(items) => items.iter().fold(vec![at], |starts, item| {
            starts
                .into_iter()
                .flat_map(|a| ends(rules, item, s, a))
                .collect()
        }),
        P::Alt(alts) => alts.iter().flat_map(|a| ends(rules, a, s, at)).collect(),
        P::Rep(inner, min, max) => {
            // Positions after k iterations; past `min`, a position reached before is not
            // followed again (from there it has no more iterations left than the first time).
            let mut all: Vec<usize> = Vec::new();
            let mut frontier = vec![at];
            for k in 0.. {
                if k >= *min {
                    frontier.retain(|e| !all.contains(e));
                    all.extend(frontier.iter().copied());
                }
                if frontier.is_empty() || max.is_some_and(|m| k >= m) {
                    break;
                }
                let mut next: Vec<usize> = frontier
                    .iter()
                    .flat_map(|&a| ends(rules, inner, s, a))
                    .collect();
                next.sort_unstable();
                next.dedup();
                frontier = next;
            }
            all
        }
        P::Rule(i) => ends(rules, &rules[*i], s, at),
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether rule 0 of `rules` matches all of `text`.
fn accepts(rules: &[P], text: &str) -> bool {
    let s: Vec<char> = text.chars().collect();
    ends(rules, &P::Rule(0), &s, 0).contains(&s.len())
}

/// Samples under `gbnf` with several seeds: every finished output is accepted by `rules`, and
/// enough of them finish for the check to mean something.
fn check(name: &str, gbnf: &str, rules: &[P], max_new_tokens: usize) {
    let mut finished = 0;
    let mut total = 0;
    for seed in 0..8 {
        for (text, ended) in sample(gbnf, max_new_tokens, seed) {
            total += 1;
            if ended {
                finished += 1;
                assert!(
                    accepts(rules, &text),
                    "{name}: {text:?} is not in the grammar"
                );
            }
        }
    }
    assert!(
        finished * 2 >= total,
        "{name}: only {finished} of {total} outputs finished"
    );
}

#[test]
fn arithmetic() {
    let gbnf = r#"# Arithmetic, as llama.cpp's arithmetic.gbnf (bounded)
root ::= expr "=" ws num
expr ::= term ([-+*/] term){0,2}
term ::= num | "(" ws expr ")" ws
num  ::= [0-9]{1,3} ws
ws   ::= [ \t]?
"#;
    let digit = || P::Class(|c| c.is_ascii_digit());
    let rules = [
        // 0 root, 1 expr, 2 term, 3 num, 4 ws
        seq(vec![P::Rule(1), lit("="), P::Rule(4), P::Rule(3)]),
        seq(vec![
            P::Rule(2),
            rep(
                seq(vec![P::Class(|c| "-+*/".contains(c)), P::Rule(2)]),
                0,
                Some(2),
            ),
        ]),
        alt(vec![
            P::Rule(3),
            seq(vec![lit("("), P::Rule(4), P::Rule(1), lit(")"), P::Rule(4)]),
        ]),
        seq(vec![rep(digit(), 1, Some(3)), P::Rule(4)]),
        opt(P::Class(|c| c == ' ' || c == '\t')),
    ];
    assert!(accepts(&rules, "( 1 +22)*3= 4"));
    assert!(!accepts(&rules, "1+2+3+4=5"));
    check("arithmetic", gbnf, &rules, 96);
}

#[test]
fn list() {
    let gbnf = "# A list, as llama.cpp's list.gbnf\nroot ::= item{1,3}\nitem ::= \"- \" [^\\r\\n\\x0b\\x0c\\u0085\\u2028\\u2029]{1,8} \"\\n\"\n";
    let rules = [
        rep(P::Rule(1), 1, Some(3)),
        seq(vec![
            lit("- "),
            rep(
                P::Class(|c| !"\r\n\u{b}\u{c}\u{85}\u{2028}\u{2029}".contains(c)),
                1,
                Some(8),
            ),
            lit("\n"),
        ]),
    ];
    assert!(accepts(&rules, "- a b\n- ü\n"));
    assert!(!accepts(&rules, "- \n"));
    check("list", gbnf, &rules, 96);
}

#[test]
fn chess_moves_with_repetition_counts() {
    let gbnf = r#"# Chess moves, as llama.cpp's chess.gbnf, with counted repetitions
root    ::= "1. " move " " move "\n" ([1-9] [0-9]? ". " move " " move "\n"){0,2}
move    ::= (pawn | nonpawn | castle) [+#]?
pawn    ::= ([a-h] "x")? [a-h] [1-8] ("=" [NBKQR])?
nonpawn ::= [NBKQR] [a-h]? [1-8]? "x"? [a-h] [1-8]
castle  ::= "O-O" ("-O")?
"#;
    let file = || P::Class(|c| ('a'..='h').contains(&c));
    let rank = || P::Class(|c| ('1'..='8').contains(&c));
    let piece = || P::Class(|c| "NBKQR".contains(c));
    let turn = |number: P| {
        seq(vec![
            number,
            lit(". "),
            P::Rule(1),
            lit(" "),
            P::Rule(1),
            lit("\n"),
        ])
    };
    let rules = [
        // 0 root, 1 move
        seq(vec![
            turn(lit("1")),
            rep(
                turn(seq(vec![
                    P::Class(|c| ('1'..='9').contains(&c)),
                    opt(P::Class(|c| c.is_ascii_digit())),
                ])),
                0,
                Some(2),
            ),
        ]),
        seq(vec![
            alt(vec![
                seq(vec![
                    opt(seq(vec![file(), lit("x")])),
                    file(),
                    rank(),
                    opt(seq(vec![lit("="), piece()])),
                ]),
                seq(vec![
                    piece(),
                    opt(file()),
                    opt(rank()),
                    opt(lit("x")),
                    file(),
                    rank(),
                ]),
                seq(vec![lit("O-O"), opt(lit("-O"))]),
            ]),
            opt(P::Class(|c| c == '+' || c == '#')),
        ]),
    ];
    assert!(accepts(&rules, "1. e4 e5\n2. Nf3 Nc6\n10. O-O-O Qxd8#\n"));
    assert!(!accepts(&rules, "1. e9 e5\n"));
    check("chess", gbnf, &rules, 96);
    // Beam search: every returned beam is a sentence of the grammar too.
    let beams = generate(
        gbnf,
        json!({"num_beams": 4, "num_return_sequences": 4, "max_new_tokens": 96}),
        0,
    );
    assert_eq!(beams.len(), 4);
    for (text, ended) in beams {
        assert!(ended, "chess beam: {text:?}");
        assert!(
            accepts(&rules, &text),
            "chess beam: {text:?} is not in the grammar"
        );
    }
}

#[test]
fn json() {
    let gbnf = r#"# JSON, as llama.cpp's json.gbnf (numbers and whitespace bounded)
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

ws ::= | " " | "\n" [ \t]{0,20}
"#;
    let hex = || P::Class(|c| c.is_ascii_hexdigit());
    let digit = || P::Class(|c| c.is_ascii_digit());
    let sep = |item: P, item2: P| {
        seq(vec![
            item,
            rep(seq(vec![lit(","), P::Rule(6), item2]), 0, None),
        ])
    };
    let member = || seq(vec![P::Rule(4), lit(":"), P::Rule(6), P::Rule(1)]);
    let rules = [
        // 0 root, 1 value, 2 object, 3 array, 4 string, 5 number, 6 ws
        P::Rule(2),
        alt(vec![
            P::Rule(2),
            P::Rule(3),
            P::Rule(4),
            P::Rule(5),
            seq(vec![
                alt(vec![lit("true"), lit("false"), lit("null")]),
                P::Rule(6),
            ]),
        ]),
        seq(vec![
            lit("{"),
            P::Rule(6),
            opt(sep(member(), member())),
            lit("}"),
            P::Rule(6),
        ]),
        seq(vec![
            lit("["),
            P::Rule(6),
            opt(sep(P::Rule(1), P::Rule(1))),
            lit("]"),
            P::Rule(6),
        ]),
        seq(vec![
            lit("\""),
            rep(
                alt(vec![
                    P::Class(|c| c != '"' && c != '\\' && c != '\u{7f}' && c >= '\u{20}'),
                    seq(vec![
                        lit("\\"),
                        alt(vec![
                            P::Class(|c| "\"\\/bfnrt".contains(c)),
                            seq(vec![lit("u"), rep(hex(), 4, Some(4))]),
                        ]),
                    ]),
                ]),
                0,
                None,
            ),
            lit("\""),
            P::Rule(6),
        ]),
        seq(vec![
            opt(lit("-")),
            alt(vec![
                digit(),
                seq(vec![
                    P::Class(|c| ('1'..='9').contains(&c)),
                    rep(digit(), 0, Some(15)),
                ]),
            ]),
            opt(seq(vec![lit("."), rep(digit(), 1, None)])),
            opt(seq(vec![
                P::Class(|c| c == 'e' || c == 'E'),
                opt(P::Class(|c| c == '-' || c == '+')),
                digit(),
                rep(P::Class(|c| ('1'..='9').contains(&c)), 0, Some(15)),
            ])),
            P::Rule(6),
        ]),
        alt(vec![
            lit(""),
            lit(" "),
            seq(vec![
                lit("\n"),
                rep(P::Class(|c| c == ' ' || c == '\t'), 0, Some(20)),
            ]),
        ]),
    ];
    assert!(accepts(
        &rules,
        "{\"a\": [1, -2.5e3, \"x\\u00e9\"], \"b\":{}}"
    ));
    assert!(!accepts(&rules, "{\"a\": 01}"));
    let mut finished = 0;
    for seed in 0..6 {
        for (text, ended) in sample(gbnf, 160, seed) {
            if ended {
                finished += 1;
                assert!(
                    accepts(&rules, &text),
                    "json: {text:?} is not in the grammar"
                );
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(v.is_object(), "{text:?}");
            } else {
                assert!(text.starts_with('{'), "{text:?}");
            }
        }
    }
    assert!(finished > 0, "json: no output finished");
}

#[test]
fn invalid_gbnf_is_an_error_naming_gbnf_and_the_place() {
    let err = compiler()
        .processor(&Grammar::Gbnf("root ::= \"a\"\nx ::= [b-a]".into()))
        .unwrap_err();
    assert_eq!(err.field(), Some("gbnf"), "{err}");
    assert!(err.to_string().contains("line 2, column 8"), "{err}");
}
