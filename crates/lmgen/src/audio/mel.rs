//! The mel filter bank: transformers' `audio_utils.mel_filter_bank`, with `hertz_to_mel` and
//! `mel_to_hertz`.
//!
//! Source: transformers `src/transformers/audio_utils.py` (`mel_filter_bank`,
//! `_create_triangular_filter_bank`, `hertz_to_mel`, `mel_to_hertz`), itself adapted from librosa and
//! torchaudio. Computed in float64 as numpy does, in the same order of operations, so the filters
//! match transformers' to a few ulps. `triangularize_in_mel_space` (used by no Whisper checkpoint) is
//! left out.

use crate::error::{Error, Result};

/// The mel scale (transformers' `mel_scale` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelScale {
    /// `"htk"`: `2595 * log10(1 + f / 700)`.
    Htk,
    /// `"kaldi"`: `1127 * ln(1 + f / 700)`.
    Kaldi,
    /// `"slaney"`: linear below 1 kHz, logarithmic above (librosa's default; Whisper's).
    Slaney,
}

/// The filters' normalization (transformers' `norm` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelNorm {
    /// `None`: triangles of height 1.
    None,
    /// `"slaney"`: each triangle divided by its width in Hz (constant energy per channel).
    Slaney,
}

const MIN_LOG_HERTZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = 15.0;

/// `hertz_to_mel(freq, mel_scale)`.
pub fn hertz_to_mel(freq: f64, mel_scale: MelScale) -> f64 {
    match mel_scale {
        MelScale::Htk => 2595.0 * (1.0 + freq / 700.0).log10(),
        MelScale::Kaldi => 1127.0 * (1.0 + freq / 700.0).ln(),
        MelScale::Slaney => {
            if freq >= MIN_LOG_HERTZ {
                let logstep = 27.0 / 6.4f64.ln();
                MIN_LOG_MEL + (freq / MIN_LOG_HERTZ).ln() * logstep
            } else {
                3.0 * freq / 200.0
            }
        }
    }
}

/// `mel_to_hertz(mels, mel_scale)`.
pub fn mel_to_hertz(mels: f64, mel_scale: MelScale) -> f64 {
    match mel_scale {
        MelScale::Htk => 700.0 * (10f64.powf(mels / 2595.0) - 1.0),
        MelScale::Kaldi => 700.0 * ((mels / 1127.0).exp() - 1.0),
        MelScale::Slaney => {
            if mels >= MIN_LOG_MEL {
                let logstep = 6.4f64.ln() / 27.0;
                MIN_LOG_HERTZ * (logstep * (mels - MIN_LOG_MEL)).exp()
            } else {
                200.0 * mels / 3.0
            }
        }
    }
}

/// `np.linspace(start, stop, num)`: `start + i * step`, the last point exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// The arguments of transformers' `mel_filter_bank`.
#[doc(alias = "mel_filter_bank")]
#[derive(Debug, Clone, PartialEq)]
pub struct MelFilterBank {
    /// Number of frequency bins of the spectrogram: `n_fft / 2 + 1`.
    pub num_frequency_bins: usize,
    /// Number of mel filters.
    pub num_mel_filters: usize,
    /// Lowest frequency of interest, in Hz.
    pub min_frequency: f64,
    /// Highest frequency of interest, in Hz (should not exceed `sampling_rate / 2`).
    pub max_frequency: f64,
    /// Sample rate of the audio, in Hz.
    pub sampling_rate: u32,
    /// Normalization of the triangles.
    pub norm: MelNorm,
    /// Mel scale.
    pub mel_scale: MelScale,
}

impl MelFilterBank {
    /// Whisper's bank, as `WhisperFeatureExtractor.__init__` builds it: 0-8000 Hz, Slaney scale and
    /// norm.
    pub fn whisper(n_fft: usize, num_mel_filters: usize, sampling_rate: u32) -> Self {
        MelFilterBank {
            num_frequency_bins: 1 + n_fft / 2,
            num_mel_filters,
            min_frequency: 0.0,
            max_frequency: 8000.0,
            sampling_rate,
            norm: MelNorm::Slaney,
            mel_scale: MelScale::Slaney,
        }
    }

    /// The filters, `[num_frequency_bins, num_mel_filters]` row-major as transformers returns them
    /// (a projection from a power spectrogram to a mel spectrogram). Like transformers, a filter
    /// that is all zeros (too many filters for the bins, or `max_frequency` above Nyquist) is
    /// allowed; it is logged as a warning.
    pub fn build(&self) -> Result<Vec<f64>> {
        if self.num_frequency_bins < 2 {
            return Err(Error::input(format!(
                "mel filter bank: `num_frequency_bins` must be >= 2, got {}",
                self.num_frequency_bins
            )));
        }
        if self.num_mel_filters == 0 {
            return Err(Error::input(
                "mel filter bank: `num_mel_filters` must be >= 1, got 0",
            ));
        }
        // NaN bounds are refused too.
        let ordered = self.min_frequency <= self.max_frequency;
        if !ordered {
            return Err(Error::input(format!(
                "mel filter bank: `min_frequency` ({}) must be <= `max_frequency` ({})",
                self.min_frequency, self.max_frequency
            )));
        }
        let (bins, n_mels) = (self.num_frequency_bins, self.num_mel_filters);
        let mel_min = hertz_to_mel(self.min_frequency, self.mel_scale);
        let mel_max = hertz_to_mel(self.max_frequency, self.mel_scale);
        // Center points of the triangles, and their edges: [n_mels + 2].
        let filter_freqs: Vec<f64> = linspace(mel_min, mel_max, n_mels + 2)
            .into_iter()
            .map(|m| mel_to_hertz(m, self.mel_scale))
            .collect();
        // Frequencies of the FFT bins: np.linspace(0, sampling_rate // 2, bins).
        let fft_freqs = linspace(0.0, f64::from(self.sampling_rate / 2), bins);
        let filter_diff: Vec<f64> = filter_freqs.windows(2).map(|w| w[1] - w[0]).collect();

        // _create_triangular_filter_bank: max(0, min(down, up)), [bins, n_mels].
        let mut filters = vec![0.0f64; bins * n_mels];
        for (i, &f) in fft_freqs.iter().enumerate() {
            for m in 0..n_mels {
                let down = -(filter_freqs[m] - f) / filter_diff[m];
                let up = (filter_freqs[m + 2] - f) / filter_diff[m + 1];
                filters[i * n_mels + m] = 0.0f64.max(down.min(up));
            }
        }
        if self.norm == MelNorm::Slaney {
            for m in 0..n_mels {
                let enorm = 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
                for i in 0..bins {
                    filters[i * n_mels + m] *= enorm;
                }
            }
        }
        let empty = (0..n_mels)
            .filter(|&m| (0..bins).all(|i| filters[i * n_mels + m] == 0.0))
            .count();
        if empty > 0 {
            tracing::warn!(
                "{empty} of {n_mels} mel filters are all zeros: `num_mel_filters` ({n_mels}) may be \
                 too high, or `num_frequency_bins` ({bins}) too low"
            );
        }
        Ok(filters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_is_linear_below_1khz() {
        assert_eq!(hertz_to_mel(200.0, MelScale::Slaney), 3.0);
        assert_eq!(hertz_to_mel(1000.0, MelScale::Slaney), 15.0);
        for f in [0.0, 440.0, 999.0, 1000.0, 4000.0, 8000.0] {
            for scale in [MelScale::Htk, MelScale::Kaldi, MelScale::Slaney] {
                let back = mel_to_hertz(hertz_to_mel(f, scale), scale);
                assert!((back - f).abs() < 1e-9, "{scale:?} {f} -> {back}");
            }
        }
    }

    #[test]
    fn linspace_ends_exactly_at_stop() {
        let v = linspace(0.0, 8000.0, 201);
        assert_eq!(v[1], 40.0);
        assert_eq!(v[200], 8000.0);
        assert_eq!(linspace(1.0, 2.0, 1), vec![1.0]);
    }

    #[test]
    fn whisper_filters_are_triangles_with_slaney_area() {
        let bank = MelFilterBank::whisper(400, 80, 16000);
        let f = bank.build().unwrap();
        assert_eq!(f.len(), 201 * 80);
        assert!(f.iter().all(|&w| w >= 0.0));
        // Each filter is nonzero on one contiguous run of bins.
        for m in 0..80 {
            let nz: Vec<usize> = (0..201).filter(|&i| f[i * 80 + m] > 0.0).collect();
            assert!(!nz.is_empty(), "filter {m} is empty");
            assert_eq!(
                nz.len(),
                nz[nz.len() - 1] - nz[0] + 1,
                "filter {m} has a gap"
            );
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut bank = MelFilterBank::whisper(400, 80, 16000);
        bank.num_frequency_bins = 1;
        assert!(bank
            .build()
            .unwrap_err()
            .to_string()
            .contains("num_frequency_bins"));
        let mut bank = MelFilterBank::whisper(400, 80, 16000);
        bank.min_frequency = 9000.0;
        assert!(bank
            .build()
            .unwrap_err()
            .to_string()
            .contains("min_frequency"));
    }
}
