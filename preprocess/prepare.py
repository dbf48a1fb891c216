"""The per-row work of preprocessing, everything but the codec: run in worker processes.

Text analysis, reading and checking the audio, cleaning, word timings, frame masks, F0 and energy.
This module imports no torch, so a worker process starts quickly; the codec runs batched in the
main process (preprocess/pipeline.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.settings import PreprocessSettings
from infra.storage import Store
from preprocess import align, mfa
from preprocess.audio import Cleaned, check_header, clean_file
from preprocess.features import (
    WordTime,
    f0_energy,
    frame_masks,
    manifest_times,
    parse_timings,
    proportional_times,
    speech_bounds,
)
from preprocess.fetch import fetch
from preprocess.manifest import Utterance
from preprocess.quarantine import Rejected, RowError, guarded
from preprocess.text import Analysis, Word, analyze, with_tags

# Mimi: 24 kHz at 12.5 frames/s. Clips are zero-padded to whole frames before encoding.
FRAME_RATE_HZ = 12.5


@dataclass
class Prepared:
    row: Utterance
    digest: str  # sha256 of the audio file's bytes (duplicate detection)
    analysis: dict[str, Any]
    audio: np.ndarray  # cleaned, at the codec's rate
    extras: dict[str, Any]  # per-frame masks and features, word timings, aligner


_stores: dict[tuple[str, str | None], Store] = {}
_crash_log: Any = None  # in a worker process: where faulthandler writes why the process died


def worker_init(parent_pid: int, crash_dir: str | None = None) -> None:
    """Worker initializer: die with the parent; with `crash_dir`, write why this process dies (a
    fatal signal, or the row deadline of `row_deadline`) to a file there, for the parent to read.
    faulthandler does both from C, so it works even while a decoder loops or crashes in C."""
    import faulthandler
    import os

    global _crash_log
    die_with_parent(parent_pid)
    if crash_dir is not None:
        _crash_log = open(Path(crash_dir) / f"worker-{os.getpid()}.log", "w")  # noqa: SIM115 (for the process)
        faulthandler.enable(_crash_log)


@contextmanager
def row_deadline(seconds: float) -> Iterator[None]:
    """In a worker process, end the process if the block runs past `seconds` (the parent sees the
    worker die and quarantines the row); elsewhere, nothing."""
    import faulthandler

    if _crash_log is None:
        yield
        return
    faulthandler.dump_traceback_later(seconds, exit=True, file=_crash_log)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: on Linux, ask the kernel to kill this worker when the process that
    spawned it dies (a SIGKILLed run must not leave its workers behind). A worker still starting
    when its parent died has missed that signal: it sees a new parent and exits."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _store(url: str, endpoint: str | None) -> Store:
    key = (url, endpoint)
    if key not in _stores:  # one filesystem client per worker process
        _stores[key] = Store(url, endpoint)
    return _stores[key]


Job = tuple[Utterance, str, str | None, PreprocessSettings, list[WordTime] | None]


def for_mfa(job: tuple[Utterance, str, str | None, PreprocessSettings, Path]) -> tuple[str, str, list[Word]] | None:
    """First pass for Montreal Forced Aligner: write the cleaned clip into its corpus folder; the
    utterance's id, speaker and tagged words (its pronunciations go into the dictionary)."""
    row, source_url, endpoint, pre, root = job
    outcome = prepare((row, source_url, endpoint, pre, None), timings=False)
    if isinstance(outcome, Rejected):
        return None  # the main pass quarantines it
    words = [Word(**w) for w in outcome.analysis["words"]]
    written = guarded(row.ref, "MFA corpus", mfa.write_item, root, row.id, row.speaker_id, outcome.audio,
                      pre.sample_rate_hz, [w.text for w in words])
    if isinstance(written, Rejected):
        return None  # not aligned by MFA; the main pass aligns it another way
    return row.id, row.speaker_id, words


def prepare(job: Job, timings: bool = True) -> Prepared | Rejected:
    """`job`: the row, where its audio lives, the settings, and word timings from a corpus-level
    aligner (MFA) or None. Whatever the row causes ends as its Rejected entry (quarantine.guarded);
    in a worker process, a row still running after row_timeout_s ends the process (row_deadline)."""
    with row_deadline(job[3].row_timeout_s):
        return guarded(job[0].ref, "prepare", _prepare, job, timings)


def _prepare(job: Job, timings: bool) -> Prepared:
    row, source_url, endpoint, pre, aligned = job
    most = pre.max_chars_per_s * pre.max_duration_s
    if len(row.text) > 4 * most:  # 4x: room for blanks, punctuation and markup; never analysed
        raise RowError("speaking_rate", f"a transcript of {len(row.text)} characters cannot be said in "
                                        f"{pre.max_duration_s:g} s (at most about {most:g} letters)")
    analysis = analyze(row.text)
    if not analysis.words:
        raise RowError("empty_text", f"transcript {row.text!r} has no words")
    analysis = _tagged(analysis, row)
    given = row.custom.get("word_timings")
    if given not in (None, "") and len(parse_timings(given)) != len(analysis.words):  # before reading audio
        raise RowError("timings_mismatch", f"{len(parse_timings(given))} word timings for {len(analysis.words)} "
                                           f"words ({' '.join(w.text for w in analysis.words)})")
    fetched = fetch(_store(source_url, endpoint), row.audio, pre, probe=lambda fh, uri: check_header(fh, pre, uri))
    try:
        cleaned = clean_file(fetched.file, pre, fetched.uri)
    finally:
        fetched.close()
    audio, sr = cleaned.samples, pre.sample_rate_hz
    duration = len(audio) / sr
    letters = sum(ch.isalnum() for ch in analysis.normalized)
    if not pre.min_chars_per_s <= letters / duration <= pre.max_chars_per_s:
        raise RowError("speaking_rate", f"{letters / duration:.1f} characters per second is outside "
                                        f"[{pre.min_chars_per_s}, {pre.max_chars_per_s}]: transcript and audio "
                                        "probably do not match")
    if not timings:
        return Prepared(row, fetched.sha256, analysis.to_dict(), audio, {})
    frames = math.ceil(len(audio) / (sr / FRAME_RATE_HZ))
    words = analysis.to_dict()["words"]
    times, aligner = word_times(words, row, cleaned, pre)
    if aligned is not None and aligner != "manifest":
        times, aligner = aligned, "mfa"
    particle, switch = frame_masks(words, analysis.switches, times, frames, FRAME_RATE_HZ, pre.switch_margin_s)
    f0, energy = f0_energy(audio, sr, FRAME_RATE_HZ, frames)
    extras = {"particle_mask": particle, "switch_mask": switch, "f0_hz": f0, "energy_db": energy,
              "word_times": [[round(t.start_s, 4), round(t.end_s, 4)] for t in times], "aligner": aligner}
    return Prepared(row, fetched.sha256, analysis.to_dict(), audio, extras)


def _tagged(analysis: Analysis, row: Utterance) -> Analysis:
    """The analysis with the manifest's tags (they override ours). A particle tag marks its word a
    particle when the row gives no language tags; tags that contradict each other or do not fit
    the words are tags_mismatch."""
    if row.word_langs is None and row.particle_tags is None:
        return analysis
    langs = list(row.word_langs) if row.word_langs is not None else [w.lang for w in analysis.words]
    particles = row.particle_tags
    if particles is not None and len(particles) == len(langs):
        for i, (word, particle) in enumerate(zip(analysis.words, particles, strict=True)):
            if particle is None or langs[i] == "particle":
                continue
            if row.word_langs is not None:
                raise RowError("tags_mismatch", f"word {i + 1} {word.text!r} has particle tag {particle!r} but "
                                                f"language tag {langs[i]!r}; tag it particle or drop its particle tag")
            langs[i] = "particle"
    try:
        return with_tags(analysis, langs, particles)
    except ValueError as exc:
        raise RowError("tags_mismatch", f"manifest tags do not fit the words: {exc}") from None


def word_times(words: list[dict[str, Any]], row: Utterance, cleaned: Cleaned,
               pre: PreprocessSettings) -> tuple[list[Any], str]:
    """Manifest timings when given (checked: a row whose timings do not fit is quarantined, never
    re-aligned), else the configured aligner (auto: espeak-ng + DTW when espeak-ng is installed,
    else a proportional split)."""
    audio = cleaned.samples
    duration = len(audio) / pre.sample_rate_hz
    given = row.custom.get("word_timings")
    if given not in (None, ""):
        return manifest_times(words, given, cleaned.offset_s, duration, cleaned.input_duration_s), "manifest"
    if pre.aligner in ("espeak_dtw", "mfa") or (pre.aligner == "auto" and align.available()):
        return align.align(audio, pre.sample_rate_hz, [(w["text"], w["lang"]) for w in words]), "espeak_dtw"
    return proportional_times(words, speech_bounds(audio, pre.sample_rate_hz, pre.trim_top_db)), "proportional"
