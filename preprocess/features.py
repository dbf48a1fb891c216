"""Per-utterance features: F0 (pyworld) and energy per Mimi frame, word timings, frame masks.

Word timings come from the manifest when it has them (`word_timings`: [{word, start, end}], the
bundled corpus's true timings), else from the espeak-ng + DTW aligner (preprocess/align.py), else
from a proportional split of the speech by word length; every sample records which (`aligner`).
Masks per 12.5 Hz frame feed the trainer's loss weights: frames
inside a particle word, and frames within a margin of a language switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyworld

F0_FLOOR_HZ, F0_CEIL_HZ = 60.0, 600.0


@dataclass(frozen=True)
class WordTime:
    start_s: float
    end_s: float


def f0_energy(audio: np.ndarray, sample_rate: int, frame_rate_hz: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """F0 in Hz (0 where unvoiced) and energy in dB, one value per codec frame."""
    x = audio.astype(np.float64)
    period_ms = 10.0
    f0, t = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=period_ms)
    f0 = pyworld.stonemask(x, f0, t, sample_rate)
    per_frame = max(1, round(1000 / frame_rate_hz / period_ms))  # 8 pitch frames per Mimi frame
    f0_frames = np.zeros(frames, np.float32)
    for i in range(frames):
        chunk = f0[i * per_frame : (i + 1) * per_frame]
        voiced = chunk[chunk > 0]
        f0_frames[i] = float(np.median(voiced)) if voiced.size else 0.0
    hop = int(round(sample_rate / frame_rate_hz))
    energy = np.zeros(frames, np.float32)
    for i in range(frames):
        seg = x[i * hop : (i + 1) * hop]
        energy[i] = 10 * np.log10(np.mean(seg**2) + 1e-10) if seg.size else -100.0
    return f0_frames, energy


def manifest_times(words: list[dict[str, Any]], given: Any, offset_s: float,
                   duration_s: float) -> list[WordTime] | None:
    """The manifest's `word_timings` moved onto the cleaned audio's clock, or None when absent or
    not one valid (start < end) entry per word."""
    if not isinstance(given, list) or len(given) != len(words):
        return None
    try:
        times = [WordTime(max(0.0, float(g["start"]) - offset_s), min(duration_s, float(g["end"]) - offset_s))
                 for g in given]
    except (KeyError, TypeError, ValueError):
        return None
    return times if all(t.end_s > t.start_s for t in times) else None


def proportional_times(words: list[dict[str, Any]], speech: tuple[float, float]) -> list[WordTime]:
    """The speech between the trimmed edges shared among the words by their length."""
    start, end = speech
    lengths = np.array([max(1, len(w["text"])) for w in words], dtype=np.float64)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
    return [WordTime(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def frame_masks(words: list[dict[str, Any]], switches: list[int], times: list[WordTime], frames: int,
                frame_rate_hz: float, switch_margin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """particle_mask: frames overlapping a particle word; switch_mask: frames within the margin of a
    switch (the start of a word whose language differs from the previous word's)."""
    eps = 1e-6  # frame edges that merely touch a word do not overlap it
    starts = np.arange(frames) / frame_rate_hz + eps
    ends = (np.arange(frames) + 1) / frame_rate_hz - eps
    particle = np.zeros(frames, np.uint8)
    switch = np.zeros(frames, np.uint8)
    for word, t in zip(words, times, strict=True):
        if word.get("lang") == "particle":
            particle[(starts < t.end_s) & (ends > t.start_s)] = 1
    for index in switches:
        at = times[index].start_s
        switch[(starts < at + switch_margin_s) & (ends > at - switch_margin_s)] = 1
    return particle, switch


def speech_bounds(audio: np.ndarray, sample_rate: int, top_db: float) -> tuple[float, float]:
    import librosa

    _, (start, end) = librosa.effects.trim(audio, top_db=top_db)
    return start / sample_rate, end / sample_rate
