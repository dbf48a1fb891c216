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


def _file(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("name", ["cs_001_01.flac", "cs_002_02.wav", "cs_003_01.ogg", "cs_005_01.mp3"])
@pytest.mark.parametrize("kept", [0.35, 0.8])
def test_a_cut_off_file_of_any_format_is_truncated_not_kept_shorter(name, kept):
    from preprocess.audio import read_audio

    data = (SAMPLE / "audio" / name).read_bytes()
    read_audio(io.BytesIO(data), SETTINGS)  # the whole file is fine
    with pytest.raises(AudioError) as err:
        read_audio(io.BytesIO(data[: int(len(data) * kept)]), SETTINGS, name)
    assert err.value.reason == "truncated_audio", err.value.detail
    assert name in err.value.detail


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("AIFF", "PCM_16"), ("FLAC", "PCM_16"),
                                              ("OGG", "VORBIS"), ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")])
def test_files_written_by_libsndfile_are_whole_and_their_cut_copies_are_not(fmt, subtype):
    import soxr

    from preprocess.audio import read_audio

    samples, rate = _speech()
    samples, rate = soxr.resample(samples, rate, 48_000), 48_000  # a rate every format takes (Opus: 48 kHz)
    whole = _file(np.concatenate([samples, samples]), rate, fmt, subtype).getvalue()
    assert read_audio(io.BytesIO(whole), SETTINGS).channels == 1
    with pytest.raises(AudioError) as err:
        read_audio(io.BytesIO(whole[: len(whole) * 2 // 3]), SETTINGS)
    assert err.value.reason == "truncated_audio"


def test_a_file_longer_than_the_bound_is_refused_from_its_header_without_decoding():
    from preprocess.audio import read_audio

    ten_minutes = _file(np.zeros((16_000 * 600, 1), np.int16), 16_000, "WAV", "PCM_16")
    with pytest.raises(AudioError) as err:
        read_audio(ten_minutes, SETTINGS, "long.wav")
    assert err.value.reason == "duration_out_of_bounds"
    assert "600.0 s long by its header" in err.value.detail and "not decoded" in err.value.detail


def test_decoding_stops_at_the_length_bound_whatever_the_header_said():
    noise = np.random.default_rng(0).normal(0, 0.1, (24_000 * 61, 1)).astype(np.float32)
    with pytest.raises(AudioError) as err:
        clean(noise, 24_000, SETTINGS)  # in memory: no header, the blocks are counted
    assert err.value.reason == "duration_out_of_bounds" and "decoding stopped" in err.value.detail


def test_messages_name_the_file_not_an_in_memory_object():
    from preprocess.audio import read_audio

    with pytest.raises(AudioError) as err:
        read_audio(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10), SETTINGS, "audio/x.wav")
    assert err.value.reason == "unreadable_audio"
    assert "audio/x.wav" in err.value.detail and "0x" not in err.value.detail and "BytesIO" not in err.value.detail


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_very_quiet_clean_speech_is_normalised_like_the_rest(subtype):
    from preprocess.audio import clean_file, loudness_lufs

    samples, rate = _speech()
    quiet = samples * 10 ** (-55 / 20)  # about -78 LUFS: BS.1770's absolute gate leaves nothing to measure
    data = _file(quiet, rate, "WAV", subtype)
    out = clean_file(data, SETTINGS).samples
    assert abs(loudness_lufs(out, 24_000) - SETTINGS.target_lufs) < 1.0
    reference = clean(samples, rate, SETTINGS).samples
    assert np.corrcoef(out, reference)[0, 1] > 0.99  # the same speech, not its noise floor


def test_speech_under_the_loudness_threshold_is_too_quiet():
    samples, rate = _speech()
    strict = PreprocessSettings(min_loudness_lufs=-50.0)
    with pytest.raises(AudioError) as err:
        clean(samples * 10 ** (-40 / 20), rate, strict)
    assert err.value.reason == "too_quiet" and "min_loudness_lufs" in err.value.detail
    clean(samples, rate, strict)  # ordinary speech passes


@pytest.mark.parametrize("other", [-1.0, -0.8])
def test_a_phase_inverted_channel_does_not_cancel_the_downmix(other):
    from preprocess.audio import read_audio

    samples, rate = _speech()
    stereo = np.concatenate([samples, samples * other], axis=1)
    decoded = read_audio(_file(stereo, rate, "WAV", "FLOAT"), SETTINGS)
    assert decoded.downmix == "channel 0"
    out = clean(stereo, rate, SETTINGS).samples
    reference = clean(samples, rate, SETTINGS).samples
    assert len(out) == len(reference) and np.corrcoef(out, reference)[0, 1] > 0.999


def test_ordinary_stereo_is_the_mean_of_its_channels():
    from preprocess.audio import read_audio

    samples, rate = _speech()
    noise = np.random.default_rng(0).normal(0, 0.01, samples.shape).astype(np.float32)
    decoded = read_audio(_file(np.concatenate([samples, samples * 0.5 + noise], axis=1), rate, "WAV", "FLOAT"),
                         SETTINGS)
    assert decoded.downmix == "mean" and decoded.channels == 2
