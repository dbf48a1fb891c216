"""The quarantine: entries naming each rejected row, and the one guard of per-row work that makes them.

Every per-row step (parsing the manifest line, resolving and reading the audio, decoding, the
checks, text analysis, word timings, features, the codec, building the shard sample) runs through
`guarded`. A `RowError` carries a stable reason code chosen by the step that knows what went wrong;
any other exception becomes `internal_error` with its type, message and where it was raised, so an
unforeseen input costs one row, never the run.

Only faults of the run itself pass through and end it, with a message naming the row that met
them: `RunError` (the output store, the settings), a full disk, and KeyboardInterrupt/SystemExit.

Reason codes are a contract users grep for: `REASONS` lists every one with what it means (the
README's "Bad input" table shows the same list).
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REASONS: dict[str, str] = {
    # the manifest line
    "malformed_row": "the line is not a JSON object / CSV row with audio, text and speaker_id of the right types",
    "bad_encoding": "the line is not valid text in the manifest's encoding, or a field has a broken \\u escape",
    "unsafe_id": "id or speaker_id is not a safe store key (letters, digits, _ - . ; at most 128 bytes)",
    "duplicate_id": "the id appeared on an earlier line",
    "tags_mismatch": "word_langs / particle_tags do not fit the words, or hold unknown values",
    "timings_mismatch": "word_timings are not one ordered, finite (start, end) pair per word inside the audio",
    "empty_text": "the transcript has no words",
    # the audio file
    "path_outside_input": "the audio path is absolute or leaves the input folder (also through a symlink)",
    "missing_audio": "no file at the audio path",
    "unreadable_audio": "not a regular file (folder, FIFO, device, link loop), or not decodable audio",
    "file_too_large": "the file is larger than preprocess.max_audio_mb",
    "read_timeout": "reading the file made no progress for preprocess.read_timeout_s",
    "truncated_audio": "the file is shorter than its own header says (cut-off download or copy)",
    "empty_audio": "the file holds no samples",
    # the signal
    "low_sample_rate": "sample rate under preprocess.min_input_rate_hz",
    "non_finite_samples": "NaN or infinite samples",
    "clipping": "too many samples at full scale",
    "silent_audio": "digital silence",
    "mostly_silence": "too little of the file is above the silence threshold",
    "too_quiet": "speech quieter than preprocess.min_loudness_lufs",
    "low_snr": "speech buried in noise",
    "duration_out_of_bounds": "duration outside [min_duration_s, max_duration_s] (longer files are refused "
                              "from their header, without decoding)",
    "speaking_rate": "characters per second implausible: transcript and audio probably do not match",
    "duplicate_audio": "the same audio bytes as an earlier row",
    # anything else
    "internal_error": "an unexpected failure while processing this row (the detail names the exception)",
}

# A full disk or quota is the machine's fault, not the row's: every later row would fail the same way.
_RUN_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
TEXT_LIMIT = 600  # characters of a detail (ids and paths: half of it) kept in a quarantine line


@dataclass(frozen=True)
class RowRef:
    """What names a row in messages: its manifest line, id and audio path (any may be unknown)."""

    line: int | None = None
    id: str | None = None
    audio: str | None = None

    def describe(self) -> str:
        parts = [f"id {printable(self.id, TEXT_LIMIT // 2)!r}"] if self.id is not None else []
        if self.audio is not None:
            parts.append(f"audio {printable(self.audio, TEXT_LIMIT // 2)!r}")
        where = f"manifest line {self.line}" if self.line is not None else "row"
        return f"{where} ({', '.join(parts)})" if parts else where


class RowError(ValueError):
    """What is wrong with one row: `reason` is a code from REASONS, `detail` says what and how to fix it."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RunError(RuntimeError):
    """A fault of the run itself (the output store, the disk, the settings): ends the run."""


@dataclass(frozen=True)
class Rejected:
    """One quarantine line: the row (id, audio path, manifest line) and why it was not kept."""

    id: str
    reason: str  # a short stable code from REASONS, counted in the run manifest
    detail: str
    audio: str | None = None
    line: int | None = None  # the manifest line (a CSV row: the line it starts on)

    def __post_init__(self) -> None:
        # Whatever a manifest held, the quarantine stays writable and readable UTF-8 of bounded size.
        object.__setattr__(self, "id", printable(self.id, TEXT_LIMIT // 2))
        object.__setattr__(self, "detail", printable(self.detail, TEXT_LIMIT))
        if self.audio is not None:
            object.__setattr__(self, "audio", printable(self.audio, TEXT_LIMIT // 2))

    @classmethod
    def of(cls, row: RowRef, reason: str, detail: str) -> Rejected:
        return cls(row.id if row.id is not None else f"line_{row.line}", reason, detail, row.audio, row.line)

    @property
    def ref(self) -> RowRef:
        return RowRef(self.line, self.id, self.audio)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def printable(text: str, limit: int) -> str:
    """`text` with lone surrogates written as escapes, cut to `limit` characters."""
    text = text if isinstance(text, str) else repr(text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def is_run_fault(exc: BaseException) -> bool:
    return isinstance(exc, RunError) or (isinstance(exc, OSError) and exc.errno in _RUN_ERRNOS)


def guarded(row: RowRef, step: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | Rejected:
    """`fn(*args, **kwargs)`, or the Rejected entry for `row` when it raises."""
    try:
        return fn(*args, **kwargs)
    except RowError as exc:
        return Rejected.of(row, exc.reason, exc.detail)
    except Exception as exc:
        if is_run_fault(exc):
            raise RunError(f"{step} of {row.describe()}: {exc}") from exc
        return Rejected.of(row, "internal_error", internal_detail(step, exc))


def internal_detail(step: str, exc: BaseException) -> str:
    """`<step>: <Type>: <message> (at <file>:<line>)`."""
    message = str(exc) or repr(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{step}: {type(exc).__name__}: {printable(message, TEXT_LIMIT - 100)}{where}"
