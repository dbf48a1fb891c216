"""Per-utterance features: F0 (pyworld) and energy per Mimi frame, word timings, frame masks.

Word timings come from the manifest when it has them (`word_timings`: [{word, start, end}], the
bundled corpus's true timings; checked against the words and the audio, the row quarantined as
`timings_mismatch` when they do not fit), else from the espeak-ng + DTW aligner (preprocess/align.py), else
from a proportional split of the speech by word length; every sample records which (`aligner`).
Masks per 12.5 Hz frame feed the trainer's loss weights: frames
inside a particle word, and frames within a margin of a language switch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np
import pyworld

from preprocess.quarantine import RowError

F0_FLOOR_HZ, F0_CEIL_HZ = 60.0, 600.0
PITCH_RATE_HZ = 16_000


@dataclass(frozen=True)
class WordTime:
    start_s: float
    end_s: float


def f0_energy(audio: np.ndarray, sample_rate: int, frame_rate_hz: float, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """F0 in Hz (0 where unvoiced) and energy in dB, one value per codec frame."""
    # Pitch needs no more than 16 kHz; with DIO's internal decimation (speed=4) and StoneMask
    # refinement this is ~8x faster than at 24 kHz and agrees within 0.1% on the sample corpus.
    x16 = librosa.resample(audio.astype(np.float64), orig_sr=sample_rate, target_sr=PITCH_RATE_HZ,
                           res_type="soxr_hq") if sample_rate != PITCH_RATE_HZ else audio.astype(np.float64)
    period_ms = 10.0
    f0, t = pyworld.dio(x16, PITCH_RATE_HZ, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=period_ms,
                        speed=4)
    f0 = pyworld.stonemask(x16, f0, t, PITCH_RATE_HZ)
    per_frame = max(1, round(1000 / frame_rate_hz / period_ms))  # 8 pitch frames per Mimi frame
    padded = np.zeros(frames * per_frame)
    padded[: min(len(f0), len(padded))] = f0[: len(padded)]
    blocks = padded.reshape(frames, per_frame)
    voiced = blocks > 0
    counts = voiced.sum(axis=1)
    # Median of the voiced pitch frames within each codec frame (0 where none is voiced).
    masked = np.where(voiced, blocks, np.nan)
    with np.errstate(all="ignore"):
        f0_frames = np.where(counts > 0, np.nanmedian(np.where(counts[:, None] > 0, masked, 0.0), axis=1), 0.0)
    hop = int(round(sample_rate / frame_rate_hz))
    x = np.zeros(frames * hop)
    x[: min(len(audio), len(x))] = audio[: len(x)]
    energy = 10 * np.log10(np.mean(x.reshape(frames, hop) ** 2, axis=1) + 1e-10)
    return f0_frames.astype(np.float32), energy.astype(np.float32)


def parse_timings(given: Any) -> list[tuple[float, float]]:
    """The manifest's `word_timings` as (start_s, end_s) on the original file's clock: a list (a
    JSON array in a CSV cell) of {"start", "end"} objects or [start, end] pairs, with finite,
    non-negative times, each word ending after it starts, in order. Raises RowError
    (timings_mismatch) naming the first entry that is not: given timings are used as they are or
    the row is quarantined, never silently replaced by an aligner's."""
    if isinstance(given, str):  # a CSV cell
        try:
            given = json.loads(given)
        except (ValueError, RecursionError) as exc:
            raise _mismatch(f"word_timings is not a JSON list: {exc}") from None
    if not isinstance(given, list):
        raise _mismatch(f"word_timings must be a list with one {{start, end}} per word, got {type(given).__name__}")
    pairs: list[tuple[float, float]] = []
    for i, entry in enumerate(given, start=1):
        if isinstance(entry, dict):
            start, end = entry.get("start"), entry.get("end")
        elif isinstance(entry, list) and len(entry) == 2:
            start, end = entry
        else:
            raise _mismatch(f"word_timings entry {i} is {_short(entry)}, not {{start, end}} or [start, end]")
        if not (_is_number(start) and _is_number(end)):
            raise _mismatch(f"word_timings entry {i}: start {_short(start)} and end {_short(end)} must be numbers")
        start, end = float(start), float(end)
        if not (math.isfinite(start) and math.isfinite(end)):
            raise _mismatch(f"word_timings entry {i}: {start}-{end} s is not finite")
        if start < 0:
            raise _mismatch(f"word_timings entry {i} starts at {start} s, before the audio starts")
        if end <= start:
            raise _mismatch(f"word_timings entry {i} ends at {end} s, not after its start {start} s")
        if pairs and start < pairs[-1][0]:
            raise _mismatch(f"word_timings entry {i} starts at {start} s, before entry {i - 1} ({pairs[-1][0]} s): "
                            "entries must be in word order")
        pairs.append((start, end))
    return pairs


def manifest_times(words: list[dict[str, Any]], given: Any, offset_s: float, duration_s: float,
                   input_duration_s: float | None = None) -> list[WordTime] | None:
    """The manifest's `word_timings` (None when the row has none) moved onto the cleaned audio's
    clock: shifted by the trimmed lead `offset_s` and clipped to the kept `duration_s`. Raises
    RowError (timings_mismatch) when they are not one valid pair per word, when a word ends after
    the file (`input_duration_s`, the decoded length) or lies wholly in the trimmed-off silence."""
    if given is None:
        return None
    pairs = parse_timings(given)
    if len(pairs) != len(words):
        raise _mismatch(f"{len(pairs)} word timings for {len(words)} words")
    if input_duration_s is not None:
        for i, (_, end) in enumerate(pairs, start=1):
            if end > input_duration_s + TIMING_TOLERANCE_S:
                raise _mismatch(f"word {i} ends at {end:.3f} s, after the end of the audio ({input_duration_s:.3f} s)")
    times = [WordTime(max(0.0, start - offset_s), min(duration_s, end - offset_s)) for start, end in pairs]
    for i, (t, (start, end)) in enumerate(zip(times, pairs, strict=True), start=1):
        if t.end_s <= t.start_s:
            raise _mismatch(f"word {i} ({start:.3f}-{end:.3f} s) lies in the silence trimmed off the edges: "
                            "the timings do not fit this audio")
    return times


# Timings rounded to the millisecond, or measured on a slightly different decode of a compressed
# file, may end a little after the last sample.
TIMING_TOLERANCE_S = 0.05


def _mismatch(detail: str) -> RowError:
    return RowError("timings_mismatch", detail)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    _, (start, end) = librosa.effects.trim(audio, top_db=top_db)
    return start / sample_rate, end / sample_rate
