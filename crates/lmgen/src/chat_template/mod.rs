//! Chat templates: transformers' `apply_chat_template(..., tokenize=False)`, rendered with minijinja.
//!
//! HF: `transformers/utils/chat_template_utils.py` (`_compile_jinja_template`,
//! `render_jinja_template`) and `PreTrainedTokenizerBase.get_chat_template`. The template comes from
//! `chat_template.jinja` (transformers 5 layout; it wins over the config), else `chat_template` in
//! `tokenizer_config.json`: a string, or a list of `{"name", "template"}` (then `"default"` is used,
//! or `"tool_use"` when tools are given); `additional_chat_templates/NAME.jinja` add named ones.
//!
//! The Jinja semantics transformers relies on:
//! - `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])`:
//!   minijinja is sandboxed by construction (a template sees only the values passed in, never host
//!   objects); trim/lstrip blocks are set, `break`/`continue` work (`loop_controls`), `loop.*` vars.
//! - Python methods on strings, dicts and lists (`.strip()`, `.startswith()`, `.items()`, `.get()`)
//!   through minijinja-contrib's pycompat.
//! - `raise_exception(msg)`, `tojson` without HTML escaping, `strftime_now(fmt)`: see `builtins`.
//! - `{% generation %}...{% endgeneration %}` (assistant-token masks) renders its body unchanged.
//! - Variables: `messages`, `tools` and `documents` (`none` when not given), `add_generation_prompt`,
//!   the special tokens (`bos_token`, `eos_token`, ...) and any extra keyword.
//!
//! Dict keys reach the template in the request's order (serde_json's and minijinja's
//! `preserve_order` features), as in Python: it shows in `tojson` of tool schemas.
//! `tests/chat_template_real.rs` holds sixteen families' published templates to transformers'
//! renders.
//!
//! Safety (templates come from model files): a render is bounded by [`ChatTemplateLimits`] — fuel
//! (instructions and allocated data), recursion depth and output size — and fails with an error
//! instead of hanging or exhausting memory.

mod builtins;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Bounds on one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatTemplateLimits {
    /// minijinja fuel: about one unit per instruction and per 64 bytes of data created.
    pub fuel: u64,
    /// Nesting depth of loops, conditions, macro calls and includes.
    pub recursion_limit: usize,
    /// The most bytes a rendered conversation may have.
    pub max_output_bytes: usize,
}

impl Default for ChatTemplateLimits {
    /// 2M fuel (a long conversation with tool schemas takes well under 100k), depth 100,
    /// 16 MiB of output (millions of tokens).
    fn default() -> Self {
        Self {
            fuel: 2_000_000,
            recursion_limit: 100,
            max_output_bytes: 16 << 20,
        }
    }
}

/// A checkpoint's compiled chat template(s).
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    /// Template names in load order (`"default"` for a single template).
    names: Vec<String>,
    limits: ChatTemplateLimits,
    /// What `strftime_now` reads: Unix seconds, or [`SYSTEM_CLOCK`] for the system's clock.
    clock: Arc<AtomicI64>,
}

/// `clock` value for "read the system clock".
const SYSTEM_CLOCK: i64 = i64::MIN;

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("names", &self.names)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The error `raise_exception(msg)` carries, to tell it from errors of the engine.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

impl ChatTemplate {
    /// The template(s) of a checkpoint directory; `cfg` is its parsed `tokenizer_config.json`.
    /// `None` when it has none.
    pub(crate) fn from_dir(dir: &Path, cfg: &Value) -> Result<Option<Self>> {
        let cfg_path = dir.join("tokenizer_config.json");
        let mut named: Vec<(String, String)> = Vec::new();
        let file = dir.join("chat_template.jinja");
        if file.is_file() {
            let source = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
            named.push(("default".into(), source));
        } else {
            match cfg.get("chat_template") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => named.push(("default".into(), s.clone())),
                Some(Value::Array(list)) => {
                    for (i, item) in list.iter().enumerate() {
                        let name = item.get("name").and_then(Value::as_str);
                        let template = item.get("template").and_then(Value::as_str);
                        let (Some(name), Some(template)) = (name, template) else {
                            return Err(Error::Json {
                                path: cfg_path,
                                message: format!(
                                    "`chat_template[{i}]` must be an object with string `name` and `template`"
                                ),
                            });
                        };
                        named.push((name.to_string(), template.to_string()));
                    }
                }
                Some(_) => {
                    return Err(Error::Json {
                        path: cfg_path,
                        message: "`chat_template` must be a string or a list of {name, template}"
                            .into(),
                    })
                }
            }
        }
        let extra_dir = dir.join("additional_chat_templates");
        if extra_dir.is_dir() {
            let entries = std::fs::read_dir(&extra_dir).map_err(|e| Error::io(&extra_dir, e))?;
            let mut files = Vec::new();
            for entry in entries {
                let path = entry.map_err(|e| Error::io(&extra_dir, e))?.path();
                if path.extension().is_some_and(|e| e == "jinja") {
                    files.push(path);
                }
            }
            files.sort();
            for path in files {
                let name = path.file_stem().unwrap_or_default().to_string_lossy();
                let source = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                named.push((name.into_owned(), source));
            }
        }
        if named.is_empty() {
            return Ok(None);
        }
        Self::from_named(named, ChatTemplateLimits::default())
            .map(Some)
            .map_err(|e| Error::ChatTemplate(format!("in `{}`: {e}", dir.display())))
    }

    /// One template (named `"default"`), with the default limits.
    pub fn new(source: &str) -> Result<Self> {
        Self::from_named(
            vec![("default".into(), source.to_string())],
            ChatTemplateLimits::default(),
        )
    }

    /// Named templates (compiled now: a syntax error is a load error, not a render error).
    pub fn from_named(named: Vec<(String, String)>, limits: ChatTemplateLimits) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(limits.recursion_limit);
        env.add_function("raise_exception", |msg: minijinja::Value| {
            Err::<minijinja::Value, _>(
                minijinja::Error::new(ErrorKind::InvalidOperation, msg.to_string())
                    .with_source(Raised(msg.to_string())),
            )
        });
        let clock = Arc::new(AtomicI64::new(SYSTEM_CLOCK));
        let now = Arc::clone(&clock);
        env.add_function("strftime_now", move |format: &str| {
            let pinned = now.load(Ordering::Relaxed);
            builtins::strftime_now(format, (pinned != SYSTEM_CLOCK).then_some(pinned))
        });
        env.add_filter("tojson", builtins::tojson);
        let mut names = Vec::new();
        for (name, source) in named {
            env.add_template_owned(name.clone(), rewrite_generation_blocks(&source))
                .map_err(|e| {
                    Error::ChatTemplate(format!("template `{name}` does not compile: {e}"))
                })?;
            names.push(name);
        }
        Ok(Self {
            env: Arc::new(env),
            names,
            limits,
            clock,
        })
    }

    /// Pins the time `strftime_now` formats to `unix_secs` (UTC), for reproducible renders
    /// (templates such as gpt-oss's and Llama 3's print today's date); `None` goes back to the
    /// system clock. Clones of this template share the setting.
    pub fn pin_clock(&self, unix_secs: Option<i64>) {
        self.clock
            .store(unix_secs.unwrap_or(SYSTEM_CLOCK), Ordering::Relaxed);
    }

    /// The source of the template a conversation renders with (`"tool_use"` when `has_tools`
    /// and the checkpoint has one, else `"default"`), as loaded: the server reads which
    /// tool-call and reasoning markers it writes.
    pub fn source(&self, has_tools: bool) -> Result<String> {
        let name = self.select(has_tools)?;
        self.env
            .get_template(name)
            .map(|t| t.source().to_string())
            .map_err(|e| Error::ChatTemplate(format!("template `{name}`: {e}")))
    }

    /// `get_chat_template(None, tools)`: `"tool_use"` when tools are given and it exists, else
    /// `"default"`.
    fn select(&self, has_tools: bool) -> Result<&str> {
        let has = |n: &str| self.names.iter().any(|m| m == n);
        if has_tools && has("tool_use") {
            Ok("tool_use")
        } else if has("default") {
            Ok("default")
        } else {
            Err(Error::ChatTemplate(format!(
                "this model has several chat templates ({}) and none is named `default`",
                self.names.join(", ")
            )))
        }
    }

    /// Renders a conversation. `vars` are the template variables besides `messages` and
    /// `add_generation_prompt` (special tokens, `tools`, `documents`, extra keywords).
    pub fn render(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        mut vars: Map<String, Value>,
    ) -> Result<String> {
        for reserved in ["messages", "add_generation_prompt"] {
            if vars.contains_key(reserved) {
                return Err(Error::ChatTemplate(format!(
                    "`{reserved}` is an argument of apply_chat_template, not an extra template variable"
                )));
            }
        }
        let tools = vars.remove("tools").unwrap_or(Value::Null);
        let documents = vars.remove("documents").unwrap_or(Value::Null);
        let name = self.select(!tools.is_null())?;
        vars.insert("messages".into(), Value::from(messages.to_vec()));
        vars.insert("tools".into(), tools);
        vars.insert("documents".into(), documents);
        vars.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        let template = self
            .env
            .get_template(name)
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        let mut out = CappedWriter {
            buf: Vec::new(),
            cap: self.limits.max_output_bytes,
            overflowed: false,
        };
        let ctx = minijinja::Value::from(Serde(&Value::Object(vars)));
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|e| Error::ChatTemplate(format!("rendered text is not UTF-8: {e}"))),
            Err(e) => Err(self.render_error(&e, out.overflowed)),
        }
    }

    fn render_error(&self, e: &minijinja::Error, overflowed: bool) -> Error {
        if overflowed {
            return Error::ChatTemplate(format!(
                "the rendered conversation exceeds the limit of {} bytes",
                self.limits.max_output_bytes
            ));
        }
        if e.kind() == ErrorKind::OutOfFuel {
            return Error::ChatTemplate(format!(
                "rendering ran out of fuel ({} units): the template loops or allocates too much",
                self.limits.fuel
            ));
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(raised) = s.downcast_ref::<Raised>() {
                return Error::ChatTemplate(raised.0.clone());
            }
            source = s.source();
        }
        Error::ChatTemplate(e.to_string())
    }
}

/// The output of a render, failing once it would pass `cap` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `{% generation %}` / `{% endgeneration %}` (transformers' `AssistantTracker` extension, which
/// only records where assistant tokens are) become `{% if true %}` / `{% endif %}`, keeping their
/// whitespace control.
fn rewrite_generation_blocks(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i + 2]);
        let tag = &rest[i + 2..];
        let control = if tag.starts_with(['-', '+']) { 1 } else { 0 };
        let body = tag[control..].trim_start();
        out.push_str(&tag[..tag.len() - body.len()]);
        let word_end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        rest = match &body[..word_end] {
            "generation" => {
                out.push_str("if true");
                &body[word_end..]
            }
            "endgeneration" => {
                out.push_str("endif");
                &body[word_end..]
            }
            _ => body,
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_plain_blocks() {
        assert_eq!(
            rewrite_generation_blocks("a{%- generation %}b{% endgeneration -%}c{{ x }}{%if y%}"),
            "a{%- if true %}b{% endif -%}c{{ x }}{%if y%}"
        );
    }
}
