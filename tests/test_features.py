"""Features for training and reports: F0, word timings, frame masks."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.features import WordTime, f0_energy, frame_masks, manifest_times, proportional_times

WORDS = [{"text": "Okay", "lang": "en"}, {"text": "lah", "lang": "particle"}, {"text": "saya", "lang": "ms"},
         {"text": "go", "lang": "en"}]


def test_f0_follows_a_known_pitch_per_codec_frame():
    sr, seconds = 24_000, 1.6
    t = np.arange(int(sr * seconds)) / sr
    tone = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    tone[: sr // 2] = 0  # unvoiced first half second
    f0, energy = f0_energy(tone, sr, 12.5, frames=20)
    assert np.all(f0[:5] == 0)
    assert np.allclose(f0[8:18], 180, rtol=0.03)
    assert energy[10] > energy[2] + 40


def test_manifest_timings_are_moved_onto_the_cleaned_clock():
    given = [{"word": w["text"], "start": 0.5 + i, "end": 1.2 + i} for i, w in enumerate(WORDS)]
    times = manifest_times(WORDS, given, offset_s=0.3, duration_s=5.0)
    assert (times[0].start_s, times[0].end_s) == pytest.approx((0.2, 0.9))


def test_without_timings_words_share_the_speech_by_length():
    times = proportional_times(WORDS, speech=(0.2, 2.2))
    assert times[0].start_s == 0.2 and abs(times[-1].end_s - 2.2) < 1e-9
    durations = [t.end_s - t.start_s for t in times]
    assert durations[0] == max(durations)  # "Okay" / "saya" (4 letters) beat "go" (2)
    assert manifest_times(WORDS, None, 0.0, 3.0) is None  # no timings given: an aligner's turn


GOOD = [[0.1, 0.5], [0.5, 0.8], [0.9, 1.3], [1.4, 1.7]]


@pytest.mark.parametrize(("given", "says"), [
    ([{"start": 0, "end": 1}], "1 word timings for 4 words"),
    ({"start": 0, "end": 1}, "must be a list"),
    ("[[0, 1], [1, oops]]", "not a JSON list"),
    ([[0.1, 0.5], [0.5, 0.8], [0.9, 1.3], [-0.2, 1.7]], "before the audio starts"),
    ([[0.1, 0.5], [0.5, 0.8], [1.3, 0.9], [1.4, 1.7]], "not after its start"),
    ([[0.1, 0.5], [0.9, 1.3], [0.5, 0.8], [1.4, 1.7]], "in word order"),
    ([[0.1, 0.5], [0.5, float("nan")], [0.9, 1.3], [1.4, 1.7]], "not finite"),
    ([[0.1, 0.5], [0.5, "0.8"], [0.9, 1.3], [1.4, 1.7]], "must be numbers"),
    ([[0.1, 0.5], [0.5, 0.8], [0.9, 1.3], [1.4, 9.0]], "after the end of the audio"),
    ([[0.0, 0.1], [0.5, 0.8], [0.9, 1.3], [1.4, 1.7]], "trimmed off"),
])
def test_manifest_timings_that_do_not_fit_the_words_or_the_audio_are_refused_not_replaced(given, says):
    from preprocess.quarantine import RowError

    with pytest.raises(RowError) as err:
        manifest_times(WORDS, given, offset_s=0.3, duration_s=1.6, input_duration_s=2.0)
    assert err.value.reason == "timings_mismatch" and says in err.value.detail


def test_manifest_timings_may_be_pairs_or_a_json_cell():
    import json

    times = manifest_times(WORDS, json.dumps(GOOD), offset_s=0.0, duration_s=2.0, input_duration_s=2.0)
    assert [(t.start_s, t.end_s) for t in times] == [tuple(p) for p in GOOD]


def test_masks_mark_particle_frames_and_the_frames_around_a_switch():
    times = [WordTime(0.0, 0.4), WordTime(0.4, 0.8), WordTime(0.8, 1.2), WordTime(1.2, 1.6)]
    particle, switch = frame_masks(WORDS, switches=[2, 3], times=times, frames=20, frame_rate_hz=12.5,
                                   switch_margin_s=0.08)
    assert np.flatnonzero(particle).tolist() == [5, 6, 7, 8, 9]  # 0.40-0.80 s overlaps frames 5..9
    assert np.flatnonzero(switch).tolist() == [9, 10, 14, 15]  # 0.08 s around 0.8 s and 1.2 s
