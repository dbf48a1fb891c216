"""Decode and clean audio: mono, 24 kHz, edge silence trimmed, loudness normalised, peak-safe."""

from __future__ import annotations

import io
from dataclasses import dataclass

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
    short = _wav_shortfall(data)
    if short:
        raise AudioError("truncated_audio", f"WAV data chunk is {short} bytes shorter than its header declares")
    return samples, rate


def _wav_shortfall(data: bytes) -> int:
    """Bytes missing from a RIFF/WAVE file's data chunk (0 if complete or not a WAV). libsndfile
    reads a cut-off WAV without complaint, so the header is compared with what is there."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            if size == 0xFFFFFFFF:  # streamed WAV: length unknown by design
                return 0
            return max(0, size - (len(data) - pos - 8))
        pos += 8 + size + (size & 1)
    return 0


@dataclass(frozen=True)
class Cleaned:
    samples: np.ndarray  # mono float32 at settings.sample_rate_hz
    offset_s: float  # where the kept audio starts in the original (edge silence cut before it)
    snr_db: float


def clean(samples: np.ndarray, rate: int, settings: PreprocessSettings) -> Cleaned:
    """Checked, mono, resampled, trimmed and loudness-normalised audio. Raises AudioError."""
    if rate < settings.min_input_rate_hz:
        raise AudioError("low_sample_rate", f"sample rate {rate} Hz is under {settings.min_input_rate_hz} Hz")
    if not np.isfinite(samples).all():
        raise AudioError("non_finite_samples", "audio contains NaN or infinite samples")
    clipped = float(np.mean(np.abs(samples) >= 0.999))
    if clipped > settings.max_clipping_ratio:
        raise AudioError("clipping", f"{clipped:.2%} of samples are at full scale (limit "
                                     f"{settings.max_clipping_ratio:.2%})")
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != settings.sample_rate_hz:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=settings.sample_rate_hz, res_type="soxr_hq")
    if not np.any(mono):
        raise AudioError("silent_audio", "audio is digital silence")
    speech = _speech_ratio(mono, settings)
    if speech < settings.min_speech_ratio:
        raise AudioError("mostly_silence", f"only {speech:.0%} of the audio is above the silence threshold "
                                           f"(minimum {settings.min_speech_ratio:.0%})")
    if settings.denoise:
        mono = denoise(mono, settings.sample_rate_hz)
    mono, offset = trim_silence(mono, settings) if settings.trim else (mono, 0.0)
    seconds = len(mono) / settings.sample_rate_hz
    if not settings.min_duration_s <= seconds <= settings.max_duration_s:
        raise AudioError(
            "duration_out_of_bounds",
            f"duration {seconds:.2f} s after trimming is outside "
            f"[{settings.min_duration_s}, {settings.max_duration_s}] s",
        )
    snr = estimate_snr_db(mono, settings.sample_rate_hz)
    if snr < settings.min_snr_db:
        raise AudioError("low_snr", f"estimated SNR {snr:.1f} dB is under {settings.min_snr_db} dB")
    out = normalize_loudness(mono, settings) if settings.loudness else mono
    return Cleaned(out.astype(np.float32), offset, snr)


def denoise(mono: np.ndarray, sample_rate: int, reduction_db: float = 12.0) -> np.ndarray:
    """Spectral gating: estimate each frequency's noise floor from the quietest 10% of frames and
    attenuate time-frequency cells near it by up to `reduction_db`, smoothly (a soft Wiener-like
    gain), so speech is left alone and steady hiss is reduced."""
    n_fft, hop = 1024, 256
    spec = librosa.stft(mono, n_fft=n_fft, hop_length=hop)
    power = np.abs(spec) ** 2
    frame_energy = power.sum(axis=0)
    quiet = power[:, frame_energy <= np.percentile(frame_energy, 10)]
    noise = quiet.mean(axis=1, keepdims=True) + 1e-12
    snr = power / noise
    floor = 10 ** (-reduction_db / 20)
    gain = np.maximum(floor, 1.0 - 1.0 / np.maximum(snr, 1e-6))
    out = librosa.istft(spec * gain, hop_length=hop, length=len(mono))
    return out.astype(np.float32)


def _speech_ratio(mono: np.ndarray, settings: PreprocessSettings) -> float:
    intervals = librosa.effects.split(mono, top_db=settings.trim_top_db)
    return float(sum(end - start for start, end in intervals)) / max(len(mono), 1)


def estimate_snr_db(mono: np.ndarray, sample_rate: int) -> float:
    """Loud frames (95th percentile energy) over quiet ones (10th percentile), 25 ms frames: a
    blind estimate good enough to catch recordings buried in noise."""
    frame = int(0.025 * sample_rate)
    n = len(mono) // frame
    if n < 4:
        return float("inf")
    energy = np.mean(mono[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12
    return float(10 * np.log10(np.percentile(energy, 95) / np.percentile(energy, 10)))


def trim_silence(mono: np.ndarray, settings: PreprocessSettings) -> tuple[np.ndarray, float]:
    """Cut edge silence, keeping `keep_silence_s` of it on each side; also where the cut starts."""
    _, (start, end) = librosa.effects.trim(mono, top_db=settings.trim_top_db)
    keep = int(settings.keep_silence_s * settings.sample_rate_hz)
    first = max(0, start - keep)
    return mono[first : min(len(mono), end + keep)], first / settings.sample_rate_hz


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
