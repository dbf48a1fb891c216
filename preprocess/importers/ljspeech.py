"""LJSpeech-style folders: `metadata.csv` of `id|text|normalised text` lines (no header, no
quoting) and `wavs/<id>.wav`.

The text is the second field (Suara's own frontend normalises it, knowing Malay and English); the
third, when there, travels as the tag `normalized_text` (and is the text when the second is
empty). The format has one speaker: `--speaker`, else the source folder's name.
"""

from __future__ import annotations

from collections.abc import Iterator

from infra.storage import Store
from preprocess.importers import ImportOptions, InSource, Item, safe_id, source_name, text_lines
from preprocess.quarantine import Rejected, RowRef

METADATA = "metadata.csv"


def read(source: Store, options: ImportOptions) -> Iterator[Item | Rejected]:
    if not source.exists(METADATA):
        raise FileNotFoundError(f"no {METADATA} in {source.url}: is it an LJSpeech-style folder "
                                "(metadata.csv with id|text|normalised lines, wavs/)?")
    speaker = options.speaker or safe_id(source_name(source))
    for n, line in text_lines(source, METADATA):
        if not line.strip():
            continue
        cells = line.split("|")
        utt_id = cells[0].strip()
        where = f"{METADATA}:{n}"
        if len(cells) < 2 or len(cells) > 3 or not utt_id:
            yield Rejected(utt_id or f"line_{n}", "malformed_row",
                           f"{where} is not `id|text|normalised text` ({len(cells)} fields)", line=n)
            continue
        text = cells[1].strip() or (cells[2].strip() if len(cells) == 3 else "")
        fields = {"id": utt_id, "text": text, "speaker_id": speaker, "source": where}
        if len(cells) == 3 and cells[2].strip():
            fields["normalized_text"] = cells[2].strip()
        if options.language:
            fields["language"] = options.language
        key = f"wavs/{utt_id}.wav"
        yield Item(fields, InSource(key), RowRef(n, utt_id, key))
