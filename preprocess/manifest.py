"""Input manifests (JSONL or CSV) and their records.

A row needs `audio`, `text` and `speaker_id`; `id` is derived from the audio path when absent.
Every field of the seed's records is accepted; the ones the pipeline uses are typed here, the
rest travel in `custom`. A row that cannot be read becomes a `Rejected` with its reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from infra.storage import Store

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
REQUIRED = ("audio", "text", "speaker_id")
_TYPED = {"id", "audio", "text", "speaker_id", "language", "word_langs", "language_tags", "particle_tags"}


class ManifestError(ValueError):
    """The input holds no usable manifest."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str  # path relative to the manifest's folder or prefix
    text: str
    speaker_id: str
    language: str | None = None
    word_langs: list[str] | None = None  # the seed's `word_langs` / `language_tags`
    particle_tags: list[str] | None = None
    custom: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Utterance:
        """Validate one manifest row; raises ValueError naming the field."""
        missing = [name for name in REQUIRED if row.get(name) in (None, "")]
        if missing:
            raise ValueError(f"missing column(s) {', '.join(missing)}")
        for name in REQUIRED:
            if not isinstance(row[name], str):
                raise ValueError(f"{name} must be a string, got {type(row[name]).__name__}")
        utt_id = str(row.get("id") or PurePosixPath(row["audio"]).with_suffix("").as_posix().replace("/", "_"))
        langs = row.get("word_langs", row.get("language_tags"))
        return cls(
            id=utt_id,
            audio=row["audio"],
            text=row["text"],
            speaker_id=row["speaker_id"],
            language=row.get("language") or None,
            word_langs=_tag_list(langs, "word_langs"),
            particle_tags=_tag_list(row.get("particle_tags"), "particle_tags"),
            custom={k: v for k, v in row.items() if k not in _TYPED},
        )


@dataclass(frozen=True)
class Rejected:
    id: str
    reason: str  # a short stable code, counted in the run manifest
    detail: str
    audio: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _tag_list(value: Any, name: str) -> list[str] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):  # CSV cells: a JSON array or space-separated tags
        value = json.loads(value) if value.lstrip().startswith("[") else value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return value


def find_manifest(source: Store) -> str:
    for name in MANIFEST_NAMES:
        if source.exists(name):
            return name
    raise ManifestError(f"no {' or '.join(MANIFEST_NAMES)} in {source.url}")


def read_manifest(source: Store) -> Iterator[Utterance | Rejected]:
    """Rows of the input's manifest, in order, each an Utterance or a Rejected row."""
    name = find_manifest(source)
    text = source.get_bytes(name).decode("utf-8", errors="replace")
    if name.endswith(".jsonl"):
        yield from _jsonl_rows(text)
    else:
        yield from _csv_rows(text)


def _row_id(row: dict[str, Any], lineno: int) -> str:
    return str(row.get("id") or row.get("audio") or f"line_{lineno}")


def _jsonl_rows(text: str) -> Iterator[Utterance | Rejected]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\ufffd" in line:
            yield Rejected(f"line_{lineno}", "bad_encoding", f"manifest line {lineno} is not valid UTF-8")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Rejected(f"line_{lineno}", "malformed_row", f"manifest line {lineno}: {exc}")
            continue
        if not isinstance(row, dict):
            yield Rejected(f"line_{lineno}", "malformed_row", f"manifest line {lineno} is not an object")
            continue
        yield _parse(row, lineno)


def _csv_rows(text: str) -> Iterator[Utterance | Rejected]:
    reader = csv.DictReader(io.StringIO(text))
    for lineno, row in enumerate(reader, start=2):
        if None in row:
            yield Rejected(_row_id(row, lineno), "malformed_row", f"manifest line {lineno} has extra cells")
            continue
        yield _parse({k: v for k, v in row.items() if v not in (None, "")}, lineno)


def _parse(row: dict[str, Any], lineno: int) -> Utterance | Rejected:
    try:
        return Utterance.from_dict(row)
    except ValueError as exc:
        return Rejected(_row_id(row, lineno), "malformed_row", f"manifest line {lineno}: {exc}",
                        audio=row.get("audio") if isinstance(row.get("audio"), str) else None)
