"""Corpora in the formats people keep them, converted to Suara's manifest.

    python -m preprocess import --format {hf,commonvoice,ljspeech,kaldi,folder} SRC --to DEST
    python -m preprocess run --input SRC --format FORMAT        # the same conversion, on the fly

A format is a reader (one module each) that streams the source row by row and yields an `Item`
per row: the manifest fields it found (id, text, speaker, language, every tag the source has) and
where the row's audio is: a file of the source (`InSource`), bytes the source holds itself
(`Blob`: a Hugging Face audio column) or a stretch of a recording (`Segment`: Kaldi `segments`).
A row the reader cannot read is a `Rejected` entry at once.

Every item then passes the same checks here, in one guard per row: a transcript with no words is
`empty_text`, no speaker is `unknown_speaker`, an id seen before is `duplicate_id`, an audio file
the source does not hold is `missing_audio`, and the row must be one `Utterance.from_dict` accepts
(safe ids, a path inside the input). Only then is its audio materialised: a blob written as a file,
a segment cut into a FLAC file, a source file copied (or, when the destination is the source
itself, left where it is).

Memory: rows stream through (parquet by record batches of BATCH_ROWS, arrow IPC by its record
batches, TSV/CSV/text line by line); a segment is cut in blocks. What is held grows only by ids:
the set of ids seen (duplicates would overwrite each other's audio), Kaldi's utt2spk / wav.scp /
segments maps, and a folder's file names (its `.txt` files are paired with audio by name).

`import` writes DEST's audio first and `manifest.jsonl` last (it appears only when whole, so a
killed import leaves no half manifest; running it again skips the audio files already copied),
and the rows that did not convert to `import-quarantine.jsonl` beside it, in the quarantine's own
format. `preprocess run` on DEST carries those entries into the run's quarantine, so a row lost in
the conversion is still counted in the run report.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.storage import Store
from preprocess.manifest import Utterance, audio_key, derive_id
from preprocess.quarantine import Rejected, RowError, RowRef, RunError, guarded
from preprocess.shards import KEY_MAX_BYTES

log = logging.getLogger(__name__)

FORMATS = ("hf", "commonvoice", "ljspeech", "kaldi", "folder")
MANIFEST = "manifest.jsonl"
IMPORT_QUARANTINE = "import-quarantine.jsonl"
BATCH_ROWS = 16  # rows of a parquet file decoded at a time (their audio bytes are held together)
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif")
COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class InSource:
    """The row's audio is a file of the source, at `key` (relative to the source's root)."""

    key: str


@dataclass(frozen=True)
class Blob:
    """The row's audio bytes, held by the source itself; `suffix` is the file extension they need."""

    data: bytes
    suffix: str


@dataclass(frozen=True)
class Segment:
    """Seconds `start_s`..`end_s` of the recording at `key` (`end_s` None: to its end)."""

    key: str
    start_s: float
    end_s: float | None


@dataclass(frozen=True)
class Item:
    fields: dict[str, Any]  # manifest fields: id, text, speaker_id, language, tags, `source`
    audio: InSource | Blob | Segment
    ref: RowRef  # names the row in the source (its line or row number, id, path) for the quarantine


@dataclass(frozen=True)
class ImportOptions:
    language: str | None = None  # for rows whose source names no language
    # ljspeech: the one speaker (default: the source folder's name); folder: the speaker of clips at its top
    speaker: str | None = None
    tsv: str = "validated.tsv"  # commonvoice: which of the release's lists
    text_column: str | None = None  # hf: default the first of TEXT_COLUMNS present
    audio_root: Store | None = None  # kaldi: where wav.scp paths are read from (default: the data directory)


Reader = Callable[[Store, ImportOptions], Iterator["Item | Rejected"]]


def reader(fmt: str) -> Reader:
    if fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; use one of {', '.join(FORMATS)}")
    from preprocess.importers import commonvoice, folder, hf, kaldi, ljspeech

    return {"hf": hf.read, "commonvoice": commonvoice.read, "ljspeech": ljspeech.read, "kaldi": kaldi.read,
            "folder": folder.read}[fmt]


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    manifest_uri: str = ""
    quarantine_uri: str = ""


# -- the checks every row passes -------------------------------------------------------------------

class Converter:
    """Turns items into manifest rows whose audio is in `out` (or, in place, in `source`: the store
    the items' audio keys are relative to)."""

    def __init__(self, source: Store, out: Store, in_place: bool):
        self.source, self.out, self.in_place = source, out, in_place
        self.seen: set[str] = set()
        self._cutter = SegmentCutter(source)

    def convert(self, item: Item, line: int | None) -> tuple[Utterance, Store] | Rejected:
        """The row as an Utterance and the store that holds its audio, or its quarantine entry."""
        return guarded(item.ref, "import", self._convert, item, line)

    def _convert(self, item: Item, line: int | None) -> tuple[Utterance, Store]:
        fields = dict(item.fields)
        text = fields.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RowError("empty_text", "the source gives this row no transcript" if not text else
                                         f"transcript {text!r} is blank")
        speaker = fields.get("speaker_id")
        if speaker is None or (isinstance(speaker, str) and not speaker.strip()):
            raise RowError("unknown_speaker", "the source names no speaker for this row")
        utt_id = str(fields.get("id", ""))
        if utt_id in self.seen:
            raise RowError("duplicate_id", f"id {utt_id!r} appeared on an earlier row of the source")
        audio = item.audio
        if isinstance(audio, InSource):
            key, store = audio_key(audio.key), (self.source if self.in_place else self.out)
        elif isinstance(audio, Blob):
            key, store = f"audio/{utt_id}{audio.suffix}", self.out
        else:
            key, store = f"segments/{utt_id}.flac", self.out
        row = Utterance.from_dict({**fields, "audio": key}, line)  # ids and paths checked before any write
        if isinstance(audio, InSource):
            self._copy(key, key)
        elif isinstance(audio, Blob):
            self.out.put_bytes(key, audio.data)
        else:
            self._cutter.cut(audio, self.out, key)
        self.seen.add(row.id)
        return row, store

    def _copy(self, src_key: str, key: str) -> None:
        if self.source.scheme == "file":  # a symbolic link may not lead out of the source (as in fetch.py)
            root = os.path.realpath(self.source.root)
            real = os.path.realpath(self.source.uri(src_key))
            if not real.startswith(root.rstrip("/") + "/"):
                raise RowError("path_outside_input", f"{self.source.uri(src_key)} leads to {real}, outside the "
                                                     f"source folder {root}")
        try:
            size = self.source.fs.size(self.source.uri(src_key))
        except FileNotFoundError:
            raise RowError("missing_audio", f"no file {self.source.uri(src_key)} in the source") from None
        except (IsADirectoryError, NotADirectoryError):
            raise RowError("unreadable_audio", f"{self.source.uri(src_key)} is not a file") from None
        if self.in_place:
            return
        if self.out.exists(key) and self.out.fs.size(self.out.uri(key)) == size:
            return  # copied by an earlier, interrupted import
        if self.source.scheme == self.out.scheme == "s3" and self.source.fs is self.out.fs:
            self.source.fs.copy(self.source.uri(src_key), self.out.uri(key))  # server-side
            return
        with self.source.reader(src_key) as src, self.out.writer(key) as dst:
            for block in iter(lambda: src.read(COPY_BLOCK), b""):
                dst.write(block)

    def close(self) -> None:
        self._cutter.close()


class SegmentCutter:
    """Cuts segments out of recordings, keeping the last recording open: a Kaldi `segments` file
    lists a recording's segments together, so each recording is opened about once."""

    def __init__(self, source: Store):
        self.source = source
        self._open: tuple[str, Any, Any] | None = None  # key, file, SoundFile

    def cut(self, seg: Segment, out: Store, key: str) -> None:
        import tempfile

        import soundfile as sf

        sound = self._sound(seg.key)
        start = round(seg.start_s * sound.samplerate)
        end = sound.frames if seg.end_s is None else round(seg.end_s * sound.samplerate)
        if not (0 <= start < end <= sound.frames + 1):  # one sample of rounding past the end is fine
            raise RowError("bad_segment", f"segment {seg.start_s:g}..{'end' if seg.end_s is None else f'{seg.end_s:g}'}"
                                          f" s is not inside recording {self.source.uri(seg.key)} "
                                          f"({sound.frames / sound.samplerate:.3f} s)")
        end = min(end, sound.frames)
        sound.seek(start)
        with tempfile.NamedTemporaryFile(suffix=".flac") as tmp:
            with sf.SoundFile(tmp.name, "w", samplerate=sound.samplerate, channels=sound.channels,
                              format="FLAC", subtype="PCM_16") as dst:
                left = end - start
                while left > 0:
                    block = sound.read(min(left, 1 << 16), dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    dst.write(block)
                    left -= len(block)
            out.put_file(tmp.name, key)

    def _sound(self, key: str) -> Any:
        import soundfile as sf

        if self._open is not None and self._open[0] == key:
            return self._open[2]
        self.close()
        try:
            fh = self.source.fs.open(self.source.uri(key), "rb", block_size=COPY_BLOCK)
        except FileNotFoundError:
            raise RowError("missing_audio", f"recording {self.source.uri(key)} does not exist") from None
        except OSError as exc:
            raise RowError("unreadable_audio", f"cannot read recording {self.source.uri(key)}: {exc}") from None
        try:
            sound = sf.SoundFile(fh)
        except Exception as exc:
            fh.close()
            raise RowError("unreadable_audio", f"recording {self.source.uri(key)} is not audio "
                                               f"libsndfile reads: {exc}") from None
        self._open = (key, fh, sound)
        return sound

    def close(self) -> None:
        if self._open is not None:
            self._open[2].close()
            self._open[1].close()
            self._open = None


def converted_rows(fmt: str, source: Store, out: Store, options: ImportOptions, in_place: bool = False,
                   keep: Callable[[str], bool] | None = None) -> Iterator[tuple[Utterance, Store] | Rejected]:
    """The source's rows converted one at a time: (Utterance, the store its audio is in) or Rejected.
    Line numbers are those of the manifest being written (rows that convert, counted from 1). With
    `keep`, only the rows whose id it accepts (one machine's share) are converted."""
    converter = Converter(options.audio_root or source, out, in_place)
    written = 0
    try:
        for item in reader(fmt)(source, options):
            if keep is not None and not keep(item.id if isinstance(item, Rejected) else str(item.fields.get("id"))):
                continue
            if isinstance(item, Rejected):
                yield item
                continue
            outcome = converter.convert(item, written + 1)
            if not isinstance(outcome, Rejected):
                written += 1
            yield outcome
    finally:
        converter.close()


def import_corpus(fmt: str, source: Store, dest: Store, options: ImportOptions | None = None,
                  progress: bool = True) -> ImportReport:
    """Convert the corpus at `source` into a manifest (and audio files) at `dest`."""
    from tqdm import tqdm

    options = options or ImportOptions()
    in_place = dest.url == (options.audio_root or source).url  # the manifest can name the files where they are
    report = ImportReport(manifest_uri=dest.uri(MANIFEST), quarantine_uri=dest.uri(IMPORT_QUARANTINE))
    with dest.writer(IMPORT_QUARANTINE) as quarantine, dest.writer(MANIFEST) as manifest:
        for outcome in tqdm(converted_rows(fmt, source, dest, options, in_place), desc=f"import {fmt}",
                            unit="row", disable=not progress):
            report.rows += 1
            if isinstance(outcome, Rejected):
                report.quarantined += 1
                report.by_reason[outcome.reason] = report.by_reason.get(outcome.reason, 0) + 1
                quarantine.write((json.dumps(outcome.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))
                continue
            row = outcome[0].to_dict()
            row.pop("line", None)
            row = {**row.pop("custom", {}), **row}  # tags are manifest columns again
            manifest.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            report.imported += 1
    return report


def import_rejections(source: Store) -> list[Rejected]:
    """The entries of an earlier import's quarantine beside an input's manifest (none without one)."""
    if not source.exists(IMPORT_QUARANTINE):
        return []
    entries = []
    for n, line in enumerate(source.get_bytes(IMPORT_QUARANTINE).decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entries.append(Rejected(**{k: entry.get(k) for k in ("id", "reason", "detail", "audio", "line")}))
        except (ValueError, TypeError) as exc:
            raise RunError(f"{source.uri(IMPORT_QUARANTINE)} line {n} is not a quarantine entry ({exc}); "
                           "run the import again") from None
    return entries


# -- helpers the readers share ---------------------------------------------------------------------

def safe_id(name: str) -> str:
    """An id from a name (a folder's, for its speaker): characters outside the key rule become `_`."""
    base = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in name.strip())
    base = base if base[:1].isalnum() else "u" + base
    while len(base.encode("utf-8")) > KEY_MAX_BYTES:
        base = base[:-1]
    return base


def stem_id(path: str, taken: set[str]) -> str:
    """The id of a row named by its audio path: the file name without its extension, made safe; a
    hash of the path is added when another row already has that id."""
    utt_id = derive_id(posixpath.basename(path), taken)
    taken.add(utt_id)
    return utt_id


def text_lines(source: Store, key: str) -> Iterator[tuple[int, str]]:
    """The lines of a text file of the source (UTF-8, with or without a byte-order mark), numbered
    from 1, read as they are used."""
    import io

    with source.reader(key) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="replace", newline="")
        for n, line in enumerate(text, 1):
            yield n, line.rstrip("\r\n")


def source_name(source: Store) -> str:
    return Path(source.root).name or "corpus"


def audio_suffix(data: bytes, path: str | None) -> str:
    """The extension audio bytes need, from their magic number (else the path's extension)."""
    head = data[:12]
    if head[:4] == b"RIFF":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[:4] == b"FORM":
        return ".aiff"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ".mp3"
    ext = posixpath.splitext(path or "")[1].lower()
    return ext if ext in AUDIO_EXTENSIONS else ".bin"
