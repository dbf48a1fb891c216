"""Objective metrics on cases with a known answer: WORLD resynthesis of real sample-corpus speech."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import pyworld
import soundfile as sf

from preprocess.metrics import (
    analyse,
    cer,
    compare,
    compare_audio,
    edit_distance,
    mcep_alpha,
    word_duration_mae_ms,
)
from tests.conftest import SAMPLE

RATE = 24_000


def _world(utt: str):
    """WORLD parameters of a real utterance, the envelope liftered so an imposed F0 is the only
    pitch in the resynthesis (the raw envelope keeps ripples of the original harmonics)."""
    audio, rate = sf.read(next((SAMPLE / "audio").glob(f"{utt}.*")), dtype="float64")
    audio = librosa.resample(audio, orig_sr=rate, target_sr=RATE)
    f0, t = pyworld.harvest(audio, RATE, frame_period=5.0)
    env = pyworld.cheaptrick(audio, f0, t, RATE)
    cep = np.fft.irfft(np.log(env), axis=1)
    cep[:, 40 : cep.shape[1] - 39] = 0
    env = np.exp(np.fft.rfft(cep, axis=1).real)
    return f0, env, pyworld.d4c(audio, f0, t, RATE)


@pytest.fixture(scope="module")
def voices():
    return {utt: _world(utt) for utt in ("en_001_01", "pa_027_01", "pa_018_02")}


def _say(f0, env, ap):
    return pyworld.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(env), np.ascontiguousarray(ap),
                              RATE, 5.0)


def test_identical_audio_scores_zero_on_every_metric(voices):
    audio = _say(*voices["en_001_01"])
    c = compare_audio(audio, audio, RATE)
    assert (c.mcd_db, c.f0_rmse_hz, c.f0_rmse_cents, c.voicing_error, c.duration_ratio) == (0, 0, 0, 0, 1)
    assert c.voiced_pairs > 100


@pytest.mark.parametrize("semitones", [1, 3, -2])
def test_a_pitch_shift_of_k_semitones_is_an_f0_rmse_of_k_hundred_cents(voices, semitones):
    errors = []
    for f0, env, ap in voices.values():
        reference = analyse(_say(f0, env, ap), RATE)
        shifted = analyse(_say(f0 * 2 ** (semitones / 12), env, ap), RATE)
        c = compare(reference, shifted)
        errors.append(c.f0_rmse_cents - 100 * abs(semitones))
        # The envelope is the same: a pitch shift barely moves MCD (a different voice is 5-10 dB).
        assert c.mcd_db < 2.0
        voiced = reference.f0_hz[reference.f0_hz > 0]
        expected_hz = abs(2 ** (semitones / 12) - 1) * np.sqrt(np.mean(voiced**2))
        assert c.f0_rmse_hz == pytest.approx(expected_hz, rel=0.35)
    # F0 trackers err at voicing edges; on average the shift is what the metric reports.
    assert abs(float(np.mean(errors))) < 25, errors


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_a_time_stretch_shows_in_the_duration_ratio_and_aligns_away_elsewhere(voices, factor):
    f0, env, ap = voices["pa_027_01"]
    frames = np.clip(np.round(np.linspace(0, len(f0) - 1, int(len(f0) * factor))).astype(int), 0, len(f0) - 1)
    original, stretched = _say(f0, env, ap), _say(f0[frames], env[frames], ap[frames])
    c = compare_audio(original, stretched, RATE)
    assert c.duration_ratio == pytest.approx(factor, rel=0.04)
    # DTW pairs each stretched frame with the one it copies: spectrum and pitch still match.
    assert c.mcd_db < 2.0 and c.f0_rmse_cents < 60


def test_a_different_speaker_is_far_in_mcd():
    audio = {}
    for utt in ("en_001_01", "en_002_02"):  # speaker 1, and speaker 2 saying another sentence
        x, rate = sf.read(next((SAMPLE / "audio").glob(f"{utt}.*")), dtype="float64")
        audio[utt] = librosa.resample(x, orig_sr=rate, target_sr=RATE)
    same = compare_audio(audio["en_001_01"], audio["en_001_01"] * 0.5, RATE)
    other = compare_audio(audio["en_001_01"], audio["en_002_02"], RATE)
    assert same.mcd_db < 0.5  # c0 (loudness) is excluded: half as loud is nearly the same
    assert other.mcd_db > 3.0


def test_word_duration_mae_is_the_mean_absolute_difference_in_ms():
    reference = [(0.0, 0.30), (0.35, 0.50)]
    assert word_duration_mae_ms(reference, reference) == 0
    assert word_duration_mae_ms(reference, [(0.0, 0.40), (0.45, 0.55)]) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="same words"):
        word_duration_mae_ms(reference, reference[:1])


def test_cer_counts_character_edits_ignoring_case_and_punctuation():
    assert edit_distance("kitten", "sitting") == 3
    assert cer("Okay lah, I go.", "okay lah i go") == 0
    assert cer("abcd", "abxd") == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no letters"):
        cer("...", "x")


def test_mel_cepstral_warping_follows_the_mel_scale_at_each_rate():
    assert mcep_alpha(16_000) == pytest.approx(0.41, abs=0.01)
    assert mcep_alpha(24_000) == pytest.approx(0.466, abs=0.01)
    assert mcep_alpha(48_000) == pytest.approx(0.554, abs=0.01)


def test_bad_audio_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="non-empty finite mono"):
        analyse(np.array([0.0, np.nan, 0.1]), RATE)
