"""Particle prosody: the shape of a particle's pitch contour, and its length.

    python -m preprocess.prosody classify FILE.wav [--start S --end E] [--speaker-f0 HZ] [--syllable-s S]
    python -m preprocess.prosody validate [--quick]      # accuracy on synthetic contours, per shape

`classify` measures F0 (WORLD: Harvest) over a span of a recording, expresses it in semitones from the
speaker's mean F0, fits it with two straight segments (a free breakpoint), and reads the shape from
that fit: `rise_fall` (a peak above both ends), `rising`, `high_rising` (a rise that ends high in
the speaker's range), `falling`, `quick_fall` (a fall mostly done by mid-span), `flat`, or
`unvoiced` (too little pitch to say). Two segments are enough for every shape of the planning
document's table and are robust to the few wrong F0 frames a short span has.

The expected shape and length of each particle come from `particle_shapes.yaml` beside this file
(or `evaluation.particle_shapes`); lengths are relative to the speaker's mean syllable, which comes
from word timings and the text when known, else from counting syllable nuclei (peaks of voiced
energy) in the recording.

`validate` is the evidence that the classifier works: WORLD resynthesis of real voiced speech from
the sample corpus with an imposed F0 of known shape, across speaker ranges, particle lengths and
noise levels.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SHAPES = ("rise_fall", "rising", "high_rising", "flat", "falling", "quick_fall")
UNVOICED = "unvoiced"
DEFAULT_TABLE = Path(__file__).with_name("particle_shapes.yaml")
FRAME_PERIOD_MS = 2.5
MARGIN_S = 0.06  # analysed around the span, so F0 at its edges has context
F0_FLOOR_HZ, F0_CEIL_HZ = 50.0, 700.0
SPEAKER_SPAN_ST = 15.0  # a speaker's F0 stays within this many semitones of their mean
EDGE_SHARE = 0.05  # the first and last twentieth of a span carry its neighbours' pitch: not fitted


# -- the expected table --------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierSettings:
    min_change_st: float = 1.5
    high_end_st: float = 4.0
    quick_half: float = 0.72
    min_voiced: float = 0.4


@dataclass(frozen=True)
class Expectation:
    shapes: tuple[str, ...] = ()  # empty: no expected shape
    duration: tuple[float, float] | None = None


@dataclass(frozen=True)
class ParticleTable:
    particles: dict[str, Expectation]
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    source: str = str(DEFAULT_TABLE)

    def expected(self, particle: str) -> Expectation:
        return self.particles.get(particle, Expectation())


def load_table(path: Path | str | None = None) -> ParticleTable:
    """The expected shapes (default: the packaged planning-document table). Raises ValueError naming
    the file and entry on a bad shape name or duration."""
    import yaml

    source = Path(path) if path else DEFAULT_TABLE
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"particle shape table {source}: {exc}") from None
    unknown = set(raw) - {"particles", "classifier"}
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {sorted(unknown)}; expected `particles` and `classifier`")
    particles = {}
    for name, entry in (raw.get("particles") or {}).items():
        entry = entry or {}
        shapes = entry.get("shape") or []
        shapes = [shapes] if isinstance(shapes, str) else list(shapes)
        bad = [s for s in shapes if s not in SHAPES]
        if bad:
            raise ValueError(f"{source}: particle {name!r}: unknown shape(s) {bad}; use {', '.join(SHAPES)}")
        duration = entry.get("duration")
        if duration is not None:
            if (not isinstance(duration, list) or len(duration) != 2
                    or not all(isinstance(v, int | float) for v in duration) or duration[0] > duration[1]):
                raise ValueError(f"{source}: particle {name!r}: duration must be [min, max], got {duration!r}")
            duration = (float(duration[0]), float(duration[1]))
        particles[str(name)] = Expectation(tuple(shapes), duration)
    try:
        classifier = ClassifierSettings(**(raw.get("classifier") or {}))
    except TypeError as exc:
        raise ValueError(f"{source}: classifier: {exc}") from None
    return ParticleTable(particles, classifier, str(source))


# -- measuring -----------------------------------------------------------------------------------
def f0_track(audio: np.ndarray, rate: int, frame_period_ms: float = FRAME_PERIOD_MS,
             f0_range: tuple[float, float] = (F0_FLOOR_HZ, F0_CEIL_HZ)) -> tuple[np.ndarray, np.ndarray]:
    """(times in s, F0 in Hz with 0 where unvoiced) by WORLD's Harvest, which keeps short voiced
    stretches that DIO drops."""
    import pyworld

    x = np.asarray(audio, dtype=np.float64)
    f0, t = pyworld.harvest(x, rate, f0_floor=f0_range[0], f0_ceil=f0_range[1], frame_period=frame_period_ms)
    return t, f0


def speaker_range(speaker_f0_hz: float) -> tuple[float, float]:
    """Where a speaker's F0 can be: SPEAKER_SPAN_ST around their mean. Outside it, an F0 estimate is
    an octave error or noise; and Harvest's analysis window shrinks with the floor, so a high voice
    gets the time resolution a short particle needs."""
    factor = 2 ** (SPEAKER_SPAN_ST / 12)
    return max(F0_FLOOR_HZ * 0.8, speaker_f0_hz / factor), min(1000.0, speaker_f0_hz * factor)


def span_contour(audio: np.ndarray, rate: int, start: float, end: float,
                 f0_range: tuple[float, float] = (F0_FLOOR_HZ, F0_CEIL_HZ)) -> tuple[np.ndarray, np.ndarray]:
    """F0 (Hz, 0 = unvoiced) at the frames inside [start, end] and their times, from an analysis of
    the span with a little context on each side."""
    a = max(0, int((start - MARGIN_S) * rate))
    b = min(len(audio), int(math.ceil((end + MARGIN_S) * rate)))
    if b - a < int(0.02 * rate):
        raise ValueError(f"span {start:.3f}-{end:.3f} s is outside the {len(audio) / rate:.3f} s recording")
    x = np.asarray(audio[a:b], dtype=np.float64)
    t, f0 = f0_track(x, rate, f0_range=f0_range)
    f0 = periodic(x, rate, t, f0)
    t = t + a / rate
    inside = (t >= start) & (t <= end)
    return t[inside], f0[inside]


def periodic(x: np.ndarray, rate: int, times: np.ndarray, f0: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """F0 re-measured over a short window, 0 where the signal is not periodic there.

    For each frame: the normalised correlation between one and a half periods of signal and the
    same shifted by a lag within -20..+25 % of the tracker's period. Below `threshold` (Praat's voicing
    threshold is 0.45) the frame is unvoiced: Harvest's long windows lend a short whispered or noisy
    stretch the pitch of the voiced speech around it. Otherwise the best lag (parabolic peak) is the
    period: a window this short follows a particle's quick pitch movements that Harvest smooths.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    out = np.zeros(len(f0))
    for i in np.flatnonzero(f0 > 0):
        period = rate / f0[i]
        width = int(1.5 * period)
        lo, hi = int(period * 0.8), int(math.ceil(period * 1.25)) + 1
        a = int(times[i] * rate) - width // 2
        if a < 0 or a + width + hi + 1 > len(x):
            out[i] = f0[i]  # too near the edge to check: trust the tracker
            continue
        ref = x[a : a + width]
        shifted = sliding_window_view(x[a + lo - 1 : a + hi + 1 + width], width)  # lags lo-1 .. hi+1
        energy = np.einsum("ij,ij->i", shifted, shifted) * float(ref @ ref)
        corr = np.where(energy > 0, shifted @ ref / np.sqrt(np.maximum(energy, 1e-30)), 0.0)
        k = 1 + int(np.argmax(corr[1:-1]))
        if corr[k] < threshold:
            continue
        left, mid, right = corr[k - 1], corr[k], corr[k + 1]
        bend = left - 2 * mid + right
        offset = 0.5 * (left - right) / bend if bend < 0 else 0.0
        out[i] = rate / (lo - 1 + k + offset)
    return out


def speaker_f0(audio: np.ndarray, rate: int) -> float:
    """The speaker's mean F0 in a recording: the geometric mean of its voiced frames (0 if none)."""
    _, f0 = f0_track(audio, rate, frame_period_ms=5.0)
    voiced = f0[f0 > 0]
    return float(np.exp(np.mean(np.log(voiced)))) if voiced.size else 0.0


def syllables(word: str) -> int:
    """Syllables of a written Malay, English or pinyin word: its vowel groups (a final English
    silent e does not count), at least one."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return 1
    groups = re.findall(r"[aeiouy]+", w)
    count = len(groups)
    if count > 1 and w.endswith("e") and not w.endswith(("le", "ee", "ie")) and groups[-1] == "e":
        count -= 1
    return max(1, count)


def mean_syllable_from_words(words: list[str], times: list[tuple[float, float]], skip: set[int]) -> float | None:
    """Mean syllable length (s) of the words not in `skip` (e.g. the particles), from their timings."""
    seconds = sum(end - start for i, (start, end) in enumerate(times) if i not in skip)
    count = sum(syllables(w) for i, w in enumerate(words) if i not in skip)
    return seconds / count if count and seconds > 0 else None


def mean_syllable_from_audio(audio: np.ndarray, rate: int) -> float | None:
    """Mean syllable length (s) without a transcript: voiced speech time over the number of syllable
    nuclei (peaks of the voiced band energy at least 2 dB above the dips around them, as de Jong and
    Wempe count them)."""
    import librosa
    from scipy.signal import find_peaks

    hop = int(0.01 * rate)
    spec = np.abs(librosa.stft(np.asarray(audio, np.float32), n_fft=1024, hop_length=hop)) ** 2
    freqs = librosa.fft_frequencies(sr=rate, n_fft=1024)
    band = spec[(freqs >= 300) & (freqs <= 3000)].sum(axis=0)
    db = 10 * np.log10(band + 1e-12)
    db = np.convolve(db, np.ones(5) / 5, mode="same")
    t, f0 = f0_track(audio, rate, frame_period_ms=10.0)
    voiced = np.zeros(len(db), bool)
    idx = np.clip((t * 100).astype(int), 0, len(db) - 1)
    voiced[idx[f0 > 0]] = True
    speech = db > db.max() - 35
    peaks, _ = find_peaks(np.where(voiced & speech, db, db.min()), prominence=2.0, distance=8)
    if peaks.size == 0:
        return None
    return float((voiced & speech).sum() * 0.01 / peaks.size)


# -- classifying -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Classification:
    shape: str  # one of SHAPES or "unvoiced"
    confidence: float  # 0..1
    f0_hz: list[float]  # the contour over the span (0 = unvoiced frame)
    times_s: list[float]
    duration_s: float
    duration_ratio: float | None  # duration / the speaker's mean syllable (None: unknown)
    speaker_f0_hz: float
    fit_st: tuple[float, float, float, float] | None = None  # (start, break, end, break position)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "confidence": round(self.confidence, 3),
                "f0_hz": [round(float(v), 1) for v in self.f0_hz], "duration_ratio":
                None if self.duration_ratio is None else round(self.duration_ratio, 3),
                "duration_s": round(self.duration_s, 3), "speaker_f0_hz": round(self.speaker_f0_hz, 1)}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def two_segment_fit(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares fit of y(u), u in [0, 1], by two joined straight segments; (value at 0, value
    at the break, value at 1, break position). One reweighting pass damps wrong F0 frames."""
    weights = np.ones_like(y)
    best: tuple[float, tuple[float, float, float, float]] = (np.inf, (0.0, 0.0, 0.0, 0.5))
    for _ in range(2):
        best = (np.inf, best[1])
        for b in np.linspace(0.15, 0.85, 15):
            design = np.stack([np.ones_like(u), u, np.maximum(u - b, 0.0)], axis=1)
            w = np.sqrt(weights)[:, None]
            coef, *_ = np.linalg.lstsq(design * w, y * w[:, 0], rcond=None)
            residual = float(np.sum(weights * (design @ coef - y) ** 2))
            if residual < best[0]:
                c0, c1, c2 = coef
                best = (residual, (c0, c0 + c1 * b, c0 + c1 + c2 * (1 - b), b))
        y0, yb, y1, b = best[1]
        fitted = np.where(u <= b, y0 + (yb - y0) * u / b, yb + (y1 - yb) * (u - b) / (1 - b))
        scale = 0.7  # semitones: frames further off than this count less (Cauchy weights)
        weights = 1.0 / (1.0 + ((y - fitted) / scale) ** 2)
    return best[1]


def shape_of_contour(f0_hz: np.ndarray, speaker_f0_hz: float,
                     settings: ClassifierSettings = ClassifierSettings()) -> tuple[str, float, tuple | None]:
    """(shape, confidence, fit) of a contour sampled evenly over a span (0 = unvoiced frame)."""
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    voiced = f0_hz > 0
    share = float(voiced.mean()) if f0_hz.size else 0.0
    if voiced.sum() < 4 or share < settings.min_voiced or speaker_f0_hz <= 0:
        return UNVOICED, 1.0 - share if f0_hz.size else 1.0, None
    u = (np.flatnonzero(voiced) + 0.5) / f0_hz.size
    inner = (u >= EDGE_SHARE) & (u <= 1 - EDGE_SHARE)
    if inner.sum() >= 4:
        u, f0_voiced = u[inner], f0_hz[voiced][inner]
    else:
        f0_voiced = f0_hz[voiced]
    u = (u - u[0]) / max(u[-1] - u[0], 1e-9)
    st = 12 * np.log2(f0_voiced / speaker_f0_hz)
    if st.size >= 5:
        from scipy.signal import medfilt

        st = medfilt(st, 5)
    y0, yb, y1, b = two_segment_fit(u, st)
    theta = settings.min_change_st
    change = y1 - y0
    above = min(yb - y0, yb - y1)  # the break as a peak above both ends
    half = y0 + (yb - y0) * 0.5 / b if b >= 0.5 else yb + (y1 - yb) * (0.5 - b) / (1 - b)
    voiced_conf = min(1.0, share / max(settings.min_voiced + 0.2, 1e-9))
    if above >= theta:
        shape, margins = "rise_fall", [(above - theta) / 0.5]
    elif change >= theta:
        high = y1 - settings.high_end_st
        shape = "high_rising" if high >= 0 else "rising"
        margins = [(change - theta) / 0.5, abs(high) / 0.5]
    elif change <= -theta:
        done = (y0 - half) / (y0 - min(yb, y1))
        shape = "quick_fall" if done >= settings.quick_half else "falling"
        margins = [(-change - theta) / 0.5, abs(done - settings.quick_half) / 0.05]
    else:
        shape, margins = "flat", [(theta - abs(change)) / 0.5, (theta - above) / 0.5]
    confidence = voiced_conf * float(np.prod([_sigmoid(m) for m in margins]))
    return shape, confidence, (float(y0), float(yb), float(y1), float(b))


def classify(audio: np.ndarray, rate: int, start: float | None = None, end: float | None = None,
             speaker_f0_hz: float | None = None, syllable_s: float | None = None,
             table: ParticleTable | None = None) -> Classification:
    """The shape of the pitch contour over [start, end] (default: the whole recording)."""
    settings = (table or load_table()).classifier
    duration = len(audio) / rate
    start = 0.0 if start is None else float(start)
    end = duration if end is None else float(end)
    if not 0 <= start < end:
        raise ValueError(f"span start {start} must be >= 0 and before its end {end}")
    if speaker_f0_hz is None:
        speaker_f0_hz = speaker_f0(audio, rate)
    if not speaker_f0_hz or speaker_f0_hz <= 0:
        raise ValueError("no voiced speech in the recording to take the speaker's F0 from; give --speaker-f0")
    times, f0 = span_contour(audio, rate, start, min(end, duration), speaker_range(speaker_f0_hz))
    if syllable_s is None:
        syllable_s = mean_syllable_from_audio(audio, rate)
    shape, confidence, fit = shape_of_contour(f0, speaker_f0_hz, settings)
    ratio = (end - start) / syllable_s if syllable_s else None
    return Classification(shape, confidence, f0.tolist(), times.tolist(), end - start, ratio,
                          float(speaker_f0_hz), fit)


def agreement(particle: str, result: Classification, table: ParticleTable) -> dict[str, Any]:
    """Whether a measured particle matches the table: shape, and length where both are known."""
    want = table.expected(particle)
    shape_ok = None if not want.shapes else result.shape in want.shapes
    duration_ok = None
    if want.duration is not None and result.duration_ratio is not None:
        lo, hi = want.duration
        duration_ok = lo <= result.duration_ratio <= hi
    return {"particle": particle, "shape": result.shape, "expected_shape": list(want.shapes),
            "shape_ok": shape_ok, "duration_ratio": result.duration_ratio,
            "expected_duration": list(want.duration) if want.duration else None, "duration_ok": duration_ok,
            "confidence": result.confidence}


def check_particles(audio: np.ndarray, rate: int, words: list[dict[str, Any]], times: list[tuple[float, float]],
                    speaker_f0_hz: float | None, table: ParticleTable) -> list[dict[str, Any]]:
    """Every particle word of one utterance (`words`: {"text", "lang", "particle"}; `times`: each
    word's (start, end) s): its shape, length and agreement with the table, and its F0 contour."""
    particles = [i for i, w in enumerate(words) if w.get("lang") == "particle" and w.get("particle")]
    if not particles:
        return []
    if len(times) != len(words):
        raise ValueError(f"{len(times)} word timings for {len(words)} words")
    syllable = mean_syllable_from_words([w["text"] for w in words], times, set(particles))
    if syllable is None:
        syllable = mean_syllable_from_audio(audio, rate)
    if speaker_f0_hz is None:
        speaker_f0_hz = speaker_f0(audio, rate)
    rows = []
    for i in particles:
        start, end = times[i]
        if speaker_f0_hz <= 0 or end - start < 0.02:
            result = Classification(UNVOICED, 1.0, [], [], end - start, None, speaker_f0_hz or 0.0)
        else:
            result = classify(audio, rate, start, end, speaker_f0_hz, syllable, table)
        row = agreement(words[i]["particle"], result, table)
        row.update(word=words[i]["text"], start_s=start, end_s=end, f0_hz=result.f0_hz, times_s=result.times_s,
                   speaker_f0_hz=result.speaker_f0_hz)
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per particle: occurrences, the shapes measured, and the share agreeing with the table."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row["particle"], {"count": 0, "shapes": {}, "expected_shape": row["expected_shape"],
                                                  "expected_duration": row["expected_duration"],
                                                  "_shape_ok": [], "_duration_ok": [], "_ratios": []})
        entry["count"] += 1
        entry["shapes"][row["shape"]] = entry["shapes"].get(row["shape"], 0) + 1
        if row["shape_ok"] is not None:
            entry["_shape_ok"].append(row["shape_ok"])
        if row["duration_ok"] is not None:
            entry["_duration_ok"].append(row["duration_ok"])
        if row["duration_ratio"] is not None:
            entry["_ratios"].append(row["duration_ratio"])
    for entry in out.values():
        ok, dur, ratios = entry.pop("_shape_ok"), entry.pop("_duration_ok"), entry.pop("_ratios")
        entry["shape_agreement"] = float(np.mean(ok)) if ok else None
        entry["duration_agreement"] = float(np.mean(dur)) if dur else None
        entry["median_duration_ratio"] = float(np.median(ratios)) if ratios else None
    return dict(sorted(out.items()))


def prototype(shape: str, points: int = 50, settings: ClassifierSettings = ClassifierSettings()) -> np.ndarray:
    """A typical contour of `shape` (semitones from the speaker's mean) for plots."""
    u = np.linspace(0, 1, points)
    curves = {
        "rise_fall": 3.0 * np.sin(np.pi * u) - 0.5 * u,
        "rising": -1.0 + 3.0 * u,
        "high_rising": 1.0 + (settings.high_end_st + 2.5) * u**1.5,
        "flat": np.zeros_like(u),
        "falling": 2.0 - 4.0 * u,
        "quick_fall": 2.0 - 4.0 * (1 - np.exp(-u / 0.12)),
    }
    return curves[shape]


# -- synthetic validation ------------------------------------------------------------------------------
def random_contour(shape: str, frames: int, rng: np.random.Generator,
                   settings: ClassifierSettings = ClassifierSettings()) -> np.ndarray:
    """A contour of `shape` in semitones from the speaker's mean, with random levels, sizes and
    timing clear of the decision thresholds (a margin of at least 1 semitone or 0.1 of the span)."""
    u = np.linspace(0, 1, frames)
    theta, high = settings.min_change_st, settings.high_end_st
    if shape == "flat":
        level = rng.uniform(-2, 2)
        return level + rng.uniform(-0.5, 0.5) * u + rng.uniform(0, 0.3) * np.sin(2 * np.pi * u * rng.uniform(1, 2))
    if shape == "rising":
        start = rng.uniform(-4, high - theta - 2.5)
        size = rng.uniform(theta + 1, min(6.0, high - 1 - start))
        return start + size * u ** rng.uniform(0.8, 1.6)
    if shape == "high_rising":
        start = rng.uniform(-1, 2)
        end = rng.uniform(high + 1.5, high + 5)
        return start + (end - start) * u ** rng.uniform(1.0, 2.2)
    if shape == "falling":
        start = rng.uniform(-1, 4)
        drop = rng.uniform(theta + 1, 6)
        return start - drop * u ** rng.uniform(0.9, 1.3)
    if shape == "quick_fall":
        start = rng.uniform(-1, 4)
        drop = rng.uniform(theta + 1, 6)
        tau = rng.uniform(0.12, 0.19)  # 90 % of the drop by 0.28-0.44 of the span, then level
        return start - drop * (1 - np.exp(-u / tau)) / (1 - np.exp(-1 / tau))
    if shape == "rise_fall":
        start = rng.uniform(-2, 1)
        peak_at = rng.uniform(0.3, 0.65)
        peak = start + rng.uniform(theta + 1.5, 6)
        end = peak - rng.uniform(theta + 1.5, 7)
        return np.where(u <= peak_at, start + (peak - start) * np.sin(0.5 * np.pi * u / peak_at),
                        peak - (peak - end) * np.sin(0.5 * np.pi * (u - peak_at) / (1 - peak_at)))
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class Source:
    """Real voiced speech to resynthesise: a recording's WORLD parameters and a voiced run."""

    name: str
    rate: int
    f0: np.ndarray
    envelope: np.ndarray
    aperiodicity: np.ndarray
    run: tuple[int, int]  # frames of the voiced run that becomes the particle


WORLD_PERIOD_MS = 5.0
CONTEXT_S = 0.5


def load_source(path: Path, span: tuple[float, float], name: str = "") -> Source:
    """WORLD analysis of a recording; the longest voiced run inside `span` (seconds) becomes the
    particle. The envelope is smoothed (cepstral liftering) so its fine structure carries no trace
    of the original pitch, which an imposed F0 would otherwise beat against."""
    import librosa
    import pyworld
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    # The particle with up to CONTEXT_S of its utterance around it: context enough, at a third of
    # the analysis cost of the whole file.
    first = max(0, int((span[0] - CONTEXT_S) * rate))
    audio = audio[first : int((span[1] + CONTEXT_S) * rate)]
    span = (span[0] - first / rate, span[1] - first / rate)
    if rate != 24_000:
        audio, rate = librosa.resample(audio, orig_sr=rate, target_sr=24_000), 24_000
    f0, t = pyworld.harvest(audio, rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=WORLD_PERIOD_MS)
    envelope = pyworld.cheaptrick(audio, f0, t, rate)
    cep = np.fft.irfft(np.log(envelope), axis=1)
    cep[:, 40 : cep.shape[1] - 39] = 0.0
    envelope = np.exp(np.fft.rfft(cep, axis=1).real)
    aperiodicity = pyworld.d4c(audio, f0, t, rate)
    a, b = int(span[0] * 1000 / WORLD_PERIOD_MS), int(span[1] * 1000 / WORLD_PERIOD_MS)
    voiced = f0[a:b] > 0
    best, run_start = (0, 0), None
    for i, v in enumerate(np.append(voiced, False)):
        if v and run_start is None:
            run_start = i
        elif not v and run_start is not None:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    if best[1] - best[0] < 6:
        raise ValueError(f"{path}: no voiced run of 30 ms in {span}")
    return Source(name or path.stem, rate, f0, envelope, aperiodicity, (a + best[0], a + best[1]))


def synthesize_particle(source: Source, contour_st: np.ndarray | None, speaker_f0_hz: float, duration_s: float,
                        snr_db: float | None, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """The source utterance at the speaker's pitch, its particle run stretched to `duration_s` and
    given the contour (None: whispered, no pitch), plus white noise at `snr_db`. (audio, start, end)."""
    import pyworld

    f0 = source.f0.copy()
    voiced = f0 > 0
    f0[voiced] *= speaker_f0_hz / np.exp(np.mean(np.log(f0[voiced])))
    a, b = source.run
    n = max(2, int(round(duration_s * 1000 / WORLD_PERIOD_MS)))
    pick = np.clip(np.round(np.linspace(a, b - 1, n)).astype(int), a, b - 1)
    env = source.envelope[pick]
    ap = source.aperiodicity[pick].copy()
    if contour_st is None:
        part_f0 = np.zeros(n)
        ap[:] = 1.0
    else:
        part_f0 = speaker_f0_hz * 2.0 ** (np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(contour_st)),
                                                      contour_st) / 12)
    f0_all = np.concatenate([f0[:a], part_f0, f0[b:]])
    env_all = np.ascontiguousarray(np.concatenate([source.envelope[:a], env, source.envelope[b:]]))
    ap_all = np.ascontiguousarray(np.concatenate([source.aperiodicity[:a], ap, source.aperiodicity[b:]]))
    audio = pyworld.synthesize(f0_all, env_all, ap_all, source.rate, WORLD_PERIOD_MS)
    if snr_db is not None:
        power = np.mean(audio[audio != 0] ** 2)
        audio = audio + rng.normal(0, math.sqrt(power / 10 ** (snr_db / 10)), audio.shape)
    start = a * WORLD_PERIOD_MS / 1000
    return audio, start, start + n * WORLD_PERIOD_MS / 1000


SPEAKER_RANGES_HZ = (90.0, 140.0, 200.0, 300.0)
DURATIONS_S = (0.08, 0.15, 0.25, 0.4)
NOISE_SNR_DB = (None, 30.0, 20.0)


def sample_sources(corpus: Path, limit: int | None = None) -> list[Source]:
    """The particle words of the sample corpus (true word timings) as sources."""
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    sources = []
    for row in rows:
        for w in row.get("word_timings") or []:
            if w.get("lang") == "particle":
                try:
                    name = f"{row['id']}:{w['word']}"
                    sources.append(load_source(corpus / row["audio"], (w["start"], w["end"]), name))
                except ValueError:
                    continue
                break
        if limit and len(sources) >= limit:
            break
    return sources


def sweep(sources: list[Source], cases_per_shape: int, seed: int = 0,
          table: ParticleTable | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(true shape, classified shape, case) for `cases_per_shape` synthetic particles of every shape
    (and `unvoiced`), each under one of the conditions: speaker range x length x noise."""
    import itertools

    rng = np.random.default_rng(seed)
    table = table or load_table()
    settings = table.classifier
    conditions = list(itertools.product(SPEAKER_RANGES_HZ, DURATIONS_S, NOISE_SNR_DB))
    for shape in (*SHAPES, UNVOICED):
        # Every shape meets the conditions in its own random order, all of them before any twice.
        order = rng.permutation(len(conditions))
        for i in range(cases_per_shape):
            speaker, duration, snr = conditions[order[i % len(conditions)]]
            source = sources[int(rng.integers(len(sources)))]
            frames = max(2, int(round(duration * 1000 / WORLD_PERIOD_MS)))
            contour = None if shape == UNVOICED else random_contour(shape, frames, rng, settings)
            audio, start, end = synthesize_particle(source, contour, speaker, duration, snr, rng)
            result = classify(audio, source.rate, start, end, speaker_f0_hz=speaker, syllable_s=0.2, table=table)
            yield shape, result.shape, {"source": source.name, "speaker_f0_hz": speaker, "duration_s": duration,
                                        "snr_db": snr, "confidence": result.confidence}


def accuracy_table(outcomes: list[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per true shape: cases, correct, accuracy and what the misses were called; plus `all`."""
    table: dict[str, dict[str, Any]] = {}
    for truth, got, _ in outcomes:
        row = table.setdefault(truth, {"cases": 0, "correct": 0, "confused_with": {}})
        row["cases"] += 1
        if got == truth:
            row["correct"] += 1
        else:
            row["confused_with"][got] = row["confused_with"].get(got, 0) + 1
    total = {"cases": sum(r["cases"] for r in table.values()), "correct": sum(r["correct"] for r in table.values()),
             "confused_with": {}}
    table["all"] = total
    for row in table.values():
        row["accuracy"] = row["correct"] / row["cases"] if row["cases"] else float("nan")
    return table


def accuracy_by(outcomes: list[tuple[str, str, dict[str, Any]]], key: str) -> dict[Any, float]:
    """Accuracy per value of one condition (`speaker_f0_hz`, `duration_s`, `snr_db`)."""
    groups: dict[Any, list[bool]] = {}
    for truth, got, case in outcomes:
        groups.setdefault(case[key], []).append(truth == got)
    return {k: float(np.mean(v)) for k, v in groups.items()}


def format_table(table: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'shape':<12} {'cases':>5} {'correct':>7} {'accuracy':>8}  confused with"]
    for shape, row in table.items():
        confused = ", ".join(f"{k} x{v}" for k, v in sorted(row["confused_with"].items()))
        lines.append(f"{shape:<12} {row['cases']:>5} {row['correct']:>7} {row['accuracy']:>8.1%}  {confused}")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def _sample_corpus() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "sample"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess.prosody", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="the pitch shape of a span of a recording, as one JSON object")
    c.add_argument("file", type=Path)
    c.add_argument("--start", type=float, help="span start in seconds (default: 0)")
    c.add_argument("--end", type=float, help="span end in seconds (default: the end of the file)")
    c.add_argument("--speaker-f0", type=float, help="the speaker's mean F0 in Hz (default: measured in the file)")
    c.add_argument("--syllable-s", type=float, help="the speaker's mean syllable in s (default: estimated)")
    c.add_argument("--shapes", type=Path, help="particle shape table (default: the packaged one)")
    v = sub.add_parser("validate", help="accuracy per shape on synthetic particles (WORLD resynthesis)")
    v.add_argument("--corpus", type=Path, help="folder with manifest.jsonl + word_timings (default: sample corpus)")
    v.add_argument("--cases", type=int, default=48, help="synthetic particles per shape")
    v.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "classify":
        import soundfile as sf

        try:
            table = load_table(args.shapes)
            audio, rate = sf.read(args.file, dtype="float64", always_2d=True)
            result = classify(audio.mean(axis=1), rate, args.start, args.end, args.speaker_f0, args.syllable_s, table)
        except (OSError, RuntimeError, ValueError) as exc:  # soundfile raises RuntimeError subclasses
            raise SystemExit(f"error: {args.file}: {exc}") from None
        print(json.dumps(result.to_dict()))
        return 0

    from tqdm import tqdm

    sources = sample_sources(args.corpus or _sample_corpus())
    total = args.cases * (len(SHAPES) + 1)
    outcomes = list(tqdm(sweep(sources, args.cases, args.seed), total=total, desc="synthetic particles"))
    table = accuracy_table(outcomes)
    print(format_table(table))
    for key, unit in (("speaker_f0_hz", "Hz"), ("duration_s", "s"), ("snr_db", "dB SNR")):
        by = accuracy_by(outcomes, key)
        print(f"by {key}: " + ", ".join(f"{'clean' if k is None else f'{k:g} {unit}'} {v:.1%}" for k, v in by.items()))
    return 0 if table["all"]["accuracy"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
