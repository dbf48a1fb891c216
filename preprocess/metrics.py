"""Objective metrics between a generated utterance and a reference of the same speaker and text.

All of them come from one WORLD analysis (pyworld) of each signal at a 5 ms frame period:

- MCD (dB): mel-cepstral distortion between the two spectral envelopes. WORLD's CheapTrick
  envelope -> real cepstrum -> frequency-warped (all-pass `alpha`, SPTK's `freqt`) mel-cepstrum of
  order 24; c0 (the energy) is excluded, as usual, so loudness does not count. The frames are
  paired by dynamic time warping over the mel-cepstra, and MCD = mean over the pairs of
  (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2).
- F0 RMSE in Hz and in cents (1200 * log2 of the ratio) on the DTW pairs voiced in both signals.
- Voicing decision error: the share of DTW pairs whose voiced/unvoiced decisions differ.
- Duration ratio: generated / reference speech duration (edge silence trimmed).
- Word-duration MAE (ms): mean |duration difference| of the same words, from word timings
  (preprocess/align.py on the generated audio; the reference's from the data or the aligner).
- CER: character error rate of an ASR transcript against the text, when an ASR model is
  configured (`evaluation.asr_model`); none is by default.

The alignment path uses the envelope only, so a pitch-shifted copy aligns as well as the original
and a time-stretched one aligns frame by frame to what it stretches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
import pyworld

FRAME_PERIOD_MS = 5.0
MCEP_ORDER = 24
F0_FLOOR_HZ, F0_CEIL_HZ = 60.0, 600.0
TRIM_TOP_DB = 40.0
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)


@lru_cache(maxsize=8)
def mcep_alpha(sample_rate: int) -> float:
    """The all-pass constant whose frequency warping best fits the mel scale at `sample_rate`
    (SPTK's choice: 0.42 at 16 kHz, 0.47 at 24 kHz, 0.55 at 44.1 kHz)."""
    points = 1000
    hz = (sample_rate / 2.0) / points * np.arange(points)
    mel = np.log1p(hz / 1000.0)
    mel /= mel[-1]
    omega = np.pi / points * np.arange(points)
    best, best_distance = 0.0, np.inf
    for alpha in np.arange(0.0, 1.0, 0.001):
        warped = np.arctan2((1 - alpha**2) * np.sin(omega), (1 + alpha**2) * np.cos(omega) - 2 * alpha)
        warped = np.where(warped < 0, warped + np.pi, warped)
        distance = float(np.sqrt(np.mean((mel - warped / warped[-1]) ** 2)))
        if distance < best_distance:
            best, best_distance = float(alpha), distance
    return round(best, 3)


@lru_cache(maxsize=16)
def _freqt_matrix(in_order: int, out_order: int, alpha: float) -> np.ndarray:
    """SPTK's `freqt` (cepstrum -> frequency-warped cepstrum) is linear: its matrix, built by
    running the recursion on every unit vector at once."""
    c1 = np.eye(in_order + 1)  # row i = unit cepstrum i
    b = 1.0 - alpha * alpha
    g = np.zeros((in_order + 1, out_order + 1))
    for i in range(in_order, -1, -1):
        d = g.copy()
        g[:, 0] = c1[:, i] + alpha * d[:, 0]
        if out_order >= 1:
            g[:, 1] = b * d[:, 0] + alpha * d[:, 1]
        for j in range(2, out_order + 1):
            g[:, j] = d[:, j - 1] + alpha * (d[:, j] - g[:, j - 1])
    return g


def envelope_to_mcep(envelope: np.ndarray, alpha: float, order: int = MCEP_ORDER) -> np.ndarray:
    """WORLD power envelopes (frames, fft/2+1) -> mel-cepstra (frames, order+1), as SPTK's sp2mc."""
    log_amplitude = 0.5 * np.log(np.maximum(envelope, 1e-20))
    cepstrum = np.fft.irfft(log_amplitude, axis=1)
    half = envelope.shape[1] - 1
    cepstrum = cepstrum[:, : half + 1].copy()
    cepstrum[:, 0] /= 2.0
    return cepstrum @ _freqt_matrix(half, order, alpha)


@dataclass(frozen=True)
class WorldAnalysis:
    f0_hz: np.ndarray  # (frames,), 0 where unvoiced
    mcep: np.ndarray  # (frames, order+1)
    speech_s: float  # duration after trimming edge silence
    sample_rate: int


def analyse(audio: np.ndarray, sample_rate: int) -> WorldAnalysis:
    """F0 and mel-cepstrum every 5 ms of the speech (edge silence trimmed)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"audio must be a non-empty finite mono signal, got shape {x.shape}")
    if np.max(np.abs(x)) > 0:
        _, (start, end) = librosa.effects.trim(x, top_db=TRIM_TOP_DB)
        x = x[start:end]
    min_samples = int(sample_rate * 4 * FRAME_PERIOD_MS / 1000)
    if x.size < min_samples:
        x = np.pad(x, (0, min_samples - x.size))
    f0, t = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, t, sample_rate)
    envelope = pyworld.cheaptrick(x, f0, t, sample_rate, f0_floor=F0_FLOOR_HZ)
    mcep = envelope_to_mcep(envelope, mcep_alpha(sample_rate))
    return WorldAnalysis(f0.astype(np.float64), mcep, x.size / sample_rate, sample_rate)


@dataclass(frozen=True)
class Comparison:
    """Metrics of one generated utterance against its reference; None where not measurable."""

    mcd_db: float
    f0_rmse_hz: float | None  # None: no frame voiced in both
    f0_rmse_cents: float | None
    voicing_error: float  # share of aligned frames whose voicing differs
    duration_ratio: float  # generated / reference speech duration
    voiced_pairs: int
    word_duration_mae_ms: float | None = None
    cer: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def dtw_path(reference: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """(pairs, 2) frame indices (reference, generated) of the DTW path over the mel-cepstra c1..cD."""
    _, path = librosa.sequence.dtw(X=reference[:, 1:].T, Y=generated[:, 1:].T, metric="euclidean")
    return path[::-1]


def compare(reference: WorldAnalysis, generated: WorldAnalysis) -> Comparison:
    """MCD, F0 RMSE, voicing error and duration ratio of `generated` against `reference`."""
    path = dtw_path(reference.mcep, generated.mcep)
    r, g = path[:, 0], path[:, 1]
    diff = reference.mcep[r, 1:] - generated.mcep[g, 1:]
    mcd = float(np.mean(MCD_SCALE * np.sqrt(np.sum(diff**2, axis=1))))
    f0_r, f0_g = reference.f0_hz[r], generated.f0_hz[g]
    voiced_r, voiced_g = f0_r > 0, f0_g > 0
    both = voiced_r & voiced_g
    rmse_hz = rmse_cents = None
    if both.any():
        rmse_hz = float(np.sqrt(np.mean((f0_r[both] - f0_g[both]) ** 2)))
        rmse_cents = float(np.sqrt(np.mean((1200 * np.log2(f0_g[both] / f0_r[both])) ** 2)))
    return Comparison(
        mcd_db=mcd, f0_rmse_hz=rmse_hz, f0_rmse_cents=rmse_cents,
        voicing_error=float(np.mean(voiced_r != voiced_g)),
        duration_ratio=generated.speech_s / reference.speech_s if reference.speech_s > 0 else float("nan"),
        voiced_pairs=int(both.sum()),
    )


def compare_audio(reference: np.ndarray, generated: np.ndarray, sample_rate: int) -> Comparison:
    return compare(analyse(reference, sample_rate), analyse(generated, sample_rate))


def word_duration_mae_ms(reference: list[tuple[float, float]], generated: list[tuple[float, float]]) -> float:
    """Mean absolute difference of word durations (ms) between two timings of the same words."""
    if len(reference) != len(generated) or not reference:
        raise ValueError(f"word timings must list the same words: {len(reference)} vs {len(generated)}")
    ref = np.array([end - start for start, end in reference])
    gen = np.array([end - start for start, end in generated])
    return float(np.mean(np.abs(ref - gen)) * 1000)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two strings."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _cer_text(text: str) -> str:
    # Case, punctuation and spacing are not what a listener hears.
    return "".join(ch for ch in text.lower() if ch.isalnum())


def cer(reference_text: str, hypothesis: str) -> float:
    """Character error rate: edits / reference characters, on lower-cased letters and digits."""
    ref, hyp = _cer_text(reference_text), _cer_text(hypothesis)
    if not ref:
        raise ValueError("the reference text has no letters or digits")
    return edit_distance(ref, hyp) / len(ref)


class Transcriber:
    """An ASR model (a transformers speech-recognition pipeline: a hub id or a local path)."""

    def __init__(self, model: str, device: str = "cpu"):
        from transformers import pipeline

        try:
            self._pipe = pipeline("automatic-speech-recognition", model=model, device=device)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load the ASR model {model!r} named by evaluation.asr_model: {exc}; "
                             "give a local path or a reachable hub id, or unset it to skip CER") from None

    def __call__(self, audio: np.ndarray, sample_rate: int) -> str:
        return str(self._pipe({"raw": np.asarray(audio, np.float32), "sampling_rate": sample_rate})["text"])
