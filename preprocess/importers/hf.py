"""Hugging Face datasets saved to disk: parquet files (`Dataset.to_parquet`, a Hub repository's
`data/*.parquet`) or arrow files (`save_to_disk`: `data-NNNNN-of-NNNNN.arrow`, one folder per split
for a DatasetDict), anywhere under the source. Parquet wins when both are there.

The audio column is the one the file's `huggingface` metadata types as `Audio` (else the first
struct column with a `bytes` field); its bytes become `audio/<id>.<ext>` (the extension from the
bytes' magic number). The text is `--text-column` or the first of TEXT_COLUMNS; the speaker,
language and id the first of theirs; ClassLabel columns are written as their label names. Every
other column of text, numbers, booleans or lists of those travels as a tag of the row. The row's
split (a DatasetDict's folder, a parquet file's `train-…` prefix) is the tag `hf_split`.

The files are read with pyarrow alone (no audio decoding by `datasets`): parquet BATCH_ROWS rows at
a time, arrow IPC one record batch at a time, so memory holds one batch of audio bytes.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from typing import Any

from infra.storage import Store
from preprocess.importers import BATCH_ROWS, Blob, ImportOptions, Item, audio_suffix, stem_id
from preprocess.quarantine import Rejected, RowRef

TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_transcription")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id", "spk_id")
LANGUAGE_COLUMNS = ("language", "locale", "lang")
ID_COLUMNS = ("id", "utt_id", "segment_id", "audio_id")


def read(source: Store, options: ImportOptions) -> Iterator[Item | Rejected]:
    keys = source.list()
    parquet = [k for k in keys if k.endswith(".parquet")]
    arrow = [k for k in keys if k.endswith(".arrow")]
    if not parquet and not arrow:
        raise FileNotFoundError(f"no .parquet or .arrow files under {source.url}: is it a Hugging Face dataset "
                                "saved with to_parquet or save_to_disk?")
    taken: set[str] = set()
    for key in parquet or arrow:
        yield from _file_rows(source, key, options, taken)


def _file_rows(source: Store, key: str, options: ImportOptions, taken: set[str]) -> Iterator[Item | Rejected]:
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    with source.reader(key) as fh:
        if key.endswith(".parquet"):
            pf = pq.ParquetFile(fh)
            schema, batches = pf.schema_arrow, pf.iter_batches(batch_size=BATCH_ROWS)
        else:
            try:
                stream: Any = ipc.open_stream(fh)  # what datasets writes
            except Exception:
                fh.seek(0)
                stream = ipc.open_file(fh)
            schema = stream.schema
            batches = stream if hasattr(stream, "__iter__") else (stream.get_batch(i)
                                                                  for i in range(stream.num_record_batches))
        columns = _Columns(schema, options, key)
        index = 0
        for batch in batches:
            for record in batch.to_pylist():
                index += 1
                yield columns.item(record, key, index, taken)


class _Columns:
    """Which column is which, from the schema and the `huggingface` metadata datasets writes."""

    def __init__(self, schema: Any, options: ImportOptions, key: str):
        features = _features(schema)
        names = list(schema.names)
        self.audio = next((n for n in names if features.get(n, {}).get("_type") == "Audio"), None) or next(
            (f.name for f in schema if str(f.type).startswith("struct<") and "bytes" in str(f.type)), None)
        if self.audio is None:
            raise ValueError(f"{key} has no audio column (an Audio feature or a struct with bytes); columns: "
                             f"{', '.join(names)}")
        if options.text_column is not None and options.text_column not in names:
            raise ValueError(f"{key} has no column {options.text_column!r}; columns: {', '.join(names)}")
        self.text = options.text_column or next((n for n in TEXT_COLUMNS if n in names), None)
        if self.text is None:
            raise ValueError(f"{key}: none of the columns {', '.join(names)} is a transcript "
                             f"({', '.join(TEXT_COLUMNS)}); name it with --text-column")
        self.speaker = next((n for n in SPEAKER_COLUMNS if n in names), None)
        self.language = next((n for n in LANGUAGE_COLUMNS if n in names), None)
        self.id = next((n for n in ID_COLUMNS if n in names), None)
        self.labels = {n: f["names"] for n, f in features.items() if f.get("_type") == "ClassLabel" and "names" in f}
        self.options = options
        self.split = _split_of(key)

    def item(self, record: dict[str, Any], key: str, index: int, taken: set[str]) -> Item | Rejected:
        record = {n: self._label(n, v) for n, v in record.items()}
        audio = record.pop(self.audio) or {}
        path = audio.get("path") if isinstance(audio, dict) else None
        data = audio.get("bytes") if isinstance(audio, dict) else None
        given = record.pop(self.id, None) if self.id else None
        utt_id = str(given) if given not in (None, "") else stem_id(path or f"row{index:07d}", taken)
        ref = RowRef(index, utt_id, path)
        if not data:
            return Rejected.of(ref, "missing_audio", f"row {index} of {key} holds no audio bytes"
                                                     + (f" (only the path {path!r})" if path else ""))
        fields: dict[str, Any] = {"id": utt_id, "text": record.pop(self.text, None), "source": f"{key}#{index}"}
        speaker = record.pop(self.speaker, None) if self.speaker else None
        fields["speaker_id"] = None if speaker in (None, "") else str(speaker)
        language = record.pop(self.language, None) if self.language else None
        if language or self.options.language:
            fields["language"] = str(language or self.options.language)
        if self.split:
            fields["hf_split"] = self.split
        fields.update({n: v for n, v in record.items() if v not in (None, "") and _is_tag(v)})
        return Item(fields, Blob(data, audio_suffix(data, path)), ref)

    def _label(self, name: str, value: Any) -> Any:
        names = self.labels.get(name)
        if names is not None and isinstance(value, int) and 0 <= value < len(names):
            return names[value]
        return value


def _features(schema: Any) -> dict[str, dict[str, Any]]:
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    try:
        features = json.loads(meta).get("info", {}).get("features", {})
    except ValueError:
        return {}
    return features if isinstance(features, dict) else {}


def _split_of(key: str) -> str | None:
    """`train` from `train/data-00000-of-00001.arrow` or `data/train-00000-of-00002.parquet`."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[-2] not in ("data", ""):
        return parts[-2]
    found = re.match(r"([A-Za-z][\w.]*?)-\d{5}-of-\d{5}", posixpath.basename(key))
    return found.group(1) if found and found.group(1) != "data" else None


def _is_tag(value: Any) -> bool:
    if isinstance(value, str | int | float | bool):
        return True
    return isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value)
