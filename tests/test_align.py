"""The offline aligner (espeak-ng + DTW) against the sample corpus's true word timings."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from preprocess import align
from tests.conftest import SAMPLE

needs_espeak = pytest.mark.skipif(not align.available(),
                                  reason="espeak-ng cannot be loaded (espeakng-loader is in the lock; run make setup)")


@needs_espeak
def test_boundaries_survive_stretching_pitch_shifts_and_noise():
    result = align.evaluate(str(SAMPLE), every=9)
    assert result["boundaries"] > 50
    assert result["median_ms"] <= 60, result


@needs_espeak
def test_word_times_are_ordered_and_inside_the_clip():
    import json

    row = json.loads((SAMPLE / "manifest.jsonl").read_text().splitlines()[40])
    audio, rate = sf.read(SAMPLE / row["audio"], dtype="float32")
    times = align.align(audio, rate, [(w["word"], w["lang"]) for w in row["word_timings"]])
    assert len(times) == len(row["word_timings"])
    starts = np.array([t.start_s for t in times])
    assert np.all(np.diff(starts) >= 0) and all(0 <= t.start_s < t.end_s <= len(audio) / rate for t in times)


@needs_espeak
@pytest.mark.bench
def test_bench_aligner_on_the_whole_sample_corpus():
    result = align.evaluate(str(SAMPLE), every=1)
    print(f"\naligner: {result['boundaries']} boundaries, median {result['median_ms']:.1f} ms, "
          f"p90 {result['p90_ms']:.1f} ms")
