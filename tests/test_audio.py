"""Audio cleaning on real recordings: 24 kHz mono, trimmed edges, target loudness, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from infra.settings import PreprocessSettings
from preprocess.audio import AudioError, clean, decode
from tests.conftest import SAMPLE

SETTINGS = PreprocessSettings()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["cs_001_01.flac", "cs_002_02.wav", "cs_003_01.ogg", "cs_005_01.mp3"])
def test_every_bundled_format_decodes_and_cleans_to_24k(name):
    samples, rate = decode((SAMPLE / "audio" / name).read_bytes())
    out = clean(samples, rate, SETTINGS).samples
    assert out.dtype == np.float32 and out.ndim == 1
    expected = samples.shape[0] / rate
    assert abs(len(out) / 24_000 - expected) < expected * 0.5  # only edge silence may go
    loudness = pyloudnorm.Meter(24_000).integrated_loudness(out.astype(np.float64))
    assert abs(loudness - SETTINGS.target_lufs) < 1.0
    assert np.max(np.abs(out)) <= 10 ** (SETTINGS.peak_dbfs / 20) + 1e-6


def test_long_edge_silence_is_trimmed_to_the_kept_margin():
    samples, rate = decode((SAMPLE / "audio" / "cs_001_01.flac").read_bytes())
    padded = np.concatenate([np.zeros((3 * rate, 1), np.float32), samples, np.zeros((2 * rate, 1), np.float32)])
    cleaned = clean(padded, rate, SETTINGS)
    out = cleaned.samples
    assert 2.7 < cleaned.offset_s < 3.0  # where the kept audio starts in the original
    voiced = np.flatnonzero(np.abs(out) > 1e-3)
    lead, tail = voiced[0] / 24_000, (len(out) - voiced[-1]) / 24_000
    assert lead <= 0.5 and tail <= 0.5


def test_stereo_is_mixed_to_mono():
    samples, rate = decode((SAMPLE / "audio" / "cs_001_01.flac").read_bytes())
    stereo = np.concatenate([samples, samples * 0.5], axis=1)
    samples2, rate2 = decode(wav_bytes(stereo, rate))
    assert samples2.shape[1] == 2
    assert clean(samples2, rate2, SETTINGS).samples.ndim == 1


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "unreadable_audio"),
    (b"RIFF....WAVEfmt garbage", "unreadable_audio"),
])
def test_undecodable_bytes_raise_with_a_reason(data, reason):
    with pytest.raises(AudioError) as err:
        decode(data)
    assert err.value.reason == reason


@pytest.mark.parametrize(("samples", "rate", "reason"), [
    (np.random.default_rng(0).normal(0, 0.1, (8000 * 3, 1)).astype(np.float32), 8000, "low_sample_rate"),
    (np.full((24_000, 1), np.nan, np.float32), 24_000, "non_finite_samples"),
    (np.zeros((24_000 * 2, 1), np.float32), 24_000, "silent_audio"),
    (np.random.default_rng(0).normal(0, 0.1, (24_000 * 30, 1)).astype(np.float32), 24_000,
     "duration_out_of_bounds"),
])
def test_unusable_audio_raises_with_a_reason(samples, rate, reason):
    with pytest.raises(AudioError) as err:
        clean(samples, rate, SETTINGS)
    assert err.value.reason == reason


def _speech() -> tuple[np.ndarray, int]:
    return decode((SAMPLE / "audio" / "cs_001_01.flac").read_bytes())


def test_clipped_audio_is_rejected():
    samples, rate = _speech()
    loud = np.clip(samples * 50, -1.0, 1.0)
    with pytest.raises(AudioError) as err:
        clean(loud, rate, SETTINGS)
    assert err.value.reason == "clipping"


def test_speech_buried_in_noise_is_rejected():
    samples, rate = _speech()
    noisy = samples + np.random.default_rng(0).normal(0, 0.3, samples.shape).astype(np.float32)
    with pytest.raises(AudioError) as err:
        clean(np.clip(noisy, -0.99, 0.99), rate, SETTINGS)
    assert err.value.reason == "low_snr"


def test_a_file_that_is_mostly_silence_is_rejected():
    samples, rate = _speech()
    padded = np.concatenate([np.zeros((rate * 15, 1), np.float32), samples])
    with pytest.raises(AudioError) as err:
        clean(padded, rate, SETTINGS)
    assert err.value.reason == "mostly_silence"


def test_a_cut_off_wav_is_truncated_not_silently_shorter():
    data = (SAMPLE / "audio" / "cs_002_02.wav").read_bytes()
    decode(data)  # the whole file is fine
    with pytest.raises(AudioError) as err:
        decode(data[: len(data) // 2])
    assert err.value.reason == "truncated_audio"
    with pytest.raises(AudioError) as err:
        decode((SAMPLE / "audio" / "cs_001_01.flac").read_bytes()[:20_000])  # FLAC loses sync
    assert err.value.reason in ("unreadable_audio", "truncated_audio")


def test_denoise_lowers_steady_noise_and_keeps_the_speech():
    from preprocess.audio import denoise, estimate_snr_db

    samples, rate = _speech()
    speech = clean(samples, rate, SETTINGS).samples
    noisy = speech + np.random.default_rng(1).normal(0, 0.01, speech.shape).astype(np.float32)
    cleaned = denoise(noisy, 24_000)
    assert estimate_snr_db(cleaned, 24_000) > estimate_snr_db(noisy, 24_000) + 4  # measured: +6 dB
    # The speech itself survives: the cleaned clip stays close to the clean one where it is loud.
    loud = np.abs(speech) > 0.05
    assert np.corrcoef(cleaned[loud], speech[loud])[0, 1] > 0.9


def test_cleaning_steps_can_be_switched_off():
    samples, rate = _speech()
    padded = np.concatenate([np.zeros((rate, 1), np.float32), samples])
    raw = clean(padded, rate, PreprocessSettings(trim=False, loudness=False))
    assert raw.offset_s == 0.0 and len(raw.samples) == round(len(padded) * 24_000 / rate)
    assert np.max(np.abs(raw.samples)) == pytest.approx(np.max(np.abs(samples)), rel=0.1)  # not normalised
