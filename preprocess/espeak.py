"""espeak-ng as a library: text in one voice -> samples, with no system install.

The `espeakng-loader` wheel (PyPI) ships `libespeak-ng.so` and its voice data (`ms`, `en`,
`cmn-latn-pinyin` among them), so the offline aligner and the sample-corpus generator work on any
machine that ran `make setup`; a system libespeak-ng is used where the wheel is missing. The engine
is called through its C API (speak_lib.h) with ctypes, synchronous output into a callback.

Determinism: the engine keeps state between utterances that its API cannot reset (a static
pitch-flutter index in the wave generator), so the same word spoken twice in one process differs
by a few samples depending on what was said before. Each utterance is therefore spoken in a
forked child of a process that never speaks itself: every child starts from the same pristine
state, and the output depends on the text and voice alone (as with one `espeak-ng` command per
word). A fork costs about a millisecond in a preprocessing worker, which imports no torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
RATE, PITCH = 1, 3  # espeak_PARAMETER
DEFAULT_WPM, DEFAULT_PITCH = 175, 50
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_NO_VOICE, _SYNTH_FAILED = 3, 4  # child exit codes


class EspeakError(RuntimeError):
    """espeak-ng cannot be loaded, or refused a voice or a text."""


@dataclass
class _Engine:
    lib: ctypes.CDLL
    sample_rate: int
    source: str  # where the library came from, for messages
    callback: object  # kept referenced: the C side holds the pointer
    out_fd: int = -1  # where the callback writes (set in the child)


@lru_cache(maxsize=1)
def _engine() -> _Engine:
    candidates: list[tuple[str, str | None]] = []
    try:
        import espeakng_loader

        candidates.append((espeakng_loader.get_library_path(), espeakng_loader.get_data_path()))
    except (ImportError, RuntimeError):
        pass
    system = ctypes.util.find_library("espeak-ng")
    if system:
        candidates.append((system, None))
    errors = []
    for path, data in candidates:
        try:
            return _open(path, data)
        except (OSError, EspeakError) as exc:
            errors.append(f"{path}: {exc}")
    raise EspeakError("espeak-ng is not available: install the `espeakng-loader` package (it is in "
                      "requirements/lock.txt) or the system library (apt-get install libespeak-ng1)"
                      + (f"; tried {'; '.join(errors)}" if errors else ""))


def _open(path: str, data: str | None) -> _Engine:
    lib = ctypes.CDLL(path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode() if data else None, 0)
    if rate <= 0:
        raise EspeakError(f"espeak_Initialize failed ({rate})")
    engine = _Engine(lib, rate, path, None)

    def write(wav, count, _events):
        if wav and count > 0:
            os.write(engine.out_fd, ctypes.string_at(wav, count * 2))
        return 0

    engine.callback = _CALLBACK(write)
    lib.espeak_SetSynthCallback(engine.callback)
    return engine


def available() -> bool:
    try:
        _engine()
    except EspeakError:
        return False
    return True


def describe() -> str:
    """Where the engine comes from (for logs)."""
    return _engine().source


def synthesize(text: str, voice: str, words_per_minute: int = DEFAULT_WPM,
               pitch: int = DEFAULT_PITCH) -> tuple[np.ndarray, int]:
    """`text` spoken by espeak-ng `voice` (a voice file name such as `ms`, `en`, `cmn-latn-pinyin`)
    as float32 mono samples and their rate (22050 Hz). `words_per_minute` 80-450, `pitch` 0-99."""
    engine = _engine()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: speak once into the pipe and leave without running any Python cleanup
        code = 1
        try:
            os.close(read_fd)
            engine.out_fd = write_fd
            data = text.encode("utf-8")
            if engine.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                code = _NO_VOICE
            else:
                engine.lib.espeak_SetParameter(RATE, int(words_per_minute), 0)
                engine.lib.espeak_SetParameter(PITCH, int(pitch), 0)
                status = engine.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
                code = 0 if status == 0 else _SYNTH_FAILED
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        pcm = pipe.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == _NO_VOICE:
        raise EspeakError(f"espeak-ng has no voice {voice!r}")
    if code != 0:
        raise EspeakError(f"espeak-ng could not speak {text!r} with voice {voice!r} (exit {code})")
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0, engine.sample_rate
