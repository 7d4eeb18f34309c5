//! Decoding audio files (WAV, FLAC, MP3, Ogg Vorbis) to mono float32 samples, with symphonia.
//!
//! transformers' ASR pipeline hands file bytes to ffmpeg (`pipelines/audio_utils.py`, `ffmpeg_read`:
//! `-ac 1 -ar 16000 -f f32le`), and `audio_utils.load_audio` uses torchcodec or librosa; here symphonia
//! (pure Rust) decodes and [`super::resample()`] converts the rate. Like them:
//! - integer PCM becomes float32 as `sample / 2^(bits - 1)` (16-bit: `/ 32768`), so lossless files
//!   (WAV, FLAC) decode to exactly the samples librosa/soundfile and ffmpeg give;
//! - channels are averaged to mono (`sum / channels`, in float32), as transformers' `_to_mono` and
//!   ffmpeg's `-ac 1` do for stereo;
//! - encoder delay and padding are trimmed when the file says how much (MP3 LAME/Xing headers, Ogg
//!   granule positions), so an MP3 decodes to its original length; without that information an MP3
//!   is a few hundred samples longer (decoders differ there).
//!
//! A packet the decoder rejects is skipped with a warning, as ffmpeg does; a file none of whose
//! packets decode is an error, and so is a file that ends in the middle of a packet or holds fewer
//! samples than its header declares (WAV, FLAC, MP3 with a Xing/LAME tag), where ffmpeg would return
//! what it could read. Errors name the file (or the name given with the bytes).

use std::io::Cursor;
use std::path::Path;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::error::{Error, Result};

/// The formats this build decodes, for messages.
pub const SUPPORTED_FORMATS: &str = "WAV (PCM), FLAC, MP3, Ogg Vorbis";

/// Decoded audio: mono samples at the file's own rate.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples (channels averaged), float32 in [-1, 1] for integer formats.
    pub samples: Vec<f32>,
    /// The file's sample rate, in Hz.
    pub sample_rate: u32,
    /// How many channels the file had (before the down-mix).
    pub channels: usize,
}

impl DecodedAudio {
    /// Length in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Decodes an audio file. The extension helps pick the format but the content decides.
pub fn decode_audio_file(path: impl AsRef<Path>) -> Result<DecodedAudio> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let name = path.display().to_string();
    if len == 0 {
        return Err(Error::input(format!(
            "`{name}` is empty (0 bytes): no audio to decode"
        )));
    }
    let extension = path.extension().and_then(|e| e.to_str());
    decode(Box::new(file), extension, &name)
}

/// Decodes an audio file held in memory. `name` (a file name, or a description such as "the
/// uploaded audio") is used in errors, and its extension, if any, as a format hint.
pub fn decode_audio_bytes(bytes: &[u8], name: &str) -> Result<DecodedAudio> {
    if bytes.is_empty() {
        return Err(Error::input(format!(
            "`{name}` is empty (0 bytes): no audio to decode"
        )));
    }
    let extension = Path::new(name).extension().and_then(|e| e.to_str());
    decode(Box::new(Cursor::new(bytes)), extension, name)
}

/// Reads every packet of the first audio track and down-mixes it.
fn decode<'a>(
    source: Box<dyn MediaSource + 'a>,
    extension: Option<&str>,
    name: &str,
) -> Result<DecodedAudio> {
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let stream = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => Error::input(format!(
                "`{name}` is not an audio file lmgen can read (supported: {SUPPORTED_FORMATS})"
            )),
            other => corrupt(name, &other),
        })?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| Error::input(format!("`{name}` has no audio track")))?;
    let track_id = track.id;
    // The length the header promises, where it is exact: WAV's data chunk, FLAC's STREAMINFO, an
    // MP3's Xing/LAME frame count (without that tag symphonia only estimates it from the bitrate).
    let exact = match format.format_info().short_name {
        "wave" | "flac" => true,
        "mp3" => track.delay.is_some(),
        _ => false,
    };
    let declared = track.num_frames.filter(|_| exact);
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| Error::input(format!("`{name}` has no audio track")))?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(what) => Error::unsupported(format!(
                "`{name}`: its audio codec cannot be decoded ({what}); supported: {SUPPORTED_FORMATS}"
            )),
            other => corrupt(name, &other),
        })?;

    let mut samples = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut spec: Option<(u32, usize)> = None;
    let (mut decoded, mut skipped) = (0usize, 0usize);
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(e) => return Err(corrupt(name, &e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            Err(SymphoniaError::DecodeError(why)) => {
                tracing::warn!("`{name}`: skipped an undecodable packet ({why})");
                skipped += 1;
                continue;
            }
            Err(SymphoniaError::ResetRequired) => {
                return Err(Error::unsupported(format!(
                    "`{name}`: the stream changes its parameters part-way (a chained stream); \
                     decode its parts separately"
                )));
            }
            Err(e) => return Err(corrupt(name, &e)),
        };
        decoded += 1;
        let rate = buffer.spec().rate();
        let channels = buffer.spec().channels().count();
        match spec {
            None => spec = Some((rate, channels)),
            Some(first) if first != (rate, channels) => {
                return Err(Error::unsupported(format!(
                    "`{name}`: the sample rate or channel count changes part-way ({} Hz x {} -> \
                     {rate} Hz x {channels})",
                    first.0, first.1
                )));
            }
            Some(_) => {}
        }
        if channels == 0 {
            return Err(Error::input(format!("`{name}`: a packet has no channels")));
        }
        buffer.copy_to_vec_interleaved(&mut interleaved);
        samples.reserve(interleaved.len() / channels);
        if channels == 1 {
            samples.extend_from_slice(&interleaved);
        } else {
            // [frames, channels] -> [frames]
            let n = channels as f32;
            samples.extend(
                interleaved
                    .chunks_exact(channels)
                    .map(|frame| frame.iter().sum::<f32>() / n),
            );
        }
    }
    let got = samples.len() as u64;
    if let Some(declared) = declared.filter(|&n| got < n) {
        return Err(Error::input(format!(
            "`{name}` is truncated or damaged: its header declares {declared} samples per channel, \
             {got} could be decoded"
        )));
    }
    let Some((sample_rate, channels)) = spec else {
        return Err(if skipped > 0 {
            Error::input(format!(
                "`{name}` is corrupt: none of its {skipped} audio packets could be decoded"
            ))
        } else {
            Error::input(format!("`{name}` has no audio samples"))
        });
    };
    if samples.is_empty() {
        return Err(Error::input(format!("`{name}` has no audio samples")));
    }
    tracing::debug!(
        "`{name}`: {} samples at {sample_rate} Hz from {channels} channel(s), {decoded} packets",
        samples.len()
    );
    Ok(DecodedAudio {
        samples,
        sample_rate,
        channels,
    })
}

/// A file that cannot be read to the end: truncated, or damaged.
fn corrupt(name: &str, err: &SymphoniaError) -> Error {
    match err {
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::input(format!(
                "`{name}` is truncated: it ends in the middle of its audio"
            ))
        }
        other => Error::input(format!(
            "`{name}` is corrupt or not a supported audio file: {other}"
        )),
    }
}
