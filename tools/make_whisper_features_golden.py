"""Golden cases for lmgen's `audio` module (Whisper's log-mel input features), made with transformers.

Run from the repository root with transformers 5.17 / numpy, and soundfile (`pip install soundfile`,
whose libsndfile writes FLAC, MP3 and Ogg Vorbis):
    python tools/make_whisper_features_golden.py crates/lmgen/tests/fixtures/whisper_features
Writes:
  features.safetensors  for each case `{case}.input_features` [b, n_mels, k] f32 (the frames listed in
                        `{case}.frames` [k] i64 only, to keep the file small), `{case}.attention_mask`
                        [b, n_frames] i64 where asked; `mel_filters_{80,128}` [201, n_mels] f64 (transformers'
                        `mel_filter_bank` as WhisperFeatureExtractor builds it); the decoded audio files'
                        expected samples `{file}.channels` [c, n] f32.
  cases.json            per case: its signals, the extractor settings, the __call__ arguments, the full
                        output shape; per signal: the recipe and checksums (the test rebuilds the signals
                        from the same integer recipes and checks them against these first).
  preprocessor_config.json  a whisper-large-v3-like config (128 mels) as transformers writes it.
  *.wav *.flac *.mp3 *.ogg  short synthetic files for the decoder, with their expected length and rate.

The features come from transformers' numpy path (`_np_extract_fbank_features`: audio_utils.spectrogram
in float64), which lmgen reproduces; with torch installed transformers uses `_torch_extract_fbank_features`
(torch.stft in float32) instead: the script prints how far that path is from the numpy one.

Signals are integers (int16 range, divided by 32768, so exact in float32), built from sines and a 64-bit
LCG, so that a test can rebuild them bit for bit instead of storing 31 s of audio.
"""
import json
import math
import os
import sys

import numpy as np
import soundfile as sf
from safetensors.numpy import save_file

import transformers.models.whisper.feature_extraction_whisper as fe_module
from transformers import WhisperFeatureExtractor

SR = 16000
MASK64 = (1 << 64) - 1


def lcg(n, seed, shift):
    """n integers in [-32768 >> shift, 32767 >> shift] from a 64-bit LCG (Knuth's MMIX constants)."""
    state = seed
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK64
        out[i] = ((state >> 48) - 32768) >> shift
    return out


def tone(n, sr, freq, amp):
    t = np.arange(n, dtype=np.float64) / sr
    return amp * np.sin(2.0 * math.pi * freq * t)


def sweep(n, sr, f0, f1, amp):
    t = np.arange(n, dtype=np.float64) / sr
    k = (f1 - f0) / (n / sr)
    return amp * np.sin(2.0 * math.pi * (f0 * t + 0.5 * k * t * t))


def to_int(x):
    return np.rint(x).astype(np.int64)


# Each recipe is what the Rust test rebuilds (tests/whisper_features.rs, `signal`).
SIGNALS = {
    # A 5 s linear chirp 100 Hz -> 7900 Hz.
    "sweep": {"recipe": "sweep", "n": 5 * SR, "f0": 100.0, "f1": 7900.0, "amp": 12000.0},
    # 2 s of uniform white noise.
    "noise": {"recipe": "noise", "n": 2 * SR, "seed": 1, "shift": 2},
    # 1 s of digital silence, a 0.5 s 1 kHz tone burst, 1.5 s of silence.
    "burst": {"recipe": "burst", "n": 3 * SR, "start": SR, "len": SR // 2, "freq": 1000.0, "amp": 16000.0},
    # 31 s (longer than Whisper's 30 s window): three tones and quiet noise.
    "long": {"recipe": "long", "n": 31 * SR, "seed": 7, "shift": 4},
    # 170 samples: shorter than n_fft // 2 + 1, so the reflect padding reflects more than once.
    "tiny": {"recipe": "noise", "n": 170, "seed": 5, "shift": 1},
}


def signal_ints(spec):
    n = spec["n"]
    if spec["recipe"] == "sweep":
        return to_int(sweep(n, SR, spec["f0"], spec["f1"], spec["amp"]))
    if spec["recipe"] == "noise":
        return lcg(n, spec["seed"], spec["shift"])
    if spec["recipe"] == "burst":
        x = np.zeros(n, dtype=np.int64)
        s, m = spec["start"], spec["len"]
        x[s : s + m] = to_int(tone(m, SR, spec["freq"], spec["amp"]))
        return x
    if spec["recipe"] == "long":
        x = tone(n, SR, 220.0, 6000.0) + tone(n, SR, 1234.5, 3000.0) + tone(n, SR, 5000.0, 1500.0)
        return to_int(x) + lcg(n, spec["seed"], spec["shift"])
    raise ValueError(spec["recipe"])


def checksums(ints):
    # Python ints: exact. The polynomial hash is mod 2^61-1 over (value + 32768).
    h = 0
    for v in ints.tolist():
        h = (h * 1000003 + v + 32768) % ((1 << 61) - 1)
    return {"sum": int(ints.sum()), "sum_sq": int((ints * ints).sum()), "hash": h}


# name: (signals, feature_size, __call__ kwargs, frames to store: "all" or a list)
def strided(n, head, step):
    return sorted(set(range(min(head, n))) | set(range(0, n, step)) | {n - 1})


CASES = {
    "sweep_longest": (["sweep"], 80, {"padding": "longest"}, "all"),
    "noise_max_length": (["noise"], 80, {}, strided(3000, 220, 20)),
    "burst_128_normalized": (
        ["burst"],
        128,
        {"padding": "longest", "do_normalize": True, "return_attention_mask": True},
        "all",
    ),
    "long_truncated": (["long"], 80, {}, strided(3000, 0, 9)),
    "long_untruncated": (
        ["long"],
        80,
        {"padding": "longest", "truncation": False, "return_attention_mask": True},
        strided(3100, 0, 10) + list(range(2990, 3010)),
    ),
    "batch_normalized": (
        ["noise", "sweep"],
        80,
        {"padding": "longest", "do_normalize": True, "return_attention_mask": True},
        strided(500, 0, 4) + list(range(195, 205)),
    ),
    "batch_128_max_length": (["burst", "noise"], 128, {"return_attention_mask": True}, strided(3000, 0, 25)),
    "tiny_longest": (["tiny"], 80, {"padding": "longest"}, "all"),
}


def numpy_path(extractor, batch, kwargs):
    fe_module.is_torch_available = lambda: False
    try:
        return extractor(batch, sampling_rate=SR, return_tensors="np", **kwargs)
    finally:
        fe_module.is_torch_available = lambda: True


def write_audio_files(out, tensors, meta):
    sr = 22050
    n = sr // 4
    left = to_int(tone(n, sr, 440.0, 10000.0))
    right = lcg(n, 3, 3)
    stereo = np.stack([left, right], axis=1).astype(np.int16)
    for ext, fmt in [("wav", "WAV"), ("flac", "FLAC")]:
        name = f"stereo_s16_22050.{ext}"
        sf.write(os.path.join(out, name), stereo, sr, format=fmt, subtype="PCM_16")
        meta[name] = {"sample_rate": sr, "frames": n, "channels": 2, "lossless": True}
    tensors["stereo_s16.channels"] = (np.stack([left, right]) / 32768.0).astype(np.float32)

    mono = tone(sr, sr, 440.0, 0.5).astype(np.float32)
    for ext, fmt, subtype in [("mp3", "MP3", "MPEG_LAYER_III"), ("ogg", "OGG", "VORBIS")]:
        name = f"mono_440hz_22050.{ext}"
        sf.write(os.path.join(out, name), mono, sr, format=fmt, subtype=subtype)
        meta[name] = {"sample_rate": sr, "frames": sr, "channels": 1, "lossless": False, "tone_hz": 440.0}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "crates/lmgen/tests/fixtures/whisper_features"
    os.makedirs(out, exist_ok=True)
    tensors = {}
    signals = {}
    for name, spec in SIGNALS.items():
        ints = signal_ints(spec)
        assert ints.min() >= -32768 and ints.max() <= 32767, name
        signals[name] = (ints / 32768.0).astype(np.float32)
        SIGNALS[name] = {**spec, **checksums(ints)}

    extractors = {size: WhisperFeatureExtractor(feature_size=size) for size in (80, 128)}
    for size, extractor in extractors.items():
        tensors[f"mel_filters_{size}"] = extractor.mel_filters.astype(np.float64)

    cases = {}
    for name, (names, size, kwargs, frames) in CASES.items():
        extractor = extractors[size]
        batch = [signals[s] for s in names]
        got = numpy_path(extractor, batch, kwargs)
        feats = got["input_features"].astype(np.float32)
        try:
            torch_feats = extractor(batch, sampling_rate=SR, return_tensors="np", **kwargs)["input_features"]
            torch_diff = f"{np.abs(torch_feats - feats).max():.3g}"
        except RuntimeError as e:  # torch.stft's reflect padding needs more than n_fft // 2 samples
            torch_diff = f"fails ({str(e).splitlines()[0][:60]}...)"
        n_frames = feats.shape[-1]
        keep = list(range(n_frames)) if frames == "all" else sorted(set(f for f in frames if f < n_frames))
        tensors[f"{name}.input_features"] = np.ascontiguousarray(feats[:, :, keep])
        tensors[f"{name}.frames"] = np.asarray(keep, dtype=np.int64)
        if "attention_mask" in got:
            tensors[f"{name}.attention_mask"] = got["attention_mask"].astype(np.int64)
        cases[name] = {
            "signals": names,
            "feature_size": size,
            "kwargs": kwargs,
            "shape": list(feats.shape),
        }
        print(
            f"{name}: {list(feats.shape)}, stored {len(keep)} frames; "
            f"torch path vs numpy path max |diff| {torch_diff}"
        )

    files = {}
    write_audio_files(out, tensors, files)

    save_file(tensors, os.path.join(out, "features.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"sampling_rate": SR, "signals": SIGNALS, "cases": cases, "files": files}, f, indent=1)
        f.write("\n")
    extractors[128].to_json_file(os.path.join(out, "preprocessor_config.json"))
    total = sum(os.path.getsize(os.path.join(out, p)) for p in os.listdir(out))
    print(f"wrote {out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
