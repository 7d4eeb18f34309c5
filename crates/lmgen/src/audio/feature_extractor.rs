//! Whisper's feature extractor: raw 16 kHz audio -> padded log-mel `input_features`.
//!
//! Source: transformers `src/transformers/models/whisper/feature_extraction_whisper.py`
//! (`WhisperFeatureExtractor.__call__`, `_np_extract_fbank_features`, `zero_mean_unit_var_norm`) and
//! `feature_extraction_sequence_utils.py` (`SequenceFeatureExtractor.pad`, `_truncate`, `_pad`).
//! The order is transformers': truncate, pad (with `padding_value`), normalize (optional), log-mel of
//! the padded audio ([`LogMelSpectrogram`]), drop the last frame, clamp to `max - 8`, `(x + 4) / 4`,
//! and the attention mask subsampled to frames (`mask[::hop_length]`, one frame dropped when the
//! padded length is not a multiple of `hop_length`).
//!
//! Features match transformers' numpy path (`_np_extract_fbank_features`, float64 STFT) to about 1e-6.
//! transformers takes its torch path instead when torch is installed (`torch.stft` in float32); the
//! two paths differ by up to about 5e-5, so this is that close to the torch path too.
//!
//! Deliberate differences:
//! - `return_attention_mask` left unset falls back to the config's; the mask returned is always the
//!   frame-level one. (transformers returns the *sample*-level mask, `[b, n_samples]`, when only the
//!   config or `do_normalize` asked for one, since it rescales the mask only when the argument is set.)
//! - `padding="do_not_pad"` is left out: it gives ragged batches, which transformers cannot stack
//!   either (one item is the same as `Padding::Longest`).
//! - `dither` other than 0 is refused (unseeded noise); `device` is the CPU.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::mel::MelFilterBank;
use super::preprocessor_config::{PaddingSide, WhisperFeatureExtractorConfig};
use super::spectrogram::{LogMel, LogMelSpectrogram};
use crate::error::{Error, Result};

/// How inputs are padded (transformers' `padding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// `"max_length"` (the default): to `max_length` (the 30 s window, 480000 samples).
    #[default]
    MaxLength,
    /// `"longest"`: to the longest input of the batch (an input alone is not padded). With
    /// `truncation: false` this is the long-form input of `WhisperForConditionalGeneration.generate`.
    Longest,
}

/// The arguments of `WhisperFeatureExtractor.__call__` (transformers' names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperFeatureOptions {
    /// How to pad.
    pub padding: Padding,
    /// In samples; `None` (or 0, as in transformers) is `n_samples` (480000).
    pub max_length: Option<usize>,
    /// Cut inputs longer than `max_length` (default `true`).
    pub truncation: bool,
    /// Round the padded (and truncation) length up to a multiple of this.
    pub pad_to_multiple_of: Option<usize>,
    /// Return the frame-level attention mask; `None`: the config's `return_attention_mask`.
    pub return_attention_mask: Option<bool>,
    /// Zero-mean unit-variance normalize each input (over its unpadded part) before the STFT.
    pub do_normalize: bool,
    /// When set, must equal the config's `sampling_rate` (transformers' check).
    pub sampling_rate: Option<u32>,
}

impl Default for WhisperFeatureOptions {
    /// transformers' defaults: `padding="max_length"`, `truncation=True`, no normalization.
    fn default() -> Self {
        WhisperFeatureOptions {
            padding: Padding::MaxLength,
            max_length: None,
            truncation: true,
            pad_to_multiple_of: None,
            return_attention_mask: None,
            do_normalize: false,
            sampling_rate: None,
        }
    }
}

impl WhisperFeatureOptions {
    /// The long-form input: `padding="longest"`, `truncation=False`, with the attention mask.
    pub fn long_form() -> Self {
        WhisperFeatureOptions {
            padding: Padding::Longest,
            truncation: false,
            return_attention_mask: Some(true),
            ..Self::default()
        }
    }
}

/// The output of [`WhisperFeatureExtractor::extract_batch`] (transformers' `BatchFeature`).
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperFeatures {
    /// `[batch, n_mels, n_frames]` row-major float32.
    pub input_features: Vec<f32>,
    /// `[batch, n_frames]` row-major, 1 for frames of audio and 0 for padding, when asked for.
    pub attention_mask: Option<Vec<u32>>,
    /// Batch size.
    pub batch: usize,
    /// Mel bins.
    pub n_mels: usize,
    /// Frames per item (3000 when padded to the 30 s window).
    pub n_frames: usize,
}

impl WhisperFeatures {
    /// Item `i` of the batch, `[n_mels, n_frames]`; `None` past the end.
    pub fn item(&self, i: usize) -> Option<LogMel> {
        let size = self.n_mels * self.n_frames;
        let data = self.input_features.get(i * size..(i + 1) * size)?.to_vec();
        LogMel::new(self.n_mels, self.n_frames, data).ok()
    }

    /// The number of frames of audio (not padding) in item `i`, from the attention mask.
    pub fn num_frames(&self, i: usize) -> Option<usize> {
        let mask = self.attention_mask.as_ref()?;
        let row = mask.get(i * self.n_frames..(i + 1) * self.n_frames)?;
        Some(row.iter().filter(|&&m| m != 0).count())
    }

    /// `input_features` as a float32 tensor `[batch, n_mels, n_frames]`.
    pub fn input_features_tensor(&self, device: &Device) -> Result<Tensor> {
        let shape = (self.batch, self.n_mels, self.n_frames);
        Ok(Tensor::from_slice(&self.input_features, shape, device)?)
    }

    /// `attention_mask` as a u32 tensor `[batch, n_frames]`, when there is one.
    pub fn attention_mask_tensor(&self, device: &Device) -> Result<Option<Tensor>> {
        let Some(mask) = &self.attention_mask else {
            return Ok(None);
        };
        Ok(Some(Tensor::from_slice(
            mask,
            (self.batch, self.n_frames),
            device,
        )?))
    }
}

/// transformers' `WhisperFeatureExtractor`: the config, its mel filters and a planned STFT.
#[derive(Debug, Clone)]
pub struct WhisperFeatureExtractor {
    config: WhisperFeatureExtractorConfig,
    mel_filters: Vec<f64>,
    spectrogram: LogMelSpectrogram,
}

/// Rounds `n` up to a multiple of `m` (transformers' `pad_to_multiple_of`).
fn round_up(n: usize, m: Option<usize>) -> usize {
    match m {
        Some(m) if m > 0 && !n.is_multiple_of(m) => (n / m + 1) * m,
        _ => n,
    }
}

impl WhisperFeatureExtractor {
    /// An extractor for `config` (checked: see [`WhisperFeatureExtractorConfig`]).
    pub fn new(config: WhisperFeatureExtractorConfig) -> Result<Self> {
        config.validate()?;
        let mel_filters =
            MelFilterBank::whisper(config.n_fft, config.feature_size, config.sampling_rate)
                .build()?;
        let spectrogram = LogMelSpectrogram::new(config.n_fft, config.hop_length, &mel_filters)?;
        Ok(WhisperFeatureExtractor {
            config,
            mel_filters,
            spectrogram,
        })
    }

    /// Reads a checkpoint's `preprocessor_config.json` (a file, or a directory holding one).
    pub fn from_preprocessor_config(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("preprocessor_config.json")
        } else {
            path.to_path_buf()
        };
        Self::new(WhisperFeatureExtractorConfig::from_file(file)?)
    }

    /// The config.
    pub fn config(&self) -> &WhisperFeatureExtractorConfig {
        &self.config
    }

    /// The mel filters, `[n_fft / 2 + 1, feature_size]` row-major float64 (transformers'
    /// `self.mel_filters`).
    pub fn mel_filters(&self) -> &[f64] {
        &self.mel_filters
    }

    /// One input with transformers' defaults (padded or truncated to the 30 s window):
    /// `[feature_size, nb_max_frames]` = `[80, 3000]`. `samples` are mono at the config's
    /// `sampling_rate` (see [`super::load_audio`]).
    pub fn extract(&self, samples: &[f32]) -> Result<LogMel> {
        let features = self.extract_batch(&[samples], &WhisperFeatureOptions::default())?;
        features
            .item(0)
            .ok_or_else(|| Error::input("the feature extractor returned no item"))
    }

    /// `WhisperFeatureExtractor.__call__` on a batch of mono inputs at the config's `sampling_rate`.
    pub fn extract_batch(
        &self,
        batch: &[&[f32]],
        options: &WhisperFeatureOptions,
    ) -> Result<WhisperFeatures> {
        let config = &self.config;
        if let Some(rate) = options.sampling_rate {
            if rate != config.sampling_rate {
                return Err(Error::input(format!(
                    "`sampling_rate` is {rate} Hz but this feature extractor expects {} Hz; \
                     resample the audio first",
                    config.sampling_rate
                )));
            }
        }
        if batch.is_empty() {
            return Err(Error::input(
                "no audio to extract features from (an empty batch)",
            ));
        }
        for (i, x) in batch.iter().enumerate() {
            if let Some(j) = x.iter().position(|v| !v.is_finite()) {
                return Err(Error::input(format!(
                    "input {i}: sample {j} is {}; audio samples must be finite",
                    x[j]
                )));
            }
        }
        let max_length = match options.max_length {
            Some(n) if n > 0 => n,
            _ => config.n_samples(),
        };
        // _truncate: cut to max_length (rounded up to pad_to_multiple_of).
        let lengths: Vec<usize> = batch
            .iter()
            .map(|x| {
                if options.truncation {
                    x.len()
                        .min(round_up(max_length, options.pad_to_multiple_of))
                } else {
                    x.len()
                }
            })
            .collect();
        // pad: the target length of every item.
        let target = match options.padding {
            Padding::Longest => lengths.iter().copied().max().unwrap_or(0),
            Padding::MaxLength => max_length,
        };
        let target = round_up(target, options.pad_to_multiple_of);
        if let Some((i, &len)) = lengths.iter().enumerate().find(|(_, &len)| len > target) {
            return Err(Error::input(format!(
                "input {i} has {len} samples, more than `max_length` ({target}) with `truncation` \
                 off and `padding` max_length: the batch cannot be stacked; truncate, or pad to the \
                 longest"
            )));
        }
        let hop = config.hop_length;
        // The STFT gives 1 + target // hop frames; the last is dropped.
        let n_frames = self.spectrogram.num_frames(target).saturating_sub(1);
        if n_frames == 0 {
            return Err(Error::input(format!(
                "the audio has {target} samples, fewer than one hop ({hop} samples): no feature frame"
            )));
        }
        let n_mels = config.feature_size;
        let return_mask = options
            .return_attention_mask
            .unwrap_or(config.return_attention_mask);

        let mut input_features = Vec::with_capacity(batch.len() * n_mels * n_frames);
        let mut attention_mask = Vec::with_capacity(batch.len() * n_frames);
        for (x, &len) in batch.iter().zip(&lengths) {
            let offset = match config.padding_side {
                PaddingSide::Right => 0,
                PaddingSide::Left => target - len,
            };
            // [target] samples: the audio at `offset`, padding_value around it.
            let mut padded = vec![config.padding_value; target];
            padded[offset..offset + len].copy_from_slice(&x[..len]);
            if options.do_normalize {
                zero_mean_unit_var_norm(&mut padded, len, config.padding_value);
            }
            let log_spec = self.spectrogram.compute(&padded)?;
            whisper_scale(&log_spec, &mut input_features);
            if return_mask {
                // mask[::hop] over [offset, offset + len) is 1; then trimmed to n_frames.
                attention_mask.extend(
                    (0..n_frames).map(|t| u32::from((offset..offset + len).contains(&(t * hop)))),
                );
            }
        }
        Ok(WhisperFeatures {
            input_features,
            attention_mask: return_mask.then_some(attention_mask),
            batch: batch.len(),
            n_mels,
            n_frames,
        })
    }
}

/// `zero_mean_unit_var_norm` for one padded input of `length` samples: `(x - mean) / sqrt(var +
/// 1e-7)` over `x[:length]`, padding set back to `padding_value`. As in transformers the statistics
/// are over the *first* `length` samples whatever the padding side. numpy computes them in float32
/// (pairwise sums); they are computed in float64 here and rounded, which agrees to float32 rounding.
fn zero_mean_unit_var_norm(x: &mut [f32], length: usize, padding_value: f32) {
    let n = length as f64;
    let head = &x[..length];
    let mean = head.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = head
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let (mean, var) = (mean as f32, var as f32);
    let std = (var + 1e-7).sqrt();
    for v in x.iter_mut() {
        *v = (*v - mean) / std;
    }
    for v in x.iter_mut().skip(length) {
        *v = padding_value;
    }
}

/// The end of `_np_extract_fbank_features`, in float32 as numpy does: `log_spec[:, :-1]`, then
/// `max(log_spec, log_spec.max() - 8)`, then `(log_spec + 4) / 4`. Appends `[n_mels, n_frames]`.
fn whisper_scale(log_spec: &LogMel, out: &mut Vec<f32>) {
    // [n_mels, n_frames + 1] -> [n_mels, n_frames]
    let stride = log_spec.n_frames();
    let n_frames = stride.saturating_sub(1);
    let data = log_spec.as_slice();
    let rows = || data.chunks_exact(stride.max(1)).map(|row| &row[..n_frames]);
    let max = rows().flatten().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let floor = max - 8.0;
    for row in rows() {
        out.extend(row.iter().map(|&v| (v.max(floor) + 4.0) / 4.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_up_to_multiples() {
        assert_eq!(round_up(10, Some(4)), 12);
        assert_eq!(round_up(12, Some(4)), 12);
        assert_eq!(round_up(10, None), 10);
        assert_eq!(round_up(10, Some(0)), 10);
    }

    #[test]
    fn normalization_gives_zero_mean_unit_variance_and_resets_padding() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 9.0, 9.0];
        zero_mean_unit_var_norm(&mut x, 4, 0.5);
        let mean: f32 = x[..4].iter().sum::<f32>() / 4.0;
        let var: f32 = x[..4].iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{x:?}");
        assert_eq!(&x[4..], &[0.5, 0.5]);
    }

    #[test]
    fn shapes_masks_and_errors() {
        let fe = WhisperFeatureExtractor::new(WhisperFeatureExtractorConfig::default()).unwrap();
        let a = vec![0.1f32; 1000];
        let b = vec![0.2f32; 1650];
        let out = fe
            .extract_batch(&[&a, &b], &WhisperFeatureOptions::long_form())
            .unwrap();
        // Padded to 1650 samples: 1650 // 160 = 10 frames; a covers samples 0..1000 -> 7 frames.
        assert_eq!((out.batch, out.n_mels, out.n_frames), (2, 80, 10));
        assert_eq!((out.num_frames(0), out.num_frames(1)), (Some(7), Some(10)));
        assert_eq!(
            out.input_features_tensor(&Device::Cpu).unwrap().dims(),
            &[2, 80, 10]
        );
        assert_eq!(fe.extract(&a).unwrap().n_frames(), 3000);

        let too_short = vec![0.1f32; 100];
        let e = fe
            .extract_batch(&[&too_short], &WhisperFeatureOptions::long_form())
            .unwrap_err();
        assert!(e.to_string().contains("fewer than one hop"), "{e}");
        let e = fe
            .extract_batch(&[], &WhisperFeatureOptions::default())
            .unwrap_err();
        assert!(e.to_string().contains("empty batch"), "{e}");
        let wrong_rate = WhisperFeatureOptions {
            sampling_rate: Some(44100),
            ..WhisperFeatureOptions::default()
        };
        let e = fe.extract_batch(&[&a], &wrong_rate).unwrap_err();
        assert!(e.to_string().contains("`sampling_rate` is 44100 Hz"), "{e}");
        let long = vec![0.0f32; 480_001];
        let no_truncation = WhisperFeatureOptions {
            truncation: false,
            ..WhisperFeatureOptions::default()
        };
        let e = fe.extract_batch(&[&long], &no_truncation).unwrap_err();
        assert!(e.to_string().contains("`truncation`"), "{e}");
    }
}
