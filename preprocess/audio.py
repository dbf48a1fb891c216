"""Decode and clean audio: mono, 24 kHz, edge silence trimmed, loudness normalised, peak-safe.

Memory per file does not grow with the file. The header is probed first (sample rate, channels,
length): a file longer than `max_input_duration_s` is refused without being decoded, and one whose
container says it was cut off (containers.py) is `truncated_audio`. Decoding then streams blocks
through the checks, the downmix and soxr's streaming resampler, and stops at the same length bound
should the header have understated it; what is held is the mono clip at 24 kHz.

The downmix is the mean of the channels, unless that cancels: channels in opposite phase (one
wired inverted) leave a mean far quieter than the channels themselves, and then the loudest channel
is used alone. Loudness is normalised to `target_lufs`; speech so quiet that BS.1770's absolute
gate (-70 LUFS) gates it all out is measured after a gain that lifts it over the gate, and speech
under `min_loudness_lufs` is `too_quiet`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import librosa
import numpy as np
import pyloudnorm
import soundfile as sf
import soxr

from infra.settings import PreprocessSettings
from preprocess.containers import missing_tail
from preprocess.quarantine import RowError

BLOCK_BYTES = 4 << 20  # decoded float32 per block, whatever the channel count
# Mean power of the mono mix against the channels' mean power. Independent channels give 0.5
# (-3 dB), identical ones 1; under 0.1 (-10 dB) the channels cancel each other: opposite phase.
CANCELLING_MIX = 0.1


class AudioError(RowError):
    """Audio that cannot be used. `reason` is a short stable code for the quarantine."""


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # mono float32 at settings.sample_rate_hz
    input_rate_hz: int
    channels: int
    input_duration_s: float  # decoded length of the file
    downmix: str  # "mono", "mean", or "channel N" (the mean cancelled)


@dataclass(frozen=True)
class Cleaned:
    samples: np.ndarray  # mono float32 at settings.sample_rate_hz
    offset_s: float  # where the kept audio starts in the original (edge silence cut before it)
    snr_db: float
    input_duration_s: float = 0.0  # the file's decoded length, on the original clock


def max_input_duration_s(settings: PreprocessSettings) -> float:
    """Files longer than this are refused from their header: edge silence up to twice the clip
    may still be trimmed off a file that ends up under max_duration_s."""
    return settings.max_input_duration_s or 3 * settings.max_duration_s


# -- reading files -------------------------------------------------------------------------------

def check_header(fh: IO[bytes], settings: PreprocessSettings, name: str = "audio") -> sf._SoundFileInfo:
    """The file's header (sample rate, channels, length), refused when the rate or the length is
    out of bounds: nothing past the header is read. Raises AudioError."""
    info = _probe(fh, name)
    if info.samplerate < settings.min_input_rate_hz:
        raise AudioError("low_sample_rate", f"sample rate {info.samplerate} Hz is under "
                                            f"{settings.min_input_rate_hz} Hz")
    bound = max_input_duration_s(settings)
    if info.frames / info.samplerate > bound:
        raise AudioError("duration_out_of_bounds", f"{name} is {info.frames / info.samplerate:.1f} s long by its "
                                                   f"header, over {bound:g} s (preprocess.max_input_duration_s); "
                                                   "not decoded")
    return info


def read_audio(fh: IO[bytes], settings: PreprocessSettings, name: str = "audio") -> Decoded:
    """The file's audio as a mono clip at the codec's rate, streamed. Raises AudioError."""
    info = check_header(fh, settings, name)
    cut = missing_tail(fh, info.format)
    if cut:
        raise AudioError("truncated_audio", f"{name} is truncated: {cut}")
    return _mixdown(lambda: _file_blocks(fh, info.channels, name), info.samplerate, info.channels, info.frames,
                    settings, name)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """A whole (small) file in memory: samples as float32 (frames, channels) and the sample rate,
    after the same probe and truncation checks as read_audio. Raises AudioError."""
    fh = io.BytesIO(data)
    info = _probe(fh, "audio")
    cut = missing_tail(fh, info.format)
    if cut:
        raise AudioError("truncated_audio", f"audio is truncated: {cut}")
    try:
        blocks = list(_file_blocks(fh, info.channels, "audio"))
    except _DecodeStopped as exc:
        raise AudioError("truncated_audio" if info.frames else "unreadable_audio", f"decoding failed: {exc}") from None
    samples = np.concatenate(blocks) if blocks else np.zeros((0, info.channels), np.float32)
    if samples.shape[0] == 0:
        raise AudioError("empty_audio", "audio has no samples")
    if samples.shape[0] < info.frames:
        raise AudioError("truncated_audio", _short_by(samples.shape[0], info.frames, info.samplerate, "audio"))
    return samples, info.samplerate


def _probe(fh: IO[bytes], name: str) -> sf._SoundFileInfo:
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(0)
    if size == 0:
        raise AudioError("unreadable_audio", f"{name} is empty (0 bytes)")
    try:
        info = sf.info(fh)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError("unreadable_audio", f"cannot decode {name}: {_why(exc)}") from None
    finally:
        fh.seek(0)
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError("unreadable_audio", f"cannot decode {name}: header gives {info.samplerate} Hz, "
                                             f"{info.channels} channels")
    return info


def _file_blocks(fh: IO[bytes], channels: int, name: str) -> Iterator[np.ndarray]:
    fh.seek(0)
    frames = max(1024, BLOCK_BYTES // (4 * channels))
    try:
        with sf.SoundFile(fh) as f:
            yield from f.blocks(blocksize=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise _DecodeStopped(_why(exc)) from None


class _DecodeStopped(Exception):
    """The decoder failed part-way; _mixdown says what that means for the row."""


def _why(exc: BaseException) -> str:
    """libsndfile's own words, without the repr of an in-memory file object."""
    text = getattr(exc, "error_string", "") or str(exc)
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", text).strip() or type(exc).__name__


def _short_by(decoded: int, declared: int, rate: int, name: str) -> str:
    return f"{name} is truncated: decoding ended at {decoded / rate:.2f} s of the {declared / rate:.2f} s its " \
           "header declares"


# -- downmix, checks, resampling -----------------------------------------------------------------

def _array_blocks(samples: np.ndarray) -> Callable[[], Iterator[np.ndarray]]:
    samples = samples[:, None] if samples.ndim == 1 else samples
    step = max(1024, BLOCK_BYTES // (4 * max(1, samples.shape[1])))
    return lambda: (samples[i : i + step] for i in range(0, samples.shape[0], step))


class _Checks:
    """Per-block checks over the whole file: finite samples, clipping, the length bound."""

    def __init__(self, rate: int, channels: int, settings: PreprocessSettings, name: str):
        self.rate, self.settings, self.name = rate, settings, name
        self.cap = int(max_input_duration_s(settings) * rate)
        self.frames, self.clipped = 0, 0
        self.channel_power = np.zeros(channels)
        self.mix_power = 0.0

    def add(self, block: np.ndarray) -> None:
        self.frames += block.shape[0]
        if self.frames > self.cap:
            raise AudioError("duration_out_of_bounds", f"{self.name} decodes to more than {self.cap / self.rate:g} s "
                                                       "(preprocess.max_input_duration_s); decoding stopped")
        if not np.isfinite(block).all():
            raise AudioError("non_finite_samples", "audio contains NaN or infinite samples")
        self.clipped += int(np.count_nonzero(np.abs(block) >= 0.999))
        wide = block.astype(np.float64)
        self.channel_power += np.sum(wide**2, axis=0)
        self.mix_power += float(np.sum(wide.mean(axis=1) ** 2))

    def finish(self, channels: int) -> None:
        ratio = self.clipped / max(1, self.frames * channels)
        if ratio > self.settings.max_clipping_ratio:
            raise AudioError("clipping", f"{ratio:.2%} of samples are at full scale (limit "
                                         f"{self.settings.max_clipping_ratio:.2%})")

    def cancelling_channel(self) -> int | None:
        """The loudest channel when the mean of the channels cancels, else None."""
        mean_channel = float(self.channel_power.mean())
        if len(self.channel_power) > 1 and mean_channel > 0 and self.mix_power < CANCELLING_MIX * mean_channel:
            return int(np.argmax(self.channel_power))
        return None


def _mixdown(blocks: Callable[[], Iterator[np.ndarray]], rate: int, channels: int, declared: int,
             settings: PreprocessSettings, name: str) -> Decoded:
    """One pass of checks (a second, for several channels, once the downmix is chosen), then the
    mono mix streamed through the resampler."""
    checks = _Checks(rate, channels, settings, name)
    pick: int | None = None
    try:
        if channels > 1:
            for block in blocks():
                checks.add(block)
            checks.finish(channels)
            pick = checks.cancelling_channel()
        target = settings.sample_rate_hz
        resampler = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ") if rate != target else None
        pieces = []
        for block in blocks():
            if channels == 1:
                checks.add(block)
            mono = np.ascontiguousarray(block[:, 0] if channels == 1 else
                                        block[:, pick] if pick is not None else block.mean(axis=1), np.float32)
            pieces.append(resampler.resample_chunk(mono) if resampler else mono)
        if resampler:
            pieces.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    except _DecodeStopped as exc:
        if declared and checks.frames < declared:
            raise AudioError("truncated_audio", f"{_short_by(checks.frames, declared, rate, name)} ({exc})") from None
        raise AudioError("unreadable_audio", f"cannot decode {name}: {exc}") from None
    if channels == 1:
        checks.finish(channels)
    frames = checks.frames
    if frames == 0:
        raise AudioError("empty_audio", "audio has no samples")
    if declared and frames < declared - rate // 1000:
        raise AudioError("truncated_audio", _short_by(frames, declared, rate, name))
    mono = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    downmix = "mono" if channels == 1 else f"channel {pick}" if pick is not None else "mean"
    return Decoded(mono.astype(np.float32, copy=False), rate, channels, frames / rate, downmix)


# -- cleaning ------------------------------------------------------------------------------------

def clean(samples: np.ndarray, rate: int, settings: PreprocessSettings) -> Cleaned:
    """Checked, mono, resampled, trimmed and loudness-normalised audio from samples in memory
    ((frames, channels) or (frames,)). Raises AudioError."""
    if rate < settings.min_input_rate_hz:
        raise AudioError("low_sample_rate", f"sample rate {rate} Hz is under {settings.min_input_rate_hz} Hz")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    decoded = _mixdown(_array_blocks(samples), rate, channels, 0, settings, "audio")
    return finish(decoded, settings)


def clean_file(fh: IO[bytes], settings: PreprocessSettings, name: str = "audio") -> Cleaned:
    """A file's audio, decoded as it streams, checked, cleaned. Raises AudioError."""
    return finish(read_audio(fh, settings, name), settings)


def finish(decoded: Decoded, settings: PreprocessSettings) -> Cleaned:
    """The checks and cleaning steps that need the whole mono clip."""
    mono = decoded.samples
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
    return Cleaned(out.astype(np.float32), offset, snr, decoded.input_duration_s)


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


def loudness_lufs(mono: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (BS.1770). Speech that the absolute gate (-70 LUFS) would gate out
    entirely is measured at a gain that brings its peak to full scale, and the gain taken off:
    the relative gate then finds the speech, which is what normalising it needs."""
    meter = pyloudnorm.Meter(sample_rate)
    x = mono.astype(np.float64)
    loudness = meter.integrated_loudness(x)
    if math.isfinite(loudness):
        return float(loudness)
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        return -math.inf
    return float(meter.integrated_loudness(x / peak) + 20 * math.log10(peak))


def normalize_loudness(mono: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    # BS.1770 gating needs 400 ms blocks; shorter clips are scaled by peak only.
    if len(mono) >= int(0.4 * settings.sample_rate_hz):
        loudness = loudness_lufs(mono, settings.sample_rate_hz)
        if not loudness >= settings.min_loudness_lufs:
            raise AudioError("too_quiet", f"speech loudness {loudness:.1f} LUFS is under "
                                          f"{settings.min_loudness_lufs:g} LUFS (preprocess.min_loudness_lufs)")
        mono = mono * 10 ** ((settings.target_lufs - loudness) / 20)
    peak = float(np.max(np.abs(mono)))
    ceiling = 10 ** (settings.peak_dbfs / 20)
    if peak > ceiling:
        mono = mono * (ceiling / peak)
    return mono
