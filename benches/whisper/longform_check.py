#!/usr/bin/env python3
"""Long-form Whisper: do lmgen's 30-second windows line up with transformers' on a 75 s input?

The golden tiny Whisper (crates/lmgen/tests/fixtures/golden-seq2seq/models/whisper: d_model 32,
its tokenizer with the 1501 timestamp tokens and Whisper's generation config) is rebuilt with
Whisper's real window, `max_source_positions` 1500 (3000 frames, 30 s): every weight copied, the
encoder's sinusoidal position table made for 1500 positions as transformers makes it, and the
head's timestamp rows rescaled (up to <|8.00|> raised, later ones lowered) so that the random model
closes segments within each window and the seek loop moves by what it predicts, not by whole
windows. A 75 s signal (a chirp with noise, 16 kHz WAV) then goes through
`WhisperForConditionalGeneration.generate(..., return_timestamps=True, return_segments=True)`
(transformers 5.17, features with `padding="longest"`, `truncation=False`) and through
`lmgen transcribe --format verbose_json --timestamps`. Segments (start, end, tokens) must be the
same, window after window.

    python3 benches/whisper/longform_check.py --bin target/release/lmgen [--seconds 75]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave

import numpy as np
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "lmgen", "tests", "fixtures",
                      "golden-seq2seq", "models", "whisper")
SR = 16000


def checkpoint(out):
    """The golden tiny Whisper with 30-second windows."""
    src = WhisperForConditionalGeneration.from_pretrained(GOLDEN).eval()
    cfg = WhisperConfig.from_pretrained(GOLDEN)
    cfg.max_source_positions = 1500
    cfg.max_target_positions = 448
    model = WhisperForConditionalGeneration(cfg).eval()
    state = {k: v for k, v in src.state_dict().items() if "encoder.embed_positions" not in k
             and "decoder.embed_positions" not in k}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("embed_positions" in k for k in missing), (missing, unexpected)
    with torch.no_grad():
        # Learned decoder positions: the golden 64 rows, then rows drawn like them.
        old = src.model.decoder.embed_positions.weight
        new = model.model.decoder.embed_positions.weight
        new[: old.shape[0]] = old
        g = torch.Generator().manual_seed(3)
        new[old.shape[0]:] = torch.randn(new.shape[0] - old.shape[0], new.shape[1], generator=g) * old.std()
        tok = json.load(open(os.path.join(GOLDEN, "tokenizer.json")))
        ts = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|0.00|>")
        model.proj_out.weight[ts:ts + 401].mul_(1.4)
        model.proj_out.weight[ts + 401:].mul_(0.5)
    model.save_pretrained(out)
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(GOLDEN, name), out)
    gen = json.load(open(os.path.join(out, "generation_config.json")))
    gen["max_length"] = 448
    json.dump(gen, open(os.path.join(out, "generation_config.json"), "w"))
    json.dump({"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80,
               "sampling_rate": SR, "hop_length": 160, "chunk_length": 30, "n_fft": 400,
               "padding_value": 0.0, "return_attention_mask": False},
              open(os.path.join(out, "preprocessor_config.json"), "w"))
    return out


def signal(seconds):
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * (150 + 20 * t) * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def write_wav(path, x):
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768.0  # what a decoder of the WAV reads back


def transformers_segments(ckpt, audio):
    model = WhisperForConditionalGeneration.from_pretrained(ckpt).eval()
    fe = WhisperFeatureExtractor.from_pretrained(ckpt)
    inputs = fe(audio, sampling_rate=SR, return_tensors="pt", padding="longest", truncation=False,
                return_attention_mask=True)
    with torch.no_grad():
        out = model.generate(inputs.input_features, attention_mask=inputs.attention_mask,
                             language="en", task="transcribe", return_timestamps=True,
                             return_segments=True)
    segs = out["segments"][0]
    return [(round(float(s["start"]), 2), round(float(s["end"]), 2), s["tokens"].tolist()) for s in segs]


def lmgen_segments(binary, ckpt, wav):
    out = subprocess.run([binary, "transcribe", wav, "--model", ckpt, "--language", "en",
                          "--timestamps", "--format", "verbose_json"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"lmgen transcribe failed:\n{out.stderr}")
    answer = json.loads(out.stdout)
    return answer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=float, default=75.0)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lmgen-longform-")
    ckpt = checkpoint(os.path.join(work, "whisper-30s"))
    wav = os.path.join(work, "input.wav")
    audio = write_wav(wav, signal(args.seconds))
    hf = transformers_segments(ckpt, audio)
    lm = lmgen_segments(args.bin, ckpt, wav)
    lm_segs = [(round(s["start"], 2), round(s["end"], 2), s.get("tokens")) for s in lm["segments"]]
    print(f"transformers: {len(hf)} segments, lmgen: {len(lm_segs)} segments")
    same = len(hf) == len(lm_segs)
    for i, (a, b) in enumerate(zip(hf, lm_segs)):
        ok = a[0] == b[0] and a[1] == b[1] and (b[2] is None or a[2] == b[2])
        same &= ok
        print(f"{i:3d} transformers {a[0]:6.2f}-{a[1]:6.2f} lmgen {b[0]:6.2f}-{b[1]:6.2f} "
              f"{'same' if ok else 'DIFFERENT'}")
    print("windows line up" if same else "MISMATCH")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
