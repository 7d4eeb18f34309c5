//! Audio input for Whisper: decode a file, resample it to 16 kHz, and compute the log-mel features
//! the model reads (transformers' `WhisperFeatureExtractor`).
//!
//! ```no_run
//! # fn main() -> lmgen::Result<()> {
//! use lmgen::audio::{load_audio, WhisperFeatureExtractor};
//!
//! let extractor = WhisperFeatureExtractor::from_preprocessor_config("whisper-base")?;
//! let samples = load_audio("speech.flac", extractor.config().sampling_rate)?;
//! let features = extractor.extract(&samples)?; // [80, 3000]
//! let input_features = features.to_tensor(&candle_core::Device::Cpu)?; // [1, 80, 3000]
//! # Ok(()) }
//! ```
//!
//! - [`decode`]: WAV, FLAC, MP3, Ogg Vorbis -> mono float32 at the file's rate (symphonia);
//! - [`mod@resample`]: any rate -> 16 kHz (rubato's FFT resampler);
//! - [`mel`] and [`spectrogram`]: transformers' `audio_utils` (`mel_filter_bank`, `spectrogram`);
//! - [`feature_extractor`] and [`preprocessor_config`]: `WhisperFeatureExtractor` and its config.

pub mod decode;
pub mod feature_extractor;
pub mod mel;
pub mod preprocessor_config;
pub mod resample;
pub mod spectrogram;

use std::path::Path;

pub use decode::{decode_audio_bytes, decode_audio_file, DecodedAudio};
pub use feature_extractor::{
    Padding, WhisperFeatureExtractor, WhisperFeatureOptions, WhisperFeatures,
};
pub use mel::{MelFilterBank, MelNorm, MelScale};
pub use preprocessor_config::{PaddingSide, WhisperFeatureExtractorConfig};
pub use resample::resample;
pub use spectrogram::{LogMel, LogMelSpectrogram};

use crate::error::Result;

/// Decodes an audio file and resamples it to `sampling_rate` (16000 for Whisper): mono float32, what
/// transformers' `audio_utils.load_audio(path, sampling_rate)` and the ASR pipeline's `ffmpeg_read`
/// give (to within the resampler's filter; see [`mod@resample`]).
pub fn load_audio(path: impl AsRef<Path>, sampling_rate: u32) -> Result<Vec<f32>> {
    let audio = decode_audio_file(path)?;
    resample(&audio.samples, audio.sample_rate, sampling_rate)
}

/// [`load_audio`] for a file held in memory; `name` is used in errors and as a format hint.
pub fn load_audio_bytes(bytes: &[u8], name: &str, sampling_rate: u32) -> Result<Vec<f32>> {
    let audio = decode_audio_bytes(bytes, name)?;
    resample(&audio.samples, audio.sample_rate, sampling_rate)
}
