"""Find the speech in a WAV file with a voice-activity-detection package (Silero VAD).

    python samples/voice_activity/vad.py vad.edgepkg speech.wav [--threshold 0.5]

Device-side API only (``edgekit.load(...).infer(...)``, numpy, the standard
library's ``wave``).  The package is Silero VAD's whole-sequence export: each
call takes 32 windows of 512 samples at 16 kHz (each with the 64 samples
before it), and the LSTM state ``h``/``c``, and returns a speech probability
per window and the new state, which the next call carries on.  Probabilities
become segments with hysteresis (speech starts above ``threshold``, ends
below ``threshold - 0.15``), then short gaps are bridged and short blips
dropped.  Prints the segments in seconds and the time per call.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import wave
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

import edgekit

SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
MIN_SPEECH_S = 0.25
MIN_SILENCE_S = 0.1


def read_wav(path: Path) -> np.ndarray:
    """Mono 16-bit PCM at 16 kHz → float32 in [-1, 1]."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getframerate() != SAMPLE_RATE:
            raise SystemExit(f"error: {path}: need 16-bit PCM at {SAMPLE_RATE} Hz, got "
                             f"{8 * w.getsampwidth()}-bit at {w.getframerate()} Hz; resample it first")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        if w.getnchannels() > 1:
            x = x.reshape(-1, w.getnchannels()).mean(axis=1)
    return x


def windows(audio: np.ndarray) -> np.ndarray:
    """[n, 576]: each 512-sample window after the 64 samples before it (zeros before the start)."""
    n = int(np.ceil(len(audio) / WINDOW))
    padded = np.zeros(CONTEXT + n * WINDOW, np.float32)
    padded[CONTEXT:CONTEXT + len(audio)] = audio
    idx = np.arange(n)[:, None] * WINDOW + np.arange(WINDOW + CONTEXT)[None, :]
    return padded[idx]


def speech_probabilities(model: "edgekit.Model", audio: np.ndarray) -> Tuple[np.ndarray, List[float]]:
    """One probability per 32 ms window, the LSTM state carried from call to call."""
    spec = {t.name: t for t in model.manifest.inputs}
    rows = spec["input"].shape[0]
    win = windows(audio)
    pad = (-len(win)) % rows
    win = np.concatenate([win, np.zeros((pad, win.shape[1]), np.float32)])
    h = np.zeros(spec["h"].shape, np.float32)
    c = np.zeros(spec["c"].shape, np.float32)
    probs, ms = [], []
    for i in range(0, len(win), rows):
        t0 = time.perf_counter()
        out = model.infer({"input": win[i:i + rows], "h": h, "c": c})
        ms.append((time.perf_counter() - t0) * 1e3)
        probs.append(out["speech_probs"].reshape(-1))
        h, c = out["hn"], out["cn"]
    p = np.concatenate(probs)[: len(win) - pad]
    return p, ms


def segments(probs: np.ndarray, threshold: float = 0.5) -> List[Tuple[float, float]]:
    """Speech segments (start, end) in seconds."""
    step = WINDOW / SAMPLE_RATE
    out: List[List[float]] = []
    on = False
    for i, p in enumerate(probs.tolist()):
        if not on and p >= threshold:
            on, start = True, i * step
        elif on and p < threshold - 0.15:
            on = False
            out.append([start, i * step])
    if on:
        out.append([start, len(probs) * step])
    merged: List[List[float]] = []
    for s, e in out:  # bridge short pauses inside speech
        if merged and s - merged[-1][1] < MIN_SILENCE_S:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    return [(round(s, 3), round(e, 3)) for s, e in merged if e - s >= MIN_SPEECH_S]


def run(package: Path, wav: Path, threshold: float = 0.5) -> Dict[str, Any]:
    audio = read_wav(wav)
    with edgekit.load(package) as model:
        probs, ms = speech_probabilities(model, audio)
    segs = segments(probs, threshold)
    return {
        "audio_s": round(len(audio) / SAMPLE_RATE, 3),
        "segments": segs,
        "speech_s": round(sum(e - s for s, e in segs), 3),
        "calls": len(ms),
        "first_call_ms": ms[0],
        "median_call_ms": float(np.median(ms[1:] or ms)),
        "real_time_factor": float(sum(ms) / 1e3 / (len(audio) / SAMPLE_RATE)),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("wav", type=Path)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.package, args.wav, args.threshold)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    for s, e in res["segments"]:
        print(f"speech {s:7.3f} s - {e:7.3f} s")
    print(f"{res['speech_s']:.2f} s of speech in {res['audio_s']:.2f} s of audio; {res['calls']} calls of "
          f"{32 * WINDOW / SAMPLE_RATE:.3f} s audio each: first {res['first_call_ms']:.1f} ms, then median "
          f"{res['median_call_ms']:.2f} ms (real-time factor {res['real_time_factor']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
