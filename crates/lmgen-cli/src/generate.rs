//! `lmgen generate`: continue a prompt, or answer JSON-lines requests.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use lmgen::generation::config::TokenIds;
use lmgen::generation::streamer::{Stdout, TextStreamer};
use lmgen::generation::structured::Grammar;
use lmgen::generation::GenerateOptions;
use lmgen::{GenerateOutput, GenerationConfig, Pipeline};
use lmgen_server::ModelArgs;
use serde_json::Value;

use crate::jsonl;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text; repeat for a batch (left-padded, as transformers does).
    #[arg(long, short = 'p')]
    pub prompt: Vec<String>,
    /// Read JSON-lines requests from FILE (`-` for stdin) and write one JSON response per line.
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    pub request: Option<PathBuf>,
    /// A generation_config.json whose fields override the checkpoint's (flags override both).
    #[arg(long, value_name = "FILE")]
    pub generation_config: Option<PathBuf>,
    /// Seed of the sampler (same seed, same output). Without it, sampling draws a fresh seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the whole output at the end instead of streaming it as it is generated.
    #[arg(long)]
    pub no_stream: bool,
    /// Assisted decoding: a draft checkpoint (directory or model id). With another tokenizer
    /// (another vocabulary size) the text is re-encoded between the two (universal assisted decoding).
    #[arg(long, value_name = "MODEL")]
    pub assistant_model: Option<String>,
    /// Print statistics to stderr at the end (assisted decoding: tokens drafted and accepted).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[command(flatten)]
    pub structured: StructuredFlags,
    #[command(flatten)]
    pub gen: GenerationFlags,
}

/// Structured output: the generated text must match one of these (see
/// `lmgen::generation::structured`).
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Structured output")]
#[group(multiple = false)]
pub struct StructuredFlags {
    /// A JSON Schema file: the output is a JSON value valid under it.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// The output is a JSON object (any keys).
    #[arg(long)]
    pub json_object: bool,
    /// The output matches this regular expression as a whole.
    #[arg(long, value_name = "REGEX")]
    pub regex: Option<String>,
    /// A Lark grammar file (llguidance's dialect): the output is a sentence of it.
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    /// A GBNF grammar file (llama.cpp's format, `root ::= ...`): the output is a sentence of it.
    #[arg(long, value_name = "FILE")]
    pub gbnf: Option<PathBuf>,
}

impl StructuredFlags {
    /// The grammar the flags ask for, files read and parsed.
    pub fn grammar(&self) -> Result<Option<Grammar>> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))
        };
        Ok(if let Some(path) = &self.json_schema {
            let schema = serde_json::from_str(&read(path)?)
                .with_context(|| format!("`--json-schema {}` is not valid JSON", path.display()))?;
            Some(Grammar::JsonSchema(schema))
        } else if self.json_object {
            Some(Grammar::JsonObject)
        } else if let Some(rx) = &self.regex {
            Some(Grammar::Regex(rx.clone()))
        } else if let Some(path) = &self.grammar {
            Some(Grammar::Lark(read(path)?))
        } else if let Some(path) = &self.gbnf {
            Some(Grammar::Gbnf(read(path)?))
        } else {
            None
        })
    }
}

/// The common generation fields as flags; each maps to the `GenerationConfig` field of the same name.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "Generation (GenerationConfig fields)")]
pub struct GenerationFlags {
    /// Maximum number of new tokens (default: 20 new tokens, as transformers).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Maximum total length, prompt included.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Minimum number of new tokens before EOS may end the output.
    #[arg(long)]
    pub min_new_tokens: Option<usize>,
    /// Minimum total length before EOS may end the output.
    #[arg(long)]
    pub min_length: Option<usize>,
    /// Sample instead of greedy decoding.
    #[arg(long)]
    pub do_sample: Option<bool>,
    /// Sampling temperature (> 0; lower is sharper).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample among the k most likely tokens (transformers' default when sampling: 50; 0 disables).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Drop tokens less likely than min_p times the most likely one.
    #[arg(long)]
    pub min_p: Option<f64>,
    /// Locally typical sampling mass.
    #[arg(long)]
    pub typical_p: Option<f64>,
    /// Penalty (> 1) or reward (< 1) for tokens already present (CTRL).
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// Ban repeating any n-gram of this size.
    #[arg(long)]
    pub no_repeat_ngram_size: Option<usize>,
    /// Number of beams (beam search).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Contrastive search: weight of the degeneration penalty (with `--top-k` > 1, no sampling).
    #[arg(long)]
    pub penalty_alpha: Option<f64>,
    /// DoLa decoding: layers to contrast with the final one, "low", "high" or indices "0,2".
    #[arg(long)]
    pub dola_layers: Option<String>,
    /// Number of outputs per prompt (needs sampling or beams).
    #[arg(long)]
    pub num_return_sequences: Option<usize>,
    /// Stop when the text ends with this string (kept in the output, as transformers); repeatable.
    #[arg(long = "stop")]
    pub stop_strings: Vec<String>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub max_time: Option<f64>,
    /// EOS token id; repeat for several.
    #[arg(long)]
    pub eos_token_id: Vec<u32>,
    /// Pad token id for batches and finished rows (default: the first EOS id).
    #[arg(long)]
    pub pad_token_id: Option<u32>,
    /// Assisted decoding: draft tokens per round (default 20).
    #[arg(long)]
    pub num_assistant_tokens: Option<usize>,
    /// How the draft length changes: constant, heuristic (+2 when all accepted, else -1) or
    /// heuristic_transient.
    #[arg(long)]
    pub num_assistant_tokens_schedule: Option<String>,
    /// The draft stops below this probability of its own token (default 0.4; 0 disables).
    #[arg(long)]
    pub assistant_confidence_threshold: Option<f64>,
    /// Prompt lookup decoding: copy this many candidate tokens from earlier in the text.
    #[arg(long)]
    pub prompt_lookup_num_tokens: Option<usize>,
    /// Prompt lookup: the longest n-gram to match (default 2).
    #[arg(long)]
    pub max_matching_ngram_size: Option<usize>,
    /// Self-speculative decoding: the first N layers of the model are the draft.
    #[arg(long)]
    pub assistant_early_exit: Option<usize>,
}

impl GenerationFlags {
    /// Sets the `GenerationConfig` field of each flag given; the others stay as they are.
    fn apply(&self, c: &mut GenerationConfig) {
        macro_rules! set {
            ($($field:ident),* $(,)?) => {
                $(
                    if let Some(v) = &self.$field {
                        c.$field = Some(v.clone());
                    }
                )*
            };
        }
        set!(
            max_new_tokens,
            max_length,
            min_new_tokens,
            min_length,
            do_sample,
            temperature,
            top_k,
            top_p,
            min_p,
            typical_p,
            repetition_penalty,
            no_repeat_ngram_size,
            num_beams,
            penalty_alpha,
            num_return_sequences,
            max_time,
            pad_token_id,
            num_assistant_tokens,
            num_assistant_tokens_schedule,
            assistant_confidence_threshold,
            prompt_lookup_num_tokens,
            max_matching_ngram_size,
            assistant_early_exit,
        );
        if let Some(layers) = &self.dola_layers {
            c.dola_layers = Some(dola_layers(layers));
        }
        if !self.stop_strings.is_empty() {
            c.stop_strings = Some(self.stop_strings.clone());
        }
        c.eos_token_id = match self.eos_token_id.as_slice() {
            [] => c.eos_token_id.take(),
            [one] => Some(TokenIds::One(*one)),
            many => Some(TokenIds::Many(many.to_vec())),
        };
    }
}

/// `--dola-layers`: "low" / "high" as given, "0,2" as a list of indices; anything else is passed on
/// as a string, which the config check then names.
fn dola_layers(flag: &str) -> Value {
    if flag == "low" || flag == "high" {
        return Value::from(flag);
    }
    flag.split(',')
        .map(|i| i.trim().parse::<i64>().ok())
        .collect::<Option<Vec<_>>>()
        .map_or_else(|| Value::from(flag), Value::from)
}

/// `--generation-config FILE` then the flags, as one overrides config.
fn overrides(args: &GenerateArgs) -> Result<GenerationConfig> {
    let mut config = match &args.generation_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            let value: Value = serde_json::from_str(&text)
                .with_context(|| format!("`{}` is not valid JSON", path.display()))?;
            GenerationConfig::from_json(&value, lmgen::generation::config::UnknownFields::Keep)
                .with_context(|| format!("in `{}`", path.display()))?
        }
        None => GenerationConfig::default(),
    };
    args.gen.apply(&mut config);
    Ok(config)
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let options = args.model.load_options()?;
    let overrides = overrides(&args)?;
    if let Some(path) = &args.request {
        if args.structured.grammar()?.is_some() {
            anyhow::bail!(
                "`--json-schema`, `--json-object`, `--regex`, `--grammar` and `--gbnf` apply to `--prompt`; \
                 with `--request` give `\"structured\"` in each request"
            );
        }
        return jsonl::serve_generate(path, &args.model, &options, &overrides);
    }
    let model = args.model.model_or_default();
    let pipe = lmgen_server::model_args::load_pipeline(&model, &options)
        .with_context(|| format!("loading `{model}`"))?;
    let assistant = match &args.assistant_model {
        Some(id) => Some(
            // `--gguf-file` and `--revision` name the main model's files, not the assistant's.
            lmgen_server::model_args::load_pipeline(id, &ModelArgs::other_model_options(&options))
                .with_context(|| format!("loading the assistant model `{id}`"))?,
        ),
        None => None,
    };
    let structured = match args.structured.grammar()? {
        Some(grammar) => Some((pipe.structured_output(&overrides)?, grammar)),
        None => None,
    };
    let generate_options = || -> Result<GenerateOptions<'_>> {
        let mut o = match &assistant {
            Some(a) => pipe.assisted_by(a),
            None => GenerateOptions::default(),
        };
        o.seed = args.seed;
        if let Some((compiler, grammar)) = &structured {
            o.logits_processors
                .push(Box::new(compiler.processor(grammar)?));
        }
        Ok(o)
    };
    let prompts = if args.prompt.is_empty() {
        vec![String::new()]
    } else {
        args.prompt.clone()
    };
    let single = prompts.len() == 1 && overrides.num_return_sequences.unwrap_or(1) == 1;
    // A decoder-only model continues the prompt, which is printed first; an encoder-decoder
    // model's output (a translation, a summary) is new text alone, as transformers'
    // text2text-generation pipeline returns it.
    let echo = |i: usize| {
        if pipe.is_encoder_decoder() {
            ""
        } else {
            prompts[i].as_str()
        }
    };
    let started = Instant::now();
    if single && !args.no_stream {
        // Stream to the terminal as transformers' TextStreamer does.
        print!("{}", echo(0));
        std::io::stdout().flush()?;
        let input = pipe.encode_prompts(&prompts[..1], &overrides)?;
        let mut streamer =
            TextStreamer::with_sink(pipe.tokenizer.clone(), Pipeline::STREAM, Stdout);
        let mut options = generate_options()?;
        options.streamer = Some(&mut streamer);
        let out = pipe.generate_with(&input, &overrides, options)?;
        if args.verbose {
            report(&out, started.elapsed());
        }
        return Ok(());
    }
    let input = pipe.encode_prompts(&prompts, &overrides)?;
    let out = pipe.generate_with(&input, &overrides, generate_options()?)?;
    let per_prompt = out.sequences.len() / prompts.len();
    let mut stdout = std::io::stdout().lock();
    for i in 0..out.sequences.len() {
        let text = pipe.tokenizer.decode(out.generated(i), true)?;
        if out.sequences.len() > 1 {
            writeln!(stdout, "[{i}] {}{text}", echo(i / per_prompt))?;
        } else {
            writeln!(stdout, "{}{text}", echo(0))?;
        }
    }
    if args.verbose {
        report(&out, started.elapsed());
    }
    Ok(())
}

/// `--verbose`: tokens, time and, for assisted decoding, the acceptance statistics, on stderr.
fn report(out: &GenerateOutput, elapsed: Duration) {
    let generated: usize = (0..out.sequences.len())
        .map(|i| out.generated(i).len())
        .sum();
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "\n{generated} tokens in {secs:.2} s ({:.1} tokens/s)",
        generated as f64 / secs.max(1e-9)
    );
    if let Some(s) = &out.assisted {
        eprintln!(
            "assisted decoding: {} rounds, {} tokens drafted, {} accepted ({:.1}%), next draft length {}",
            s.rounds,
            s.drafted,
            s.accepted,
            100.0 * s.acceptance_rate(),
            s.num_assistant_tokens
        );
    }
}
