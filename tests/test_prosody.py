"""The particle prosody classifier: the expected table, shapes of contours, synthetic speech, CLI."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from preprocess import prosody
from preprocess.prosody import SHAPES, UNVOICED, load_table, shape_of_contour
from tests.conftest import PYTHON, REPO, SAMPLE


def test_the_default_table_is_the_planning_documents():
    table = load_table()
    assert table.expected("lah").shapes == ("rise_fall",)
    assert table.expected("leh").shapes == ("rising",)
    assert set(table.expected("lor").shapes) == {"flat", "falling"}
    assert table.expected("meh").shapes == ("high_rising",)
    assert table.expected("mah").shapes == ("quick_fall",)
    assert table.expected("loh").shapes == ("falling",)
    assert table.expected("lah").duration == (1.2, 1.5)
    assert table.expected("hor").shapes == ()  # configurable, unset by default


def test_a_bad_table_names_the_file_the_particle_and_the_fix(tmp_path):
    bad = tmp_path / "shapes.yaml"
    bad.write_text("particles:\n  lah: {shape: wobbly}\n")
    with pytest.raises(ValueError, match=r"shapes.yaml: particle 'lah': unknown shape\(s\) \['wobbly'\]; use "):
        load_table(bad)
    bad.write_text("particles:\n  lah: {duration: [1.5, 1.2]}\n")
    with pytest.raises(ValueError, match=r"duration must be \[min, max\]"):
        load_table(bad)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_clean_contour_is_read_as_its_shape(shape):
    rng = np.random.default_rng(SHAPES.index(shape))
    for _ in range(20):
        contour_st = prosody.random_contour(shape, 80, rng)
        got, confidence, _ = shape_of_contour(150.0 * 2 ** (contour_st / 12), 150.0)
        assert got == shape and 0 < confidence <= 1


def test_too_little_pitch_is_unvoiced():
    f0 = np.zeros(40)
    f0[:6] = 150.0
    assert shape_of_contour(f0, 150.0)[0] == UNVOICED


def test_syllables_of_written_words():
    assert [prosody.syllables(w) for w in ("lah", "selamat", "khabar", "make", "shopping", "xie")] == [1, 3, 2, 1, 2, 1]


@pytest.fixture(scope="module")
def sources():
    """Three real particle words of the sample corpus (two speakers), as WORLD parameters."""
    return prosody.sample_sources(SAMPLE, limit=3)


def test_synthetic_particles_across_voices_lengths_and_noise_are_classified(sources):
    """A representative subset of `python -m preprocess.prosody validate` (the full sweep is
    tests/test_prosody.py::test_full_synthetic_sweep, marker bench)."""
    outcomes = list(prosody.sweep(sources, cases_per_shape=3, seed=1))
    table = prosody.accuracy_table(outcomes)
    print("\n" + prosody.format_table(table))
    assert table["all"]["accuracy"] >= 0.9, prosody.format_table(table)


@pytest.mark.bench
def test_full_synthetic_sweep():
    """>= 95 % over every shape, speaker ranges 90-300 Hz, 80-400 ms and noise down to 20 dB SNR."""
    sources = prosody.sample_sources(SAMPLE)
    table = prosody.accuracy_table(list(prosody.sweep(sources, cases_per_shape=48, seed=0)))
    print("\n" + prosody.format_table(table))
    assert table["all"]["accuracy"] >= 0.95


def test_cli_classifies_a_span_and_prints_one_json_object(sources, tmp_path):
    rng = np.random.default_rng(3)
    contour = prosody.random_contour("rise_fall", 60, rng)
    audio, start, end = prosody.synthesize_particle(sources[0], contour, 200.0, 0.3, None, rng)
    wav = tmp_path / "lah.wav"
    sf.write(wav, audio, sources[0].rate)
    out = subprocess.run([PYTHON, "-m", "preprocess.prosody", "classify", str(wav), "--start", f"{start:.3f}",
                          "--end", f"{end:.3f}", "--speaker-f0", "200"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["shape"] == "rise_fall"
    assert set(result) >= {"shape", "confidence", "f0_hz", "duration_ratio"}
    assert len(result["f0_hz"]) > 10 and result["duration_ratio"] > 0

    missing = subprocess.run([PYTHON, "-m", "preprocess.prosody", "classify", str(tmp_path / "nope.wav")],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode != 0 and "nope.wav" in missing.stderr
