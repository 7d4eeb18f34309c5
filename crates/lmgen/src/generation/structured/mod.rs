//! Structured output: generated text that must match a JSON schema, a regular expression, a
//! Lark grammar or a GBNF grammar (llama.cpp's; translated to Lark, see [`gbnf`]), enforced token by token with [llguidance](https://github.com/guidance-ai/llguidance).
//!
//! A [`StructuredOutput`] is built once per tokenizer (it indexes every token's bytes in a trie);
//! [`StructuredOutput::processor`] compiles a [`Grammar`] into a [`GrammarLogitsProcessor`], an
//! ordinary logits processor. Added to [`GenerateOptions::logits_processors`] (or to an engine
//! request's), it composes with every decoding mode: greedy, sampling, beam search and its family,
//! contrastive search, DoLa, and assisted decoding (the target's verification sees the masked
//! scores, so a draft token the grammar forbids is rejected like any other mismatch).
//!
//! The processor runs after transformers' built-in processors and before the sampling warpers,
//! as every user processor does. When the grammar is complete it allows only the end-of-sequence
//! tokens; when `max_new_tokens` ends the output first, the text is a prefix of a valid one.
//!
//! [`GenerateOptions::logits_processors`]: crate::generation::GenerateOptions::logits_processors

pub mod gbnf;
mod processor;
mod tok_env;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::ParserFactory;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use crate::TokenId;

pub use processor::GrammarLogitsProcessor;

/// What the generated text must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Grammar {
    /// A JSON value valid under this JSON Schema (draft 2020-12 keywords as llguidance reads
    /// them: `type`, `properties`, `required`, `enum`, `const`, `items`, `minItems`, `maxItems`,
    /// `pattern`, `$ref`/`$defs`, `anyOf`, `oneOf`, numeric bounds, ...). A keyword llguidance
    /// cannot enforce is an error when the grammar is compiled, never ignored.
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// Text matching this regular expression as a whole (Rust `regex` syntax).
    Regex(String),
    /// A Lark grammar (llguidance's dialect: `start: ...` rules, regex terminals, `%json` ...).
    Lark(String),
    /// A GBNF grammar (llama.cpp's format: `root ::= ...` rules), translated to Lark.
    Gbnf(String),
}

impl Grammar {
    /// The name used in error messages and in JSON-lines requests.
    pub fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "json_schema",
            Grammar::JsonObject => "json_object",
            Grammar::Regex(_) => "regex",
            Grammar::Lark(_) => "grammar",
            Grammar::Gbnf(_) => "gbnf",
        }
    }

    fn to_llguidance(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            Grammar::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_whitespace(schema))
            }
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(with_whitespace(
                &serde_json::json!({"type": "object"}),
            )),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            Grammar::Gbnf(gbnf) => TopLevelGrammar::from_lark(gbnf::to_lark(gbnf)?),
        })
    }
}

/// Whitespace a JSON grammar allows between tokens unless the schema's `x-guidance` says
/// otherwise: up to 20 spaces, tabs or newlines per gap (as llama.cpp's JSON grammars bound it),
/// so pretty-printed JSON is allowed but a model cannot run on in whitespace forever.
/// `"x-guidance": {"whitespace_flexible": false}` asks for compact JSON.
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,20}";

fn with_whitespace(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_pattern": JSON_WHITESPACE}));
    }
    schema
}

/// The grammar compiler of one tokenizer; cheap to clone, build it once per model.
#[derive(Clone)]
pub struct StructuredOutput {
    factory: Arc<ParserFactory>,
    eos_token_ids: Vec<TokenId>,
}

impl std::fmt::Debug for StructuredOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuredOutput")
            .field(
                "vocab_size",
                &self.factory.tok_env().tok_trie().vocab_size(),
            )
            .field("eos_token_ids", &self.eos_token_ids)
            .finish()
    }
}

impl StructuredOutput {
    /// Indexes `tokenizer`'s tokens. `eos_token_ids` are the tokens that end a sequence (the
    /// resolved `eos_token_id` of the generation config); a complete grammar allows exactly
    /// these, so it must not be empty.
    pub fn new(tokenizer: &Tokenizer, eos_token_ids: &[TokenId]) -> Result<Self> {
        let Some(&eos) = eos_token_ids.first() else {
            return Err(Error::config(
                "structured output needs an `eos_token_id` to end the text when the grammar is \
                 complete; set it in generation_config.json or the request",
            ));
        };
        let env = tok_env::tok_env(tokenizer, eos)?;
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::input(format!("structured output: {e}")))?;
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            eos_token_ids: eos_token_ids.to_vec(),
        })
    }

    /// Compiles `grammar`; an invalid schema, regex or grammar is an [`Error::Input`] naming
    /// the grammar's kind and llguidance's message.
    pub fn processor(&self, grammar: &Grammar) -> Result<GrammarLogitsProcessor> {
        let parser = self
            .factory
            .create_parser(grammar.to_llguidance()?)
            .map_err(|e| Error::input(format!("`{}` does not compile: {e}", grammar.kind())))?;
        Ok(GrammarLogitsProcessor::new(
            llguidance::Matcher::new(Ok(parser)),
            self.eos_token_ids.clone(),
        ))
    }
}
