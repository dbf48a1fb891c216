"""Decode and clean audio: mono, 24 kHz, edge silence trimmed, loudness normalised, peak-safe."""

from __future__ import annotations

import io

import librosa
import numpy as np
import pyloudnorm
import soundfile as sf

from infra.settings import PreprocessSettings


class AudioError(ValueError):
    """Audio that cannot be used. `reason` is a short stable code for the quarantine."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Samples as float32 (frames, channels) and the sample rate. Raises AudioError."""
    if not data:
        raise AudioError("unreadable_audio", "file is empty (0 bytes)")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError("unreadable_audio", f"cannot decode audio: {exc}") from None
    if samples.shape[0] == 0:
        raise AudioError("empty_audio", "audio has no samples")
    return samples, rate


def clean(samples: np.ndarray, rate: int, settings: PreprocessSettings) -> np.ndarray:
    """Mono float32 at settings.sample_rate_hz, ready for the codec. Raises AudioError."""
    if rate < settings.min_input_rate_hz:
        raise AudioError("low_sample_rate", f"sample rate {rate} Hz is under {settings.min_input_rate_hz} Hz")
    if not np.isfinite(samples).all():
        raise AudioError("non_finite_samples", "audio contains NaN or infinite samples")
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != settings.sample_rate_hz:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=settings.sample_rate_hz, res_type="soxr_hq")
    mono = trim_silence(mono, settings)
    seconds = len(mono) / settings.sample_rate_hz
    if not settings.min_duration_s <= seconds <= settings.max_duration_s:
        raise AudioError(
            "duration_out_of_bounds",
            f"duration {seconds:.2f} s after trimming is outside "
            f"[{settings.min_duration_s}, {settings.max_duration_s}] s",
        )
    return normalize_loudness(mono, settings).astype(np.float32)


def trim_silence(mono: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    """Cut edge silence, keeping `keep_silence_s` of it on each side."""
    if not np.any(mono):
        raise AudioError("silent_audio", "audio is digital silence")
    _, (start, end) = librosa.effects.trim(mono, top_db=settings.trim_top_db)
    keep = int(settings.keep_silence_s * settings.sample_rate_hz)
    return mono[max(0, start - keep) : min(len(mono), end + keep)]


def normalize_loudness(mono: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    meter = pyloudnorm.Meter(settings.sample_rate_hz)
    # BS.1770 gating needs 400 ms blocks; shorter clips are scaled by peak only.
    if len(mono) >= int(0.4 * settings.sample_rate_hz):
        loudness = meter.integrated_loudness(mono.astype(np.float64))
        if np.isfinite(loudness):
            mono = mono * 10 ** ((settings.target_lufs - loudness) / 20)
    peak = float(np.max(np.abs(mono)))
    ceiling = 10 ** (settings.peak_dbfs / 20)
    if peak > ceiling:
        mono = mono * (ceiling / peak)
    return mono
