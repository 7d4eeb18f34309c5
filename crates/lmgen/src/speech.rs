//! The one-call path for speech, like transformers' `pipeline("automatic-speech-recognition")`
//! with a Whisper checkpoint: audio samples in, text and timed segments out.
//!
//! The checkpoint's `preprocessor_config.json` gives the log-mel features
//! ([`WhisperFeatureExtractor`]). Audio of one window (30 s) is padded to it, as the feature
//! extractor's defaults do; longer audio keeps its length (`padding="longest"`,
//! `truncation=False`) and is transcribed window by window with timestamps, as Whisper's
//! `generate()` does for long-form input.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;

use crate::audio::{WhisperFeatureExtractor, WhisperFeatureOptions};
use crate::error::{Error, Result};
use crate::generation::whisper::languages::language_of_token;
use crate::generation::whisper::text::{decode_text, TimedText};
use crate::generation::whisper::{self, Segment, WhisperOptions};
use crate::generation::{GenerateOptions, GenerationConfig};
use crate::models::{CausalLM, LoadOptions};
use crate::pipeline::Pipeline;
use crate::tokenizer::Tokenizer;
use crate::TokenId;

/// A Whisper checkpoint with its tokenizer, generation defaults and feature extractor (shared:
/// a server runs many transcriptions on one).
pub struct SpeechPipeline {
    /// The model.
    pub model: Arc<dyn CausalLM>,
    /// The checkpoint's tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The checkpoint's `generation_config.json`.
    pub generation_config: GenerationConfig,
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The checkpoint's `WhisperFeatureExtractor`.
    pub feature_extractor: WhisperFeatureExtractor,
}

impl std::fmt::Debug for SpeechPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechPipeline")
            .field("dir", &self.dir)
            .field("feature_extractor", &self.feature_extractor.config())
            .finish()
    }
}

/// What [`SpeechPipeline::transcribe`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    /// The whole text (the tokens of every segment decoded together, special and timestamp
    /// tokens left out).
    pub text: String,
    /// The timed segments with their text.
    pub segments: Vec<TimedText>,
    /// The segments' tokens.
    pub segment_tokens: Vec<Vec<TokenId>>,
    /// The language the prompt used (given or detected): its code and name, when the model
    /// has language tokens.
    pub language: Option<(&'static str, &'static str)>,
    /// Seconds of audio.
    pub duration: f64,
}

impl SpeechPipeline {
    /// Loads a Whisper checkpoint (directory or model id) and its `preprocessor_config.json`.
    pub fn load(id_or_dir: &str, options: &LoadOptions) -> Result<Self> {
        let p = Pipeline::load(id_or_dir, options)?;
        Self::new(
            Arc::from(p.model),
            Arc::new(p.tokenizer),
            p.generation_config,
            p.dir,
        )
    }

    /// Adds the feature extractor of `dir` (its `preprocessor_config.json`) to a loaded
    /// checkpoint; checks that the model is Whisper and that one window of features is what its
    /// encoder reads.
    pub fn new(
        model: Arc<dyn CausalLM>,
        tokenizer: Arc<Tokenizer>,
        generation_config: GenerationConfig,
        dir: PathBuf,
    ) -> Result<Self> {
        let spec = model.config().whisper.as_deref().ok_or_else(|| {
            Error::input(format!(
                "`{}` is a `{}` model; transcription needs a Whisper checkpoint",
                dir.display(),
                model.config().architecture.model_type()
            ))
        })?;
        let frames = spec.input_frames();
        let feature_extractor = WhisperFeatureExtractor::from_preprocessor_config(&dir)?;
        let window = feature_extractor.config().nb_max_frames();
        if window != frames || feature_extractor.config().feature_size != spec.num_mel_bins {
            return Err(Error::input(format!(
                "`{}`: preprocessor_config.json gives {} mel bins x {window} frames per window, but \
                 the model reads {} x {frames} (`num_mel_bins`, 2 x `max_source_positions`)",
                dir.display(),
                feature_extractor.config().feature_size,
                spec.num_mel_bins,
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            generation_config,
            dir,
            feature_extractor,
        })
    }

    /// `[1, n_mels, frames]` features of mono `samples` at the extractor's sampling rate: one
    /// padded window, or every frame of audio longer than that.
    pub fn input_features(&self, samples: &[f32]) -> Result<Tensor> {
        let config = self.feature_extractor.config();
        let options = if samples.len() > config.n_samples() {
            WhisperFeatureOptions::long_form()
        } else {
            WhisperFeatureOptions::default()
        };
        let features = self.feature_extractor.extract_batch(&[samples], &options)?;
        features.input_features_tensor(self.model.device())
    }

    /// Transcribes (or translates) mono `samples` at the extractor's sampling rate; `on_segment`
    /// gets each segment's text as soon as its window is decoded.
    pub fn transcribe(
        &self,
        samples: &[f32],
        whisper_options: &WhisperOptions,
        overrides: &GenerationConfig,
        options: GenerateOptions<'_>,
        on_segment: &mut dyn FnMut(&TimedText) -> Result<()>,
    ) -> Result<Transcription> {
        let features = self.input_features(samples)?;
        // Past one window Whisper's generate needs timestamps (transformers raises when they are
        // off, as checkpoints ship `return_timestamps: false`): ask for them unless told not to.
        let long_form = features.dim(2)? > self.feature_extractor.config().nb_max_frames();
        let mut whisper_options = whisper_options.clone();
        if long_form && whisper_options.return_timestamps.is_none() {
            whisper_options.return_timestamps = Some(true);
        }
        let mut config = self.generation_config.clone();
        config.update(overrides);
        let timestamp_begin = self.timestamp_begin(&config)?;
        let tokenizer = self.tokenizer.as_ref();
        let mut sink = |_row: usize, segments: &[Segment]| -> Result<()> {
            for s in segments {
                on_segment(&TimedText {
                    start: s.start,
                    end: s.end,
                    text: decode_text(tokenizer, &s.tokens, timestamp_begin)?,
                })?;
            }
            Ok(())
        };
        let out = whisper::generate_streaming(
            self.model.as_ref(),
            &features,
            &whisper_options,
            &config,
            options,
            &mut sink,
        )?;
        let segments = out.segments.into_iter().next().unwrap_or_default();
        let tokens: Vec<TokenId> = segments.iter().flat_map(|s| s.tokens.clone()).collect();
        let language = out
            .init_tokens
            .first()
            .and_then(|p| p.get(1))
            .and_then(|&id| tokenizer.inner().id_to_token(id))
            .and_then(|t| language_of_token(&t));
        Ok(Transcription {
            text: decode_text(tokenizer, &tokens, timestamp_begin)?,
            segments: whisper::text::segments_text(tokenizer, &segments, timestamp_begin)?,
            segment_tokens: segments.into_iter().map(|s| s.tokens).collect(),
            language,
            duration: samples.len() as f64
                / f64::from(self.feature_extractor.config().sampling_rate),
        })
    }

    /// `<|0.00|>`: `no_timestamps_token_id + 1`, or past the vocabulary without it.
    fn timestamp_begin(&self, config: &GenerationConfig) -> Result<TokenId> {
        let w = whisper::WhisperGenerationConfig::from_config(config)?;
        Ok(w.no_timestamps_token_id
            .map_or(self.model.config().vocab_size as TokenId + 1, |t| t + 1))
    }
}
