"""Benchmarks (make bench): preprocessing throughput against a naive sequential librosa pipeline,
measured in the same run; figures are printed, targets asserted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import librosa
import numpy as np
import pyloudnorm
import pytest

from preprocess.manifest import read_manifest
from preprocess.pipeline import input_store
from tests.conftest import REPO, SAMPLE

pytestmark = pytest.mark.bench


def naive_pipeline(rows: list[dict]) -> float:
    """What a first script would do: librosa.load (soxr_hq), trim, loudness-normalise, in a loop."""
    seconds = 0.0
    meter = pyloudnorm.Meter(24_000)
    for row in rows:
        audio, _ = librosa.load(SAMPLE / row["audio"], sr=24_000)
        audio, _ = librosa.effects.trim(audio, top_db=40)
        audio = pyloudnorm.normalize.loudness(audio, meter.integrated_loudness(audio), -23.0)
        seconds += len(audio) / 24_000
    return seconds


def ours(settings, strip_timings: bool, tmp_path: Path) -> tuple[float, float]:
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from preprocess.prepare import Prepared, prepare

    source = input_store(None, settings)
    rows = [r for r in read_manifest(source)]
    if strip_timings:
        rows = [type(r)(**{**r.__dict__, "custom": {k: v for k, v in r.custom.items() if k != "word_timings"}})
                for r in rows]
    work = [(r, source.url, None, settings.preprocess, None) for r in rows]
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(prepare, work[:4]))  # start the workers before timing
        start = time.perf_counter()
        results = [p for p in pool.map(prepare, work, chunksize=4) if isinstance(p, Prepared)]
        wall = time.perf_counter() - start
    return sum(len(p.audio) for p in results) / 24_000, wall


def test_preprocessing_throughput_against_a_naive_pipeline(make_settings, tmp_path, cache_dir):
    rows = [json.loads(line) for line in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    settings = make_settings(preprocess={"aligner": "proportional"})
    start = time.perf_counter()
    naive_seconds = naive_pipeline(rows)
    naive_wall = time.perf_counter() - start
    audio_s, wall = ours(settings, strip_timings=False, tmp_path=tmp_path)
    naive_rt, ours_rt = naive_seconds / naive_wall, audio_s / wall
    print(f"\npreprocessing without alignment and Mimi: {ours_rt:.0f}x real time; naive librosa loop "
          f"{naive_rt:.0f}x; ratio {ours_rt / naive_rt:.2f} ({len(rows)} clips, {audio_s / 60:.1f} min)")

    aligned_s, aligned_wall = ours(make_settings(preprocess={"aligner": "espeak_dtw"}), True, tmp_path)
    print(f"with the espeak-ng+DTW aligner: {aligned_s / aligned_wall:.0f}x real time")

    from preprocess.codec import Codec
    from preprocess.prepare import prepare

    codec = Codec.load("tiny", cache_dir)
    clips = [prepare((r, input_store(None, settings).url, None, settings.preprocess, None)).audio
             for r in list(read_manifest(input_store(None, settings)))[:32]]
    start = time.perf_counter()
    for i in range(0, len(clips), 16):
        codec.encode_batch(clips[i : i + 16])
    mimi_rt = sum(len(c) for c in clips) / 24_000 / (time.perf_counter() - start)
    print(f"Mimi (tiny, CPU, batches of 16): {mimi_rt:.0f}x real time")
    assert ours_rt >= 20 and ours_rt >= 1.5 * naive_rt, (ours_rt, naive_rt)
    assert np.isfinite(mimi_rt)


def test_text_analysis_throughput_on_one_core():
    from preprocess.text import analyze, chat, lexicon, particles, tagger
    from preprocess.text.charmodel import char_model

    start = time.perf_counter()
    lexicon.frequencies(), char_model(), chat._skeleton_index(), lexicon.zh_loans(), lexicon.pinyin_words()
    load = time.perf_counter() - start
    labelled = [line.split("\t")[0] for name in ("dev.tsv", "check.tsv", "chat.tsv", "chat-check.tsv", "chat-blind.tsv")
                for line in (REPO / "data" / "text" / name).read_text().splitlines() if line and line[0] != "#"]
    texts = labelled + [json.loads(line)["text"] for line in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    # Cold: every word's emission computed afresh (the per-word caches emptied), as on a new corpus.
    tagger._emission.cache_clear(), particles.pinyin_only.cache_clear(), lexicon._split.cache_clear()
    tagger._form.cache_clear(), tagger._only_pinyin.cache_clear(), chat._skeleton_candidates.cache_clear()
    start, cpu = time.perf_counter(), time.process_time()
    for line in texts:
        analyze(line)
    cold = len(texts) / (time.perf_counter() - start)
    cold_cpu = len(texts) / (time.process_time() - cpu)  # what one core gives us on a shared machine
    lines = (texts * 10)[:5000]
    start = time.perf_counter()
    for line in lines:
        analyze(line)
    warm = len(lines) / (time.perf_counter() - start)
    print(f"\ntext analysis on one core: {cold:.0f} utterances/s on {len(texts)} unseen utterances "
          f"({cold_cpu:.0f} per CPU-second), {warm:.0f}/s once their words are cached; tables load in {load:.2f} s")
    assert cold >= 2000
