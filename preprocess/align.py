"""Offline word alignment: synthesise the transcript word by word with espeak-ng and align it to
the recording with dynamic time warping over MFCCs (the approach of the aeneas aligner).

Each word is spoken by the espeak-ng voice of its language, so the synthetic template's word
boundaries are known exactly; DTW maps them onto the recording. espeak-ng comes as a library with
its voices from PyPI (preprocess/espeak.py), so this runs anywhere `make setup` ran; Montreal Forced
Aligner, where installed, is the more accurate option.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import soundfile as sf

from preprocess import espeak
from preprocess.features import WordTime

# espeak-ng voice files: `en` is British English, `cmn-latn-pinyin` reads pinyin.
VOICES = {"ms": "ms", "en": "en", "zh": "cmn-latn-pinyin", "particle": "ms", "other": "en"}
FEATURE_RATE_HZ = 16_000
HOP_S = 0.01
GAP_S = 0.05


def available() -> bool:
    return espeak.available()


@lru_cache(maxsize=4096)
def _speak(word: str, voice: str) -> tuple[np.ndarray, int]:
    audio, rate = espeak.synthesize(word, voice)
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return (audio[voiced[0] : voiced[-1] + 1] if voiced.size else audio), rate


def _features(audio: np.ndarray, rate: int) -> np.ndarray:
    x = librosa.resample(audio, orig_sr=rate, target_sr=FEATURE_RATE_HZ) if rate != FEATURE_RATE_HZ else audio
    hop = int(HOP_S * FEATURE_RATE_HZ)
    mfcc = librosa.feature.mfcc(y=x, sr=FEATURE_RATE_HZ, n_mfcc=13, n_fft=400, hop_length=hop)[1:]
    # Per-utterance mean/variance normalisation: the synthetic voice and the speaker differ in timbre.
    return (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-8)


def template(words: list[tuple[str, str]]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The transcript spoken word by word at FEATURE_RATE_HZ, and each word's (start, end) in it."""
    pieces, bounds, cursor = [np.zeros(int(GAP_S * FEATURE_RATE_HZ), np.float32)], [], GAP_S
    for text, lang in words:
        audio, rate = _speak(text, VOICES.get(lang, "en"))
        audio = librosa.resample(audio, orig_sr=rate, target_sr=FEATURE_RATE_HZ)
        bounds.append((cursor, cursor + len(audio) / FEATURE_RATE_HZ))
        cursor += len(audio) / FEATURE_RATE_HZ + GAP_S
        pieces += [audio, np.zeros(int(GAP_S * FEATURE_RATE_HZ), np.float32)]
    return np.concatenate(pieces), bounds


def align(audio: np.ndarray, rate: int, words: list[tuple[str, str]]) -> list[WordTime]:
    """Word (start, end) times in `audio` for `words` given as (text, language tag)."""
    synthetic, bounds = template(words)
    ref = _features(synthetic, FEATURE_RATE_HZ)
    rec = _features(audio.astype(np.float32), rate)
    _, path = librosa.sequence.dtw(X=ref, Y=rec, metric="euclidean")
    path = path[::-1]  # ascending
    ref_idx, rec_idx = path[:, 0], path[:, 1]

    def mapped(t: float, first: bool) -> float:
        frame = int(round(t / HOP_S))
        hits = rec_idx[ref_idx == min(frame, ref_idx[-1])]
        return float((hits.min() if first else hits.max()) * HOP_S)

    times = [WordTime(mapped(s, True), mapped(e, False)) for s, e in bounds]
    duration = len(audio) / rate
    return [WordTime(min(t.start_s, duration), min(max(t.end_s, t.start_s + HOP_S), duration)) for t in times]


def evaluate(corpus_dir: str, every: int = 4, seed: int = 0) -> dict[str, float]:
    """Word-boundary error of `align` on a corpus with true `word_timings` (the bundled one), after
    time-stretching (x0.85..1.15), pitch-shifting (+-2 semitones) and adding noise (20 dB SNR)."""
    import json
    from pathlib import Path

    rng = np.random.default_rng(seed)
    rows = [json.loads(line) for line in (Path(corpus_dir) / "manifest.jsonl").read_text().splitlines()]
    errors = []
    for row in rows[::every]:
        audio, rate = sf.read(Path(corpus_dir) / row["audio"], dtype="float32")
        stretch = float(rng.choice([0.85, 1.0, 1.15]))
        audio = librosa.effects.time_stretch(audio, rate=stretch)
        audio = librosa.effects.pitch_shift(audio, sr=rate, n_steps=float(rng.uniform(-2, 2)))
        noise = rng.normal(0, np.sqrt(np.mean(audio**2)) * 10 ** (-20 / 20), audio.shape)
        audio = (audio + noise).astype(np.float32)
        truth = row["word_timings"]
        got = align(audio, rate, [(w["word"], w["lang"]) for w in truth])
        for t, g in zip(truth, got, strict=True):
            errors += [abs(g.start_s - t["start"] / stretch), abs(g.end_s - t["end"] / stretch)]
    errs = np.array(errors) * 1000
    return {"utterances": len(rows[::every]), "boundaries": len(errs),
            "median_ms": float(np.median(errs)), "p90_ms": float(np.percentile(errs, 90))}
