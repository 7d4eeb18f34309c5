//! Whisper's audio input against transformers: log-mel features (`WhisperFeatureExtractor`, numpy
//! path), mel filters, decoding of WAV/FLAC/MP3/Ogg files, resampling to 16 kHz, and errors on bad
//! files. Goldens: `tools/make_whisper_features_golden.py` -> `tests/fixtures/whisper_features/`.
//!
//! The golden signals are rebuilt here from integer recipes (sines rounded to int16, a 64-bit LCG),
//! checked against the script's checksums first, so 31 s of audio need not be stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use lmgen::audio::{
    decode_audio_bytes, decode_audio_file, load_audio, resample, Padding, WhisperFeatureExtractor,
    WhisperFeatureExtractorConfig, WhisperFeatureOptions,
};
use serde_json::Value;

/// Features must match transformers' numpy path this closely.
const FEATURE_TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whisper_features")
}

fn cases() -> Result<Value> {
    let text = std::fs::read_to_string(fixtures().join("cases.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn tensors() -> Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        fixtures().join("features.safetensors"),
        &Device::Cpu,
    )?)
}

fn get<'a>(t: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    t.get(name)
        .ok_or_else(|| anyhow!("no tensor `{name}` in the fixture"))
}

// ---- the golden signals, rebuilt --------------------------------------------------------------

fn lcg(n: usize, seed: u64, shift: u32) -> Vec<i64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 48) as i64 - 32768) >> shift
        })
        .collect()
}

fn tone(n: usize, sr: f64, freq: f64, amp: f64) -> Vec<f64> {
    (0..n)
        .map(|i| amp * (2.0 * std::f64::consts::PI * freq * (i as f64 / sr)).sin())
        .collect()
}

fn to_int(x: &[f64]) -> Vec<i64> {
    x.iter().map(|v| v.round_ties_even() as i64).collect()
}

fn signal_ints(spec: &Value) -> Result<Vec<i64>> {
    let num = |k: &str| {
        spec[k]
            .as_f64()
            .ok_or_else(|| anyhow!("signal field `{k}`"))
    };
    let int = |k: &str| {
        spec[k]
            .as_u64()
            .ok_or_else(|| anyhow!("signal field `{k}`"))
    };
    let n = int("n")? as usize;
    let sr = 16000.0;
    Ok(match spec["recipe"].as_str() {
        Some("sweep") => {
            let (f0, f1, amp) = (num("f0")?, num("f1")?, num("amp")?);
            let k = (f1 - f0) / (n as f64 / sr);
            let x: Vec<f64> = (0..n)
                .map(|i| {
                    let t = i as f64 / sr;
                    amp * (2.0 * std::f64::consts::PI * (f0 * t + 0.5 * k * t * t)).sin()
                })
                .collect();
            to_int(&x)
        }
        Some("noise") => lcg(n, int("seed")?, int("shift")? as u32),
        Some("burst") => {
            let (start, len) = (int("start")? as usize, int("len")? as usize);
            let mut x = vec![0i64; n];
            let burst = to_int(&tone(len, sr, num("freq")?, num("amp")?));
            x[start..start + len].copy_from_slice(&burst);
            x
        }
        Some("long") => {
            let (a, b, c) = (
                tone(n, sr, 220.0, 6000.0),
                tone(n, sr, 1234.5, 3000.0),
                tone(n, sr, 5000.0, 1500.0),
            );
            let sum: Vec<f64> = (0..n).map(|i| a[i] + b[i] + c[i]).collect();
            let noise = lcg(n, int("seed")?, int("shift")? as u32);
            to_int(&sum)
                .iter()
                .zip(&noise)
                .map(|(x, e)| x + e)
                .collect()
        }
        other => return Err(anyhow!("unknown recipe {other:?}")),
    })
}

/// The golden signals as float32 (`int / 32768`), each checked against the script's checksums.
fn signals(cases: &Value) -> Result<HashMap<String, Vec<f32>>> {
    let mut out = HashMap::new();
    for (name, spec) in cases["signals"].as_object().context("signals")? {
        let ints = signal_ints(spec)?;
        let sum: i64 = ints.iter().sum();
        let sum_sq: i64 = ints.iter().map(|v| v * v).sum();
        let modulus = (1u128 << 61) - 1;
        let hash = ints.iter().fold(0u128, |h, &v| {
            (h * 1_000_003 + (v + 32768) as u128) % modulus
        });
        assert_eq!(
            (sum, sum_sq, hash as u64),
            (
                spec["sum"].as_i64().context("sum")?,
                spec["sum_sq"].as_i64().context("sum_sq")?,
                spec["hash"].as_u64().context("hash")?
            ),
            "signal `{name}` rebuilt differently from the golden script's"
        );
        out.insert(
            name.clone(),
            ints.iter().map(|&v| v as f32 / 32768.0).collect(),
        );
    }
    Ok(out)
}

fn extractor(feature_size: usize) -> Result<WhisperFeatureExtractor> {
    Ok(WhisperFeatureExtractor::new(
        WhisperFeatureExtractorConfig {
            feature_size,
            ..Default::default()
        },
    )?)
}

/// transformers' `__call__` keyword arguments as options.
fn options(kwargs: &Value) -> Result<WhisperFeatureOptions> {
    let mut o = WhisperFeatureOptions {
        sampling_rate: Some(16000),
        ..Default::default()
    };
    for (k, v) in kwargs.as_object().context("kwargs")? {
        match (k.as_str(), v) {
            ("padding", Value::String(p)) if p == "longest" => o.padding = Padding::Longest,
            ("padding", Value::String(p)) if p == "max_length" => o.padding = Padding::MaxLength,
            ("truncation", Value::Bool(b)) => o.truncation = *b,
            ("do_normalize", Value::Bool(b)) => o.do_normalize = *b,
            ("return_attention_mask", Value::Bool(b)) => o.return_attention_mask = Some(*b),
            _ => return Err(anyhow!("unhandled kwarg {k}={v}")),
        }
    }
    Ok(o)
}

// ---- features -------------------------------------------------------------------------------

#[test]
fn features_match_transformers_numpy_path() -> Result<()> {
    let cases = cases()?;
    let signals = signals(&cases)?;
    let golden = tensors()?;
    let mut worst = 0.0f32;
    for (name, case) in cases["cases"].as_object().context("cases")? {
        let size = case["feature_size"].as_u64().context("feature_size")? as usize;
        let fe = extractor(size)?;
        let names: Vec<&str> = case["signals"]
            .as_array()
            .context("signals")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let batch: Vec<&[f32]> = names.iter().map(|n| signals[*n].as_slice()).collect();
        let got = fe.extract_batch(&batch, &options(&case["kwargs"])?)?;
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone())?;
        assert_eq!(
            vec![got.batch, got.n_mels, got.n_frames],
            shape,
            "{name}: shape"
        );

        let frames: Vec<i64> = get(&golden, &format!("{name}.frames"))?.to_vec1()?;
        let want: Vec<Vec<Vec<f32>>> =
            get(&golden, &format!("{name}.input_features"))?.to_vec3()?;
        let mut max_diff = 0.0f32;
        for (b, item) in want.iter().enumerate() {
            for (m, row) in item.iter().enumerate() {
                for (k, &w) in row.iter().enumerate() {
                    let t = frames[k] as usize;
                    let g = got.input_features[(b * got.n_mels + m) * got.n_frames + t];
                    max_diff = max_diff.max((g - w).abs());
                }
            }
        }
        println!(
            "{name}: {shape:?}, {} frames compared, max |diff| vs transformers = {max_diff:.3e}",
            frames.len()
        );
        assert!(
            max_diff <= FEATURE_TOLERANCE,
            "{name}: max |diff| {max_diff} > {FEATURE_TOLERANCE}"
        );
        worst = worst.max(max_diff);

        let mask_name = format!("{name}.attention_mask");
        match (golden.get(&mask_name), &got.attention_mask) {
            (Some(want), Some(mask)) => {
                let want: Vec<i64> = want.flatten_all()?.to_vec1()?;
                let mask: Vec<i64> = mask.iter().map(|&m| i64::from(m)).collect();
                assert_eq!(mask, want, "{name}: attention_mask");
            }
            (None, None) => {}
            (want, got) => panic!(
                "{name}: attention mask expected: {}, returned: {}",
                want.is_some(),
                got.is_some()
            ),
        }
    }
    println!("all cases: max |diff| = {worst:.3e}");
    Ok(())
}

#[test]
fn extract_is_transformers_default_call() -> Result<()> {
    let cases = cases()?;
    let signals = signals(&cases)?;
    let golden = tensors()?;
    let fe = extractor(80)?;
    let features = fe.extract(&signals["noise"])?;
    assert_eq!((features.n_mels(), features.n_frames()), (80, 3000));
    let frames: Vec<i64> = get(&golden, "noise_max_length.frames")?.to_vec1()?;
    let want: Vec<Vec<Vec<f32>>> = get(&golden, "noise_max_length.input_features")?.to_vec3()?;
    for (m, row) in want[0].iter().enumerate() {
        for (k, &w) in row.iter().enumerate() {
            let g = features.get(m, frames[k] as usize).context("in range")?;
            assert!(
                (g - w).abs() <= FEATURE_TOLERANCE,
                "mel {m} frame {}",
                frames[k]
            );
        }
    }
    let t = features.to_tensor(&Device::Cpu)?;
    assert_eq!(t.dims(), &[1, 80, 3000]);
    Ok(())
}

#[test]
fn mel_filters_match_transformers() -> Result<()> {
    let golden = tensors()?;
    for size in [80usize, 128] {
        let want: Vec<f64> = get(&golden, &format!("mel_filters_{size}"))?
            .flatten_all()?
            .to_vec1()?;
        let fe = extractor(size)?;
        assert_eq!(fe.mel_filters().len(), want.len());
        let max_diff = fe
            .mel_filters()
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, f64::max);
        println!("mel_filters_{size}: max |diff| = {max_diff:.3e}");
        assert!(max_diff < 1e-12, "mel_filters_{size}: {max_diff}");
    }
    Ok(())
}

#[test]
fn preprocessor_config_as_transformers_writes_it() -> Result<()> {
    // A file, or the checkpoint directory holding it.
    let fe = WhisperFeatureExtractor::from_preprocessor_config(
        fixtures().join("preprocessor_config.json"),
    )?;
    assert_eq!(fe.config().feature_size, 128);
    assert_eq!(fe.config().n_samples(), 480_000);
    let fe = WhisperFeatureExtractor::from_preprocessor_config(fixtures())?;
    assert_eq!(fe.mel_filters().len(), 201 * 128);
    Ok(())
}

#[test]
fn feature_extraction_time_for_30_seconds() -> Result<()> {
    let fe = extractor(80)?;
    let x: Vec<f32> = lcg(480_000, 11, 2)
        .iter()
        .map(|&v| v as f32 / 32768.0)
        .collect();
    fe.extract(&x)?; // warm-up
    let runs = 5;
    let start = Instant::now();
    for _ in 0..runs {
        fe.extract(&x)?;
    }
    let per_run = start.elapsed() / runs;
    println!("WhisperFeatureExtractor.extract, 30 s of 16 kHz audio -> [80, 3000]: {per_run:.2?}");
    Ok(())
}

// ---- decoding -------------------------------------------------------------------------------

fn file_meta(cases: &Value, file: &str) -> Result<(u32, usize, usize)> {
    let m = &cases["files"][file];
    Ok((
        m["sample_rate"].as_u64().context("sample_rate")? as u32,
        m["frames"].as_u64().context("frames")? as usize,
        m["channels"].as_u64().context("channels")? as usize,
    ))
}

#[test]
fn lossless_files_decode_to_the_written_samples() -> Result<()> {
    let cases = cases()?;
    let golden = tensors()?;
    let channels: Vec<Vec<f32>> = get(&golden, "stereo_s16.channels")?.to_vec2()?;
    // The down-mix: (left + right) / 2, exact for 16-bit samples.
    let mono: Vec<f32> = channels[0]
        .iter()
        .zip(&channels[1])
        .map(|(l, r)| (l + r) / 2.0)
        .collect();
    for file in ["stereo_s16_22050.wav", "stereo_s16_22050.flac"] {
        let (rate, frames, n_channels) = file_meta(&cases, file)?;
        let audio = decode_audio_file(fixtures().join(file))?;
        assert_eq!(audio.sample_rate, rate, "{file}");
        assert_eq!(audio.channels, n_channels, "{file}");
        assert_eq!(audio.samples.len(), frames, "{file}");
        assert_eq!(
            audio.samples, mono,
            "{file}: samples differ from the written ones"
        );
        // The same from bytes.
        let bytes = std::fs::read(fixtures().join(file))?;
        assert_eq!(decode_audio_bytes(&bytes, file)?, audio);
        assert_eq!(
            decode_audio_bytes(&bytes, "upload")?,
            audio,
            "no extension hint"
        );
    }
    Ok(())
}

/// Frequency from the upward zero crossings over the middle of `x` (crossing times interpolated
/// linearly between samples).
fn zero_crossing_hz(x: &[f32], rate: u32) -> f64 {
    let mid = &x[x.len() / 10..x.len() * 9 / 10];
    let ups: Vec<f64> = (1..mid.len())
        .filter(|&i| mid[i - 1] < 0.0 && mid[i] >= 0.0)
        .map(|i| {
            let (a, b) = (f64::from(mid[i - 1]), f64::from(mid[i]));
            (i - 1) as f64 + a / (a - b)
        })
        .collect();
    let (first, last) = (ups[0], ups[ups.len() - 1]);
    (ups.len() - 1) as f64 * f64::from(rate) / (last - first)
}

#[test]
fn lossy_files_decode_to_the_right_length_and_pitch() -> Result<()> {
    let cases = cases()?;
    for file in ["mono_440hz_22050.mp3", "mono_440hz_22050.ogg"] {
        let (rate, frames, _) = file_meta(&cases, file)?;
        let audio = decode_audio_file(fixtures().join(file))?;
        assert_eq!(audio.sample_rate, rate, "{file}");
        let len = audio.samples.len();
        println!("{file}: {len} samples decoded, {frames} written");
        // Within one MP3 frame (1152 samples) of what was written.
        assert!(
            len.abs_diff(frames) <= 1152,
            "{file}: {len} samples, wrote {frames}"
        );
        let hz = zero_crossing_hz(&audio.samples, audio.sample_rate);
        assert!((hz - 440.0).abs() < 1.0, "{file}: {hz} Hz");
        let peak = audio.samples.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
        assert!((0.4..0.6).contains(&peak), "{file}: peak {peak}, wrote 0.5");
    }
    Ok(())
}

#[test]
fn load_audio_resamples_to_16khz() -> Result<()> {
    let x = load_audio(fixtures().join("mono_440hz_22050.ogg"), 16000)?;
    // ceil(22050 * 16000 / 22050) for a full decode; the pitch is kept.
    assert!(
        x.len().abs_diff(16000) <= 1152 * 16000 / 22050,
        "{}",
        x.len()
    );
    assert!((zero_crossing_hz(&x, 16000) - 440.0).abs() < 1.0);
    let x = load_audio(fixtures().join("stereo_s16_22050.wav"), 16000)?;
    assert_eq!(x.len(), 4000); // ceil(5512 * 16000 / 22050)
    Ok(())
}

// ---- bad files -------------------------------------------------------------------------------

#[test]
fn bad_files_are_errors_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let read = |f: &str| std::fs::read(fixtures().join(f));
    let (wav, flac) = (
        read("stereo_s16_22050.wav")?,
        read("stereo_s16_22050.flac")?,
    );
    let (mp3, ogg) = (read("mono_440hz_22050.mp3")?, read("mono_440hz_22050.ogg")?);
    // Every other byte of the FLAC frames flipped.
    let mut damaged_flac = flac.clone();
    damaged_flac[200..]
        .iter_mut()
        .step_by(2)
        .for_each(|b| *b ^= 0x5a);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.wav", vec![], "is empty"),
        ("header_only.wav", wav[..30].to_vec(), "truncated"),
        ("half.wav", wav[..wav.len() / 2].to_vec(), "truncated"),
        (
            "one_byte_short.wav",
            wav[..wav.len() - 1].to_vec(),
            "truncated",
        ),
        (
            "text.mp3",
            b"hello, this is not audio\n".repeat(20),
            "not an audio file",
        ),
        ("zeros.wav", vec![0u8; 4096], "not an audio file"),
        ("header_only.flac", flac[..20].to_vec(), "truncated"),
        ("half.flac", flac[..flac.len() / 2].to_vec(), "truncated"),
        ("damaged.flac", damaged_flac, "damaged"),
        ("half.mp3", mp3[..mp3.len() / 2].to_vec(), "truncated"),
        ("half.ogg", ogg[..ogg.len() / 2].to_vec(), "truncated"),
    ];
    for (name, bytes, says) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes)?;
        let err = decode_audio_file(&path).expect_err(name).to_string();
        println!("{name}: {err}");
        assert!(err.contains(&path.display().to_string()), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        let err = decode_audio_bytes(bytes, name).expect_err(name).to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    let missing = dir.path().join("missing.wav");
    let err = load_audio(&missing, 16000)
        .expect_err("missing")
        .to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    Ok(())
}

// ---- resampling ------------------------------------------------------------------------------

fn sine(n: usize, rate: f64, hz: f64, amp: f64) -> Vec<f32> {
    tone(n, rate, hz, amp).iter().map(|&v| v as f32).collect()
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Normalized correlation of `x` with the ideal sine at 16 kHz, away from the edges.
fn correlation_with_ideal(x: &[f32], hz: f64) -> f64 {
    let ideal = sine(x.len(), 16000.0, hz, 1.0);
    let (a, b) = (&x[800..x.len() - 800], &ideal[800..x.len() - 800]);
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| f64::from(p) * f64::from(q))
        .sum();
    dot / (rms(a) * rms(b) * a.len() as f64)
}

#[test]
fn resampling_keeps_length_and_pitch() -> Result<()> {
    for (rate, hz, n) in [
        (44100u32, 1000.0, 44100usize),
        (8000, 440.0, 8000),
        (48000, 3000.0, 24000),
    ] {
        let x = sine(n, f64::from(rate), hz, 0.5);
        let y = resample(&x, rate, 16000)?;
        let want = (n * 16000).div_ceil(rate as usize);
        assert_eq!(y.len(), want, "{rate} Hz");
        let corr = correlation_with_ideal(&y, hz);
        let found = zero_crossing_hz(&y, 16000);
        println!("{rate} Hz -> 16 kHz, {hz} Hz sine: correlation {corr:.8}, {found:.3} Hz");
        assert!(
            corr > 0.9999,
            "{rate} Hz: correlation with the ideal sine {corr}"
        );
        assert!((found - hz).abs() < 0.5, "{rate} Hz: {found} Hz");
        assert!(
            (rms(&y) / rms(&x) - 1.0).abs() < 0.01,
            "{rate} Hz: level changed"
        );
    }
    Ok(())
}

#[test]
fn downsampling_removes_what_16khz_cannot_hold() -> Result<()> {
    // 12 kHz is above the 8 kHz Nyquist frequency of 16 kHz audio: it must not alias to 4 kHz.
    let x = sine(44100, 44100.0, 12000.0, 0.5);
    let y = resample(&x, 44100, 16000)?;
    let ratio = rms(&y[800..15200]) / rms(&x);
    println!("12 kHz tone, 44.1 -> 16 kHz: {ratio:.2e} of its level left");
    assert!(ratio < 1e-3, "aliasing: {ratio}");
    Ok(())
}
