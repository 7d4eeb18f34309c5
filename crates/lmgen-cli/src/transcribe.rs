//! `lmgen transcribe FILE --model DIR`: speech to text with a Whisper checkpoint (transformers'
//! `pipeline("automatic-speech-recognition")`). The audio is decoded and resampled
//! (`lmgen::audio`), turned into log-mel features and decoded by Whisper's own `generate()`;
//! with `--format text` (the default) each segment is printed as soon as its window is decoded.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use lmgen::generation::whisper::text::{format_timestamp, TimedText};
use lmgen::generation::whisper::WhisperOptions;
use lmgen::generation::GenerateOptions;
use lmgen::speech::SpeechPipeline;
use lmgen::GenerationConfig;
use lmgen_server::api::audio::{render, srt_cue, vtt_cue, ResponseFormat};
use lmgen_server::ModelArgs;

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// The audio file: WAV, FLAC, MP3 or Ogg Vorbis (any sample rate, mono or stereo).
    pub file: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The spoken language: a code (`de`) or a name (`german`). Detected when unset.
    #[arg(long)]
    pub language: Option<String>,
    /// `transcribe` (the default), or `translate` into English.
    #[arg(long)]
    pub task: Option<String>,
    /// Print each segment's start and end (`--format text`); always on past 30 s.
    #[arg(long)]
    pub timestamps: bool,
    /// Output, as OpenAI's `response_format`: text, json, verbose_json, srt or vtt.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// Text the audio continues (names, spelling), given to the model before it.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Temperatures tried in turn when a window's text fails the thresholds, e.g.
    /// `0,0.2,0.4,0.6,0.8,1` (OpenAI's CLI default). Unset: greedy search once.
    #[arg(long, value_delimiter = ',')]
    pub temperature: Vec<f64>,
    /// Retry a window whose text compresses better than this (repetitions; OpenAI: 2.4).
    #[arg(long)]
    pub compression_ratio_threshold: Option<f64>,
    /// Retry a window whose average token log-probability is lower (OpenAI: -1).
    #[arg(long)]
    pub logprob_threshold: Option<f64>,
    /// Skip a window whose no-speech probability is higher, when its log-probability is also
    /// under `--logprob-threshold` (OpenAI: 0.6).
    #[arg(long)]
    pub no_speech_threshold: Option<f64>,
    /// Give each window the text of the ones before it.
    #[arg(long)]
    pub condition_on_prev_tokens: bool,
    /// Beams of beam search.
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Seed of the sampler (with temperatures above 0).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `--format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
    #[value(name = "verbose_json")]
    VerboseJson,
    Srt,
    Vtt,
}

impl From<FormatArg> for ResponseFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => Self::Text,
            FormatArg::Json => Self::Json,
            FormatArg::VerboseJson => Self::VerboseJson,
            FormatArg::Srt => Self::Srt,
            FormatArg::Vtt => Self::Vtt,
        }
    }
}

pub fn run(args: TranscribeArgs) -> Result<()> {
    let Some(id_or_dir) = args.model.model.clone() else {
        anyhow::bail!("`--model` is required: a Whisper checkpoint (directory or model id)");
    };
    let pipe = SpeechPipeline::load(&id_or_dir, &args.model.load_options()?)
        .with_context(|| format!("loading `{id_or_dir}`"))?;
    let rate = pipe.feature_extractor.config().sampling_rate;
    let samples = lmgen::audio::load_audio(&args.file, rate)?;
    let whisper = WhisperOptions {
        language: args.language.clone().map(|l| vec![l]),
        task: args.task.clone(),
        return_timestamps: args.timestamps.then_some(true),
        prompt_ids: args
            .prompt
            .as_deref()
            .map(|p| prompt_ids(&pipe, p))
            .transpose()?,
        condition_on_prev_tokens: args.condition_on_prev_tokens.then_some(true),
        temperature: (!args.temperature.is_empty()).then(|| args.temperature.clone()),
        compression_ratio_threshold: args.compression_ratio_threshold,
        logprob_threshold: args.logprob_threshold,
        no_speech_threshold: args.no_speech_threshold,
        ..WhisperOptions::default()
    };
    let overrides = GenerationConfig {
        num_beams: args.num_beams,
        ..GenerationConfig::default()
    };
    let options = GenerateOptions {
        seed: args.seed,
        ..GenerateOptions::default()
    };
    let format = ResponseFormat::from(args.format);
    let mut stdout = std::io::stdout().lock();
    let mut cues = 0;
    if format == ResponseFormat::Vtt {
        write!(stdout, "WEBVTT\n\n")?;
    }
    let timestamps = args.timestamps;
    let mut on_segment = |s: &TimedText| -> lmgen::Result<()> {
        cues += 1;
        let line = match format {
            ResponseFormat::Text if timestamps => format!(
                "[{} --> {}] {}\n",
                format_timestamp(s.start, false),
                format_timestamp(s.end, false),
                s.text.trim()
            ),
            ResponseFormat::Text => s.text.clone(),
            ResponseFormat::Srt => srt_cue(cues, s),
            ResponseFormat::Vtt => vtt_cue(s),
            ResponseFormat::Json | ResponseFormat::VerboseJson => return Ok(()),
        };
        stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| lmgen::Error::input(format!("cannot write to stdout: {e}")))
    };
    let t = pipe.transcribe(&samples, &whisper, &overrides, options, &mut on_segment)?;
    let task = args.task.as_deref().unwrap_or("transcribe");
    let mut stdout = std::io::stdout().lock();
    match format {
        ResponseFormat::Json | ResponseFormat::VerboseJson => {
            writeln!(stdout, "{}", render(&t, task, format))?
        }
        ResponseFormat::Text if !timestamps => writeln!(stdout)?,
        _ => {}
    }
    Ok(())
}

/// HF `WhisperProcessor.get_prompt_ids`: `<|startofprev|>` then ` text`.
fn prompt_ids(pipe: &SpeechPipeline, text: &str) -> Result<Vec<u32>> {
    let tokenizer = &pipe.tokenizer;
    let prev = tokenizer
        .token_to_id("<|startofprev|>")
        .context("`--prompt` needs the `<|startofprev|>` token, which this tokenizer lacks")?;
    let mut ids = vec![prev];
    ids.extend(tokenizer.encode_with(&format!(" {}", text.trim()), false)?);
    Ok(ids)
}
