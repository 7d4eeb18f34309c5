//! `preprocessor_config.json` for Whisper: the `WhisperFeatureExtractor` arguments, parsed and checked
//! once.
//!
//! Source: transformers `src/transformers/models/whisper/feature_extraction_whisper.py`
//! (`WhisperFeatureExtractor.__init__`) and `feature_extraction_sequence_utils.py`
//! (`SequenceFeatureExtractor`: `padding_value`, `padding_side`, `return_attention_mask`).
//!
//! Keys transformers reads but recomputes, and so ignores here too: `mel_filters` (older Hub configs
//! store the bank, `[n_mels][201]`; `__init__` rebuilds it from `feature_size`/`n_fft`/`sampling_rate`
//! and overwrites it), `n_samples` and `nb_max_frames` (rebuilt from `chunk_length`). Other keys
//! (`feature_extractor_type`, `processor_class`, ...) are ignored, except that a
//! `feature_extractor_type` other than `WhisperFeatureExtractor` is refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which end of a short input the padding goes to (transformers' `padding_side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingSide {
    /// Pad after the audio (the default).
    #[default]
    Right,
    /// Pad before the audio.
    Left,
}

/// The fields of a Whisper `preprocessor_config.json`, with transformers' defaults.
#[doc(alias = "WhisperFeatureExtractor")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WhisperFeatureExtractorConfig {
    /// Number of mel bins (`n_mels`): 80, or 128 for large-v3 and turbo.
    pub feature_size: usize,
    /// Sample rate the model expects, in Hz.
    pub sampling_rate: u32,
    /// STFT hop, in samples.
    pub hop_length: usize,
    /// Window length in seconds: inputs are padded or truncated to `chunk_length * sampling_rate`.
    pub chunk_length: usize,
    /// STFT size (and window length), in samples.
    pub n_fft: usize,
    /// The sample value padding adds (silence).
    pub padding_value: f32,
    /// Standard deviation of Gaussian dither noise; only 0 is supported.
    pub dither: f32,
    /// Whether an attention mask is returned by default.
    pub return_attention_mask: bool,
    /// Where padding goes.
    pub padding_side: PaddingSide,
    /// Must be `WhisperFeatureExtractor` when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_extractor_type: Option<String>,
}

impl Default for WhisperFeatureExtractorConfig {
    fn default() -> Self {
        WhisperFeatureExtractorConfig {
            feature_size: 80,
            sampling_rate: 16000,
            hop_length: 160,
            chunk_length: 30,
            n_fft: 400,
            padding_value: 0.0,
            dither: 0.0,
            return_attention_mask: false,
            padding_side: PaddingSide::Right,
            feature_extractor_type: None,
        }
    }
}

/// Upper bounds that keep a corrupt config from asking for huge allocations.
const MAX_FEATURE_SIZE: usize = 1024;
const MAX_N_FFT: usize = 1 << 16;
const MAX_SAMPLING_RATE: u32 = 768_000;
const MAX_CHUNK_LENGTH: usize = 3600;

impl WhisperFeatureExtractorConfig {
    /// Reads `preprocessor_config.json`. Errors name the file and the field at fault.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json_error = |message: String| Error::Json {
            path: path.to_path_buf(),
            message,
        };
        let de = &mut serde_json::Deserializer::from_str(&text);
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            if field.is_empty() || field == "." {
                json_error(inner.to_string())
            } else {
                json_error(format!("`{field}`: {inner}"))
            }
        })?;
        config.validate().map_err(|message| match message {
            Invalid::Value(m) => json_error(m),
            Invalid::Unsupported(m) => Error::unsupported(format!("{m} (in `{}`)", path.display())),
        })?;
        Ok(config)
    }

    /// `chunk_length * sampling_rate`: the samples in one window (480000).
    pub fn n_samples(&self) -> usize {
        self.chunk_length * self.sampling_rate as usize
    }

    /// `n_samples / hop_length`: the frames in one window (3000).
    pub fn nb_max_frames(&self) -> usize {
        self.n_samples() / self.hop_length.max(1)
    }

    /// Checks every field once; the message names the field and the bound.
    pub(crate) fn validate(&self) -> std::result::Result<(), Invalid> {
        let range = |name: &str, value: usize, min: usize, max: usize| {
            if value < min || value > max {
                Err(Invalid::Value(format!(
                    "`{name}` must be in [{min}, {max}], got {value}"
                )))
            } else {
                Ok(())
            }
        };
        range("feature_size", self.feature_size, 1, MAX_FEATURE_SIZE)?;
        range(
            "sampling_rate",
            self.sampling_rate as usize,
            1,
            MAX_SAMPLING_RATE as usize,
        )?;
        range("n_fft", self.n_fft, 2, MAX_N_FFT)?;
        range("hop_length", self.hop_length, 1, MAX_N_FFT)?;
        range("chunk_length", self.chunk_length, 1, MAX_CHUNK_LENGTH)?;
        if !self.padding_value.is_finite() {
            return Err(Invalid::Value(format!(
                "`padding_value` must be a finite number, got {}",
                self.padding_value
            )));
        }
        if let Some(kind) = &self.feature_extractor_type {
            if kind != "WhisperFeatureExtractor" {
                return Err(Invalid::Value(format!(
                    "`feature_extractor_type` is `{kind}`; this reads `WhisperFeatureExtractor` configs only"
                )));
            }
        }
        if self.dither != 0.0 {
            return Err(Invalid::Unsupported(format!(
                "`dither` = {}: transformers adds unseeded Gaussian noise (np.random.randn) to every \
                 frame, which cannot be reproduced; set `dither` to 0.0",
                self.dither
            )));
        }
        Ok(())
    }
}

/// Why a config is refused: a bad value, or a setting that is not built.
#[derive(Debug)]
pub(crate) enum Invalid {
    Value(String),
    Unsupported(String),
}

impl From<Invalid> for Error {
    /// For a config built in code (no file to name).
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::Value(m) => {
                Error::input(format!("invalid WhisperFeatureExtractor config: {m}"))
            }
            Invalid::Unsupported(m) => Error::unsupported(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(json: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), json).unwrap();
        file
    }

    #[test]
    fn defaults_are_whisper_base() {
        let c = WhisperFeatureExtractorConfig::default();
        assert_eq!((c.n_samples(), c.nb_max_frames()), (480_000, 3000));
        let file = write("{}");
        assert_eq!(
            WhisperFeatureExtractorConfig::from_file(file.path()).unwrap(),
            c
        );
    }

    #[test]
    fn stored_mel_filters_and_frame_counts_are_ignored() {
        let file = write(
            r#"{"feature_size": 128, "mel_filters": [[0.0, 1.0]], "n_samples": 1, "nb_max_frames": 2,
                "processor_class": "WhisperProcessor", "feature_extractor_type": "WhisperFeatureExtractor"}"#,
        );
        let c = WhisperFeatureExtractorConfig::from_file(file.path()).unwrap();
        assert_eq!(
            (c.feature_size, c.n_samples(), c.nb_max_frames()),
            (128, 480_000, 3000)
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let file = write(r#"{"hop_length": "160"}"#);
        let msg = WhisperFeatureExtractorConfig::from_file(file.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`hop_length`"), "{msg}");
        assert!(msg.contains(&file.path().display().to_string()), "{msg}");

        let file = write(r#"{"hop_length": 0}"#);
        let msg = WhisperFeatureExtractorConfig::from_file(file.path())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`hop_length` must be in [1, 65536], got 0"),
            "{msg}"
        );

        let file = write(r#"{"padding_side": "middle"}"#);
        let msg = WhisperFeatureExtractorConfig::from_file(file.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`padding_side`"), "{msg}");

        let file = write(r#"{"feature_extractor_type": "Wav2Vec2FeatureExtractor"}"#);
        let msg = WhisperFeatureExtractorConfig::from_file(file.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("Wav2Vec2FeatureExtractor"), "{msg}");

        let file = write(r#"{"dither": 0.0001}"#);
        let err = WhisperFeatureExtractorConfig::from_file(file.path()).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("`dither`"), "{err}");

        let missing = std::path::Path::new("/nonexistent/preprocessor_config.json");
        let msg = WhisperFeatureExtractorConfig::from_file(missing)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/nonexistent/preprocessor_config.json"),
            "{msg}"
        );
    }
}
