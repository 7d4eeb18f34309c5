//! `lmgen chat`: a multi-turn conversation on stdin, as transformers' `transformers chat`.
//!
//! Each line is a user turn. The history is rendered with the chat template
//! (`add_generation_prompt=True`), tokenized without adding special tokens again (the template wrote
//! them, as `apply_chat_template(tokenize=True)` does), the reply is generated with the checkpoint's
//! generation config, streamed to stdout (special tokens skipped), and kept as an assistant message.
//! `/reset` clears the history (the system prompt stays), `/exit` or end of input quits.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result};
use clap::Args;
use lmgen::generation::streamer::Stdout;
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use lmgen_server::ModelArgs;
use serde_json::{json, Map, Value};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system prompt, sent first in every conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum number of new tokens per reply (transformers chat's default: 256).
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Seed of the sampler, where the generation config samples.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The conversation so far.
struct History {
    system: Option<String>,
    messages: Vec<Value>,
}

impl History {
    fn reset(&mut self) {
        self.messages.clear();
        if let Some(system) = &self.system {
            self.messages
                .push(json!({"role": "system", "content": system}));
        }
    }
}

pub fn run(args: ChatArgs) -> Result<()> {
    let options = args.model.load_options()?;
    let model = args.model.model_or_default();
    let pipe = lmgen_server::model_args::load_pipeline(&model, &options)
        .with_context(|| format!("loading `{model}`"))?;
    if pipe.tokenizer.chat_template().is_none() {
        anyhow::bail!(
            "`{model}` has no chat template (chat_template.jinja or tokenizer_config.json)"
        );
    }
    let overrides = GenerationConfig {
        max_new_tokens: Some(args.max_new_tokens),
        ..GenerationConfig::default()
    };
    let mut history = History {
        system: args.system.clone(),
        messages: Vec::new(),
    };
    history.reset();
    let interactive = std::io::stdin().is_terminal();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        match line.trim() {
            "" => continue,
            "/exit" => break,
            "/reset" => {
                history.reset();
                if interactive {
                    eprintln!("(history cleared)");
                }
                continue;
            }
            _ => {}
        }
        history
            .messages
            .push(json!({"role": "user", "content": line}));
        let reply = match reply(&pipe, &history.messages, &overrides, args.seed) {
            Ok(reply) => reply,
            Err(e) => {
                // The turn failed (e.g. the template refuses this conversation): drop it, go on.
                history.messages.pop();
                eprintln!("error: {e:#}");
                continue;
            }
        };
        history
            .messages
            .push(json!({"role": "assistant", "content": reply}));
    }
    Ok(())
}

/// Generates the assistant's next message, printing it as it comes.
fn reply(
    pipe: &Pipeline,
    messages: &[Value],
    overrides: &GenerationConfig,
    seed: Option<u64>,
) -> Result<String> {
    let prompt = pipe
        .tokenizer
        .apply_chat_template(messages, true, &Map::new())?;
    let ids = pipe.tokenizer.encode_with(&prompt, false)?;
    let input = GenerateInput::single(ids);
    Ok(pipe.stream(&input, overrides, seed, Stdout)?)
}
