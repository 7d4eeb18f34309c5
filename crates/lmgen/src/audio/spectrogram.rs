//! The log-mel spectrogram: transformers' `audio_utils.spectrogram` (numpy STFT) with a mel filter bank
//! and `log_mel="log10"`, as `WhisperFeatureExtractor._np_extract_fbank_features` calls it.
//!
//! Source: transformers `src/transformers/audio_utils.py` (`window_function`, `spectrogram`). What it
//! does, and so what this does, step by step:
//! 1. `center=True`: reflect-pad the waveform by `n_fft // 2` on each side (numpy's `np.pad(...,
//!    mode="reflect")`, which reflects again and again when the waveform is shorter than the pad);
//! 2. promote to float64; frames of `n_fft` samples every `hop_length`; `1 + (len - n_fft) // hop`
//!    frames;
//! 3. each frame times the periodic Hann window, `np.fft.rfft` in float64, **stored as complex64**
//!    (so each real and imaginary part is rounded to float32; reproduced here);
//! 4. power 2: `np.abs(spec, dtype=float64) ** 2`;
//! 5. `max(mel_floor = 1e-10, mel_filters.T @ power)` in float64, `log10`, cast to float32.
//!
//! The result matches transformers' numpy path to about 1e-6 (float32 rounding of the last step).
//! transformers uses its torch path (`_torch_extract_fbank_features`: `torch.stft` in float32) when
//! torch is installed; that path is itself within about 5e-5 of the numpy one.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{Error, Result};

/// transformers' `window_function(window_length, "hann", periodic=True)`: `np.hanning(n + 1)[:-1]`,
/// float64.
pub fn hann_window(window_length: usize) -> Vec<f64> {
    // np.hanning(M) = 0.5 + 0.5 * cos(pi * n / (M - 1)) for n = 1-M, 3-M, ..., M-1; here M = len + 1.
    let m = window_length + 1;
    (0..window_length)
        .map(|k| {
            let n = (2 * k) as f64 - (m - 1) as f64;
            0.5 + 0.5 * (std::f64::consts::PI * n / (m - 1) as f64).cos()
        })
        .collect()
}

/// numpy's `reflect` padding index: where padded position `i` (relative to the waveform's start, so
/// negative on the left) reads from, in a waveform of `len >= 1` samples.
fn reflect_index(i: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let r = i.rem_euclid(period);
    if r >= len as isize {
        (period - r) as usize
    } else {
        r as usize
    }
}

/// A log-mel spectrogram, `[n_mels, n_frames]` row-major float32 (transformers' layout for one item).
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    n_mels: usize,
    n_frames: usize,
    data: Vec<f32>,
}

impl LogMel {
    /// Wraps `data`, `[n_mels, n_frames]` row-major; an error when the length does not match.
    pub fn new(n_mels: usize, n_frames: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != n_mels * n_frames {
            return Err(Error::input(format!(
                "log-mel data has {} values, expected n_mels * n_frames = {n_mels} * {n_frames}",
                data.len()
            )));
        }
        Ok(LogMel {
            n_mels,
            n_frames,
            data,
        })
    }

    /// Number of mel bins (the feature extractor's `feature_size`).
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Number of frames (3000 for Whisper's 30 s window).
    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// The values, `[n_mels, n_frames]` row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The values, `[n_mels, n_frames]` row-major.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Mel bin `mel` over time, `[n_frames]`; `None` past the last bin.
    pub fn mel(&self, mel: usize) -> Option<&[f32]> {
        (mel < self.n_mels).then(|| &self.data[mel * self.n_frames..(mel + 1) * self.n_frames])
    }

    /// The value at (`mel`, `frame`); `None` out of range.
    pub fn get(&self, mel: usize, frame: usize) -> Option<f32> {
        (mel < self.n_mels && frame < self.n_frames).then(|| self.data[mel * self.n_frames + frame])
    }

    /// A float32 tensor `[1, n_mels, n_frames]`: the model's `input_features` for one item.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (1, self.n_mels, self.n_frames),
            device,
        )?)
    }
}

/// One mel filter: its first nonzero frequency bin and weights from there (the bank is sparse: each
/// triangle covers a few bins).
#[derive(Debug, Clone)]
struct SparseFilter {
    start: usize,
    weights: Vec<f64>,
}

/// The STFT + mel filter bank + log10 of `audio_utils.spectrogram`, planned once (window, FFT,
/// filters) and applied to any number of waveforms.
#[derive(Clone)]
pub struct LogMelSpectrogram {
    n_fft: usize,
    hop_length: usize,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
    filters: Vec<SparseFilter>,
}

impl std::fmt::Debug for LogMelSpectrogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMelSpectrogram")
            .field("n_fft", &self.n_fft)
            .field("hop_length", &self.hop_length)
            .field("n_mels", &self.filters.len())
            .finish_non_exhaustive()
    }
}

/// transformers' `mel_floor` (and Whisper's clamp before log10).
const MEL_FLOOR: f64 = 1e-10;

impl LogMelSpectrogram {
    /// `mel_filters` is `[n_fft / 2 + 1, n_mels]` row-major (as [`super::MelFilterBank::build`]
    /// returns it); the window is Hann (periodic), `frame_length == fft_length == n_fft`.
    pub fn new(n_fft: usize, hop_length: usize, mel_filters: &[f64]) -> Result<Self> {
        let bins = n_fft / 2 + 1;
        if n_fft < 2 || hop_length == 0 {
            return Err(Error::input(format!(
                "spectrogram: `n_fft` must be >= 2 and `hop_length` >= 1, got {n_fft} and {hop_length}"
            )));
        }
        if mel_filters.is_empty() || !mel_filters.len().is_multiple_of(bins) {
            return Err(Error::input(format!(
                "spectrogram: `mel_filters` has {} values, not a multiple of n_fft / 2 + 1 = {bins}",
                mel_filters.len()
            )));
        }
        let n_mels = mel_filters.len() / bins;
        let filters = (0..n_mels)
            .map(|m| {
                let column: Vec<f64> = (0..bins).map(|i| mel_filters[i * n_mels + m]).collect();
                let start = column.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = column
                    .iter()
                    .rposition(|&w| w != 0.0)
                    .map_or(start, |e| e + 1);
                SparseFilter {
                    start,
                    weights: column[start..end].to_vec(),
                }
            })
            .collect();
        Ok(LogMelSpectrogram {
            n_fft,
            hop_length,
            window: hann_window(n_fft),
            fft: RealFftPlanner::<f64>::new().plan_fft_forward(n_fft),
            filters,
        })
    }

    /// Number of mel bins.
    pub fn n_mels(&self) -> usize {
        self.filters.len()
    }

    /// The number of frames [`Self::compute`] gives for `len` samples: `1 + len // hop_length`
    /// (center padding adds `n_fft // 2` on both sides).
    pub fn num_frames(&self, len: usize) -> usize {
        let padded = len + 2 * (self.n_fft / 2);
        if padded < self.n_fft {
            0
        } else {
            1 + (padded - self.n_fft) / self.hop_length
        }
    }

    /// `log10(max(1e-10, mel_filters.T @ |rfft(frame * window)|^2))` for every frame, as float32,
    /// `[n_mels, num_frames(len)]`. An empty waveform is an error (numpy cannot reflect-pad it).
    pub fn compute(&self, waveform: &[f32]) -> Result<LogMel> {
        if waveform.is_empty() {
            return Err(Error::input(
                "cannot compute the spectrogram of an empty waveform (no samples)",
            ));
        }
        let pad = self.n_fft / 2;
        let len = waveform.len();
        // [len + 2 * pad], float64 as numpy promotes it.
        let padded: Vec<f64> = (0..len + 2 * pad)
            .map(|j| f64::from(waveform[reflect_index(j as isize - pad as isize, len)]))
            .collect();
        let n_frames = self.num_frames(len);
        let n_mels = self.n_mels();
        let mut out = vec![0.0f32; n_mels * n_frames];
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; spectrum.len()];
        for t in 0..n_frames {
            let start = t * self.hop_length;
            for ((x, &s), &w) in frame
                .iter_mut()
                .zip(&padded[start..start + self.n_fft])
                .zip(&self.window)
            {
                *x = s * w;
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .map_err(|e| Error::input(format!("spectrogram FFT failed: {e}")))?;
            for (p, c) in power.iter_mut().zip(&spectrum) {
                // numpy stores the spectrum as complex64, then takes |z| in float64.
                let (re, im) = (f64::from(c.re as f32), f64::from(c.im as f32));
                *p = re * re + im * im;
            }
            for (m, filter) in self.filters.iter().enumerate() {
                let bins = &power[filter.start..filter.start + filter.weights.len()];
                let mel: f64 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
                out[m * n_frames + t] = mel.max(MEL_FLOOR).log10() as f32;
            }
        }
        LogMel::new(n_mels, n_frames, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hann_window_is_periodic() {
        let w = hann_window(400);
        assert_eq!(w.len(), 400);
        assert_eq!(w[0], 0.0);
        assert!((w[200] - 1.0).abs() < 1e-15);
        assert!((w[100] - 0.5).abs() < 1e-15);
        assert!((w[1] - w[399]).abs() < 1e-15);
    }

    #[test]
    fn reflect_padding_matches_numpy() {
        // np.pad(np.arange(5), (12, 12), mode="reflect")
        let want = [
            4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0,
        ];
        let got: Vec<usize> = (-12..17).map(|i| reflect_index(i, 5)).collect();
        assert_eq!(got, want);
        assert_eq!(reflect_index(-3, 1), 0);
    }

    #[test]
    fn frame_count_and_a_pure_tone_lands_in_its_mel_bin() {
        let filters = super::super::MelFilterBank::whisper(400, 80, 16000)
            .build()
            .unwrap();
        let spec = LogMelSpectrogram::new(400, 160, &filters).unwrap();
        assert_eq!(spec.num_frames(480_000), 3001);
        assert_eq!(spec.num_frames(159), 1);
        // 1 kHz: the loudest mel bin is the one whose filter peaks nearest 1 kHz.
        let x: Vec<f32> = (0..16000)
            .map(|i| (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 16000.0).sin() as f32)
            .collect();
        let mel = spec.compute(&x).unwrap();
        assert_eq!((mel.n_mels(), mel.n_frames()), (80, 101));
        let loudest = (0..80)
            .max_by(|&a, &b| mel.get(a, 50).unwrap().total_cmp(&mel.get(b, 50).unwrap()))
            .unwrap();
        let peak_hz = (0..201)
            .max_by(|&a, &b| filters[a * 80 + loudest].total_cmp(&filters[b * 80 + loudest]))
            .unwrap() as f64
            * 40.0;
        assert!(
            (peak_hz - 1000.0).abs() <= 80.0,
            "bin {loudest} peaks at {peak_hz} Hz"
        );
        assert!(spec.compute(&[]).is_err());
    }
}
