"""A plain folder of clips and transcripts: `x.wav` (or .flac, .mp3, .ogg, ...) beside `x.txt`.

The speaker is the folder a clip is in (`speaker_01/x.wav`, `wav48/p225/x.wav` -> p225); clips at
the top of the source take `--speaker`, else they are `unknown_speaker`. The id is the clip's
path without its extension. A clip without its `.txt` is `empty_text`; a `.txt` without a clip is
`missing_audio`. Transcripts are read whole up to MAX_TEXT_BYTES (a larger one is not a transcript).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from infra.storage import Store
from preprocess.importers import AUDIO_EXTENSIONS, ImportOptions, InSource, Item, safe_id
from preprocess.manifest import derive_id
from preprocess.quarantine import Rejected, RowError, RowRef

MAX_TEXT_BYTES = 1 << 16


def read(source: Store, options: ImportOptions) -> Iterator[Item | Rejected]:
    stems: dict[str, list[str]] = {}
    for key in source.list():
        stem, ext = posixpath.splitext(key)
        if ext.lower() in AUDIO_EXTENSIONS or ext.lower() == ".txt":
            stems.setdefault(stem, []).append(key)
    if not stems:
        raise FileNotFoundError(f"no audio files or .txt transcripts under {source.url}")
    taken: set[str] = set()
    for stem in sorted(stems):
        keys = stems[stem]
        transcript = next((k for k in keys if k.lower().endswith(".txt")), None)
        clips = [k for k in keys if k != transcript]
        if not clips:
            yield Rejected.of(RowRef(None, derive_id(stem, set()), transcript), "missing_audio",
                              f"{source.uri(transcript)} has no audio file beside it ({stem}.wav, .flac, ...)")
            continue
        for clip in clips:
            utt_id = derive_id(clip, taken)
            taken.add(utt_id)
            ref = RowRef(None, utt_id, clip)
            if transcript is None:
                yield Rejected.of(ref, "empty_text", f"{source.uri(clip)} has no transcript {stem}.txt beside it")
                continue
            try:
                text = _text(source, transcript)
            except RowError as exc:
                yield Rejected.of(ref, exc.reason, exc.detail)
                continue
            folder = posixpath.basename(posixpath.dirname(clip))
            speaker = safe_id(folder) if folder else options.speaker
            fields = {"id": utt_id, "text": text, "speaker_id": speaker, "source": clip}
            if options.language:
                fields["language"] = options.language
            yield Item(fields, InSource(clip), ref)


def _text(source: Store, key: str) -> str:
    with source.reader(key) as fh:
        data = fh.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise RowError("malformed_row", f"{source.uri(key)} is over {MAX_TEXT_BYTES} bytes: not a transcript")
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise RowError("bad_encoding", f"{source.uri(key)} is not UTF-8 text ({exc}); save it as UTF-8") from None
