"""Input manifests (JSONL or CSV) and their records.

A row needs `audio`, `text` and `speaker_id`; `id` is derived from the audio path when absent.
Every field of the seed's records is accepted; the ones the pipeline uses are typed here, the
rest travel in `custom`. A row that cannot be used becomes a `Rejected` naming its manifest line.

Manifests are read as people save them: UTF-8 with or without a byte-order mark (Excel writes
one), UTF-16 or UTF-32 with one, LF or CRLF line ends. JSONL rows are split on `\\n` only, so a
U+2028 or NEL inside a text stays in the text; CSV rows are the csv module's (a quoted cell may
hold line breaks, and a cell may be as long as the file). Blank lines are not rows.

Rows are checked here, before any audio is read or anything written:
- `id` (a string or a number) and `speaker_id` must be safe store keys (`shards.KEY_RULE`;
  surrounding blanks are dropped), else `unsafe_id`; a blank speaker id is `malformed_row`.
- `audio` is a path relative to the manifest's folder; `..` may move within it, but an absolute
  path or one that leaves the folder is `path_outside_input` (the file is never opened).
- A derived id is the audio path without its extension, `/` and other characters outside the key
  rule written as `_`; when that id is already some other row's (`a_b.wav` and `a/b.wav`, or
  `x.wav` and `x.flac`), the later row's id gets `-` and 8 hex digits of its path's sha256, so no
  row is lost to a derived collision. Given ids never change.
- `word_langs`/`particle_tags` must be lists of strings; particle tags must name known particles.
- `word_timings`, when given, must be well-formed (features.parse_timings).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from infra.storage import Store
from preprocess.features import parse_timings
from preprocess.quarantine import Rejected, RowError, RowRef, guarded
from preprocess.shards import KEY_MAX_BYTES, KEY_RULE, key_problem
from preprocess.text.lexicon import PARTICLE_VARIANTS

__all__ = ["ManifestError", "Rejected", "RowError", "Utterance", "audio_key", "find_manifest", "read_manifest"]

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
REQUIRED = ("audio", "text", "speaker_id")
_TYPED = {"id", "audio", "text", "speaker_id", "language", "word_langs", "language_tags", "particle_tags"}
NO_PARTICLE = ("", "none")  # the seed's particle_tags mark words that are not particles "none"
_SURROGATE = re.compile("[\ud800-\udfff]")


class ManifestError(ValueError):
    """The input holds no usable manifest."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str  # path relative to the manifest's folder or prefix, normalised (no `.`/`..` parts)
    text: str
    speaker_id: str
    language: str | None = None
    word_langs: list[str] | None = None  # the seed's `word_langs` / `language_tags`
    particle_tags: list[str | None] | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    line: int | None = None  # the manifest line (a CSV row: the line it starts on)

    @property
    def ref(self) -> RowRef:
        return RowRef(self.line, self.id, self.audio)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}

    @classmethod
    def from_dict(cls, row: dict[str, Any], line: int | None = None, derived_id: str | None = None) -> Utterance:
        """Validate one manifest row; raises RowError naming the field. `derived_id` is used when the
        row has no id (read_manifest derives collision-free ones; alone, the path's stem is used)."""
        missing = [name for name in REQUIRED if row.get(name) in (None, "")]
        if missing:
            raise RowError("malformed_row", f"missing column(s) {', '.join(missing)}")
        for name in REQUIRED:
            if not isinstance(row[name], str):
                raise RowError("malformed_row", f"{name} must be a string, got {_type(row[name])}")
        for name in ("audio", "text", "speaker_id"):
            _no_surrogates(row[name], name)
        audio = audio_key(row["audio"])
        speaker = row["speaker_id"].strip()
        if not speaker:
            raise RowError("malformed_row", "speaker_id is blank")
        _check_key(speaker, "speaker_id")
        utt_id = given_id(row)
        if utt_id is None:
            utt_id = derived_id or derive_id(audio, set())
        else:
            _check_key(utt_id, "id")
        language = row.get("language")
        if language is not None and not isinstance(language, str):
            raise RowError("malformed_row", f"language must be a string, got {_type(language)}")
        if row.get("word_timings") not in (None, ""):
            parse_timings(row["word_timings"])
        langs = row.get("word_langs", row.get("language_tags"))
        return cls(
            id=utt_id,
            audio=audio,
            text=row["text"],
            speaker_id=speaker,
            language=language or None,
            word_langs=_tag_list(langs, "word_langs"),
            particle_tags=_particle_tags(row.get("particle_tags")),
            custom={k: v for k, v in row.items() if k not in _TYPED},
            line=line,
        )


def audio_key(path: str) -> str:
    """The store key of a manifest's audio path: relative, normalised, inside the input. Raises RowError."""
    if "\x00" in path:
        raise RowError("malformed_row", "audio path contains a NUL character")
    if path.startswith("/"):
        raise RowError("path_outside_input", f"audio path {path!r} is absolute; write it relative to the "
                                             "manifest's folder (the input)")
    key = posixpath.normpath(path)
    if key == ".." or key.startswith("../"):
        raise RowError("path_outside_input", f"audio path {path!r} leaves the input folder (it resolves to {key!r})")
    if key == ".":
        raise RowError("unreadable_audio", f"audio path {path!r} is the input folder itself, not a file")
    return key


def given_id(row: dict[str, Any]) -> str | None:
    """The row's own id as text (None when it has none). Raises RowError for an id of the wrong type."""
    value = row.get("id")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError("malformed_row", f"id must be a string or a number, got {_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError("malformed_row", f"id {value} is not a finite number")
    text = value.strip() if isinstance(value, str) else repr(value)
    _no_surrogates(text, "id")
    return text


def derive_id(audio: str, taken: set[str]) -> str:
    """An id from a (normalised) audio path: its stem with every character outside the key rule as
    `_`; suffixed with `-` and a hash of the path when that id is in `taken`."""
    stem = posixpath.splitext(audio)[0] or audio
    base = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in stem.replace("/", "_"))
    if not base[:1].isalnum():
        base = "u" + base
    suffix = "-" + hashlib.sha256(audio.encode("utf-8")).hexdigest()[:8]
    base = _cut(base, KEY_MAX_BYTES - len(suffix))
    return base + suffix if base in taken else base


def _cut(text: str, limit: int) -> str:
    while len(text.encode("utf-8")) > limit:
        text = text[:-1]
    return text


def _check_key(value: str, what: str) -> None:
    problem = key_problem(value)
    if problem:
        raise RowError("unsafe_id", f"{what} {value!r} is not a safe store key: {problem}; use {KEY_RULE}")


def _no_surrogates(value: str, what: str) -> None:
    found = _SURROGATE.search(value)
    if found:
        raise RowError("bad_encoding", f"{what} holds a lone surrogate (\\u{ord(found.group()):04x}) at character "
                                       f"{found.start()}: a broken \\u escape in the manifest")


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__)


def _tag_list(value: Any, name: str) -> list[str] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):  # CSV cells: a JSON array or space-separated tags
        try:
            value = json.loads(value) if value.lstrip().startswith("[") else value.split()
        except (ValueError, RecursionError) as exc:
            raise RowError("malformed_row", f"{name} is not a JSON list: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowError("malformed_row", f"{name} must be a list of strings")
    return value


def _particle_tags(value: Any) -> list[str | None] | None:
    if isinstance(value, list):  # the seed writes null or "none" for words that are not particles
        value = ["none" if v is None else v for v in value]
    tags = _tag_list(value, "particle_tags")
    if tags is None:
        return None
    names = [t.strip().lower() for t in tags]
    unknown = sorted({t for t, n in zip(tags, names, strict=True)
                      if n not in NO_PARTICLE and n not in PARTICLE_VARIANTS})
    if unknown:
        known = ", ".join(sorted(set(PARTICLE_VARIANTS.values())))
        raise RowError("tags_mismatch", f"unknown particle tag(s) {unknown}; use 'none' or one of {known}")
    return [None if n in NO_PARTICLE else n for n in names]


def find_manifest(source: Store) -> str:
    for name in MANIFEST_NAMES:
        if source.exists(name):
            return name
    raise ManifestError(f"no {' or '.join(MANIFEST_NAMES)} in {source.url}")


def read_manifest(source: Store) -> Iterator[Utterance | Rejected]:
    """Rows of the input's manifest, in order, each an Utterance or a Rejected row."""
    name = find_manifest(source)
    text = decode_manifest(source.get_bytes(name))
    records = list(_jsonl_records(text) if name.endswith(".jsonl") else _csv_records(text))
    taken = set()
    for _, record in records:
        if isinstance(record, dict):
            try:
                if (utt_id := given_id(record)) is not None:
                    taken.add(utt_id)
            except RowError:
                pass
    for line, record in records:
        if isinstance(record, Rejected):
            yield record
            continue
        yield _parse(record, line, taken)


def _parse(record: dict[str, Any], line: int, taken: set[str]) -> Utterance | Rejected:
    ref = RowRef(line, _raw_text(record.get("id")), _raw_text(record.get("audio")))
    return guarded(ref, "manifest", _utterance, record, line, taken)


def _utterance(record: dict[str, Any], line: int, taken: set[str]) -> Utterance:
    derived = None
    if given_id(record) is None and isinstance(record.get("audio"), str):
        derived = derive_id(audio_key(record["audio"]), taken)
        taken.add(derived)
    return Utterance.from_dict(record, line, derived)


def _raw_text(value: Any) -> str | None:
    return value if isinstance(value, str) else (str(value) if isinstance(value, int | float) else None)


# -- reading the file ------------------------------------------------------------------------------

_BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_manifest(data: bytes) -> str:
    """The manifest's text. Bytes that are not valid in its encoding become lone surrogates (which
    decoded text never holds otherwise), so the lines holding them are quarantined as bad_encoding
    while the rest are read."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, errors=_MARK)
    head = data[:4096]
    if head.count(0) > len(head) // 4:  # UTF-16 without a mark: text never holds NUL bytes otherwise
        even_zeros = head[::2].count(0)
        return data.decode("utf-16-be" if even_zeros > head[1::2].count(0) else "utf-16-le", errors=_MARK)
    return data.decode("utf-8", errors="surrogateescape")


def _mark_undecodable(exc: UnicodeDecodeError) -> tuple[str, int]:
    return "\udcff" * (exc.end - exc.start), exc.end


_MARK = "suara-mark-undecodable"
codecs.register_error(_MARK, _mark_undecodable)


def _bad_encoding(line: int, text: str) -> Rejected:
    at = _SURROGATE.search(text)
    column = f" (character {at.start() + 1})" if at else ""
    return Rejected(f"line_{line}", "bad_encoding", f"manifest line {line} is not valid text in the manifest's "
                                                   f"encoding{column}; save it as UTF-8", line=line)


def _jsonl_records(text: str) -> Iterator[tuple[int, dict[str, Any] | Rejected]]:
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip("\ufeff")  # a mark left where files were concatenated
        if not line.strip():
            continue
        if _SURROGATE.search(line):
            yield lineno, _bad_encoding(lineno, line)
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            yield lineno, _malformed(lineno, "is JSON nested too deeply to read")
            continue
        except ValueError as exc:
            yield lineno, _malformed(lineno, f"is not JSON: {exc}")
            continue
        if not isinstance(row, dict):
            yield lineno, _malformed(lineno, f"is {_type(row)}, not a JSON object")
            continue
        yield lineno, row


def _csv_records(text: str) -> Iterator[tuple[int, dict[str, Any] | Rejected]]:
    # A cell may be as long as the whole file (the default limit, 131072 characters, ended runs).
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    problem: str | None = None
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, _malformed(start, f"is not a CSV row: {exc}")
            if reader.line_num < start:  # no progress: the reader cannot go on
                return
            continue
        if not any(c.strip() for c in cells):
            continue  # a blank line, or a row of empty cells
        if header is None:
            header = [c.strip().lstrip("\ufeff") for c in cells]
            dupes = sorted({h for h in header if h and header.count(h) > 1})
            problem = f"is under a header (line {start}) that names column(s) {dupes} twice" if dupes else None
            continue
        if problem:
            yield start, _malformed(start, problem)
        elif _SURROGATE.search("".join(cells)):
            yield start, _bad_encoding(start, "".join(cells))
        elif len(cells) > len(header):
            yield start, _malformed(start, f"has {len(cells)} cells, but the header has {len(header)} columns")
        else:
            yield start, {h: c for h, c in zip(header, cells, strict=False) if h and c != ""}


def _malformed(line: int, detail: str) -> Rejected:
    return Rejected(f"line_{line}", "malformed_row", f"manifest line {line} {detail}", line=line)
