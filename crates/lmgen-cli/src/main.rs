//! `lmgen`: text generation with Hugging Face checkpoints, as transformers' `generate()`.

mod bench;
mod chat;
mod generate;
mod init_random;
mod serve;
mod tokenize;
mod transcribe;
mod watermark;

use clap::{Parser, Subcommand};
use lmgen_cli::{jsonl, logits};

/// Generate text with Hugging Face checkpoints, token for token as transformers' generate().
#[derive(Parser, Debug)]
#[command(name = "lmgen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
enum Command {
    /// Generate a continuation of a prompt, or answer JSON-lines requests (--request).
    Generate(generate::GenerateArgs),
    /// Run logits processors on given scores, one JSON request per line (--request).
    Logits(logits::LogitsArgs),
    /// Tokenize text or render chat templates, one JSON request per line (--request).
    Tokenize(tokenize::TokenizeArgs),
    /// Chat with a model on stdin: one user turn per line, `/reset`, `/exit`.
    Chat(chat::ChatArgs),
    /// Measure prefill and decode speed, time to first token, peak memory and the fraction of
    /// the memory-bandwidth bound, on fixed token ids.
    Bench(bench::BenchArgs),
    /// Write a random-weight checkpoint of a given config.json (benchmarks of real shapes).
    InitRandom(init_random::InitRandomArgs),
    /// Speech to text with a Whisper checkpoint: transcribe (or translate) an audio file,
    /// printing each segment as it is decoded.
    Transcribe(transcribe::TranscribeArgs),
    /// Score token ids for a watermark (SynthID's g-values, masks and Bayesian detector, or the
    /// green-list z-score), one JSON request per line (--request).
    Watermark(watermark::WatermarkArgs),
    /// Serve the OpenAI API (completions, chat, models, health, metrics) with continuous batching.
    Serve(lmgen_server::ServeArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LMGEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // candle's elementwise and quantized CPU ops run on a pool whose idle threads spin; on a
    // machine whose cores are shared (other processes, or our own rayon threads doing the matrix
    // products) a descheduled worker makes the others spin through their time slices (measured:
    // 30x slower decode). Those ops are small next to the matrix products, which run on rayon, so
    // keep candle's pool to the calling thread unless the user chose otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::InitRandom(args) => init_random::run(args),
        Command::Transcribe(args) => transcribe::run(args),
        Command::Watermark(args) => watermark::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
