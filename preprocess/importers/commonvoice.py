"""Common Voice releases: `validated.tsv` (or `--tsv train.tsv`, ...) and the `clips/` it names.

The TSV is read line by line, tab-separated with no quoting (sentences hold quotes of their own),
under its header: `client_id` is the speaker, `path` the clip under `clips/`, `sentence` the text,
`locale` the language (else `--language`); every other non-empty column (age, gender, accents,
variant, votes, sentence_domain, segment, sentence_id) travels as a tag of the row. The id is the
clip's name without its extension.
"""

from __future__ import annotations

from collections.abc import Iterator

from infra.storage import Store
from preprocess.importers import ImportOptions, InSource, Item, stem_id, text_lines
from preprocess.quarantine import Rejected, RowRef

USED = {"client_id", "path", "sentence", "locale"}


def read(source: Store, options: ImportOptions) -> Iterator[Item | Rejected]:
    if not source.exists(options.tsv):
        raise FileNotFoundError(f"no {options.tsv} in {source.url}: is it a Common Voice release folder "
                                "(validated.tsv + clips/)? Name another list with --tsv")
    lines = text_lines(source, options.tsv)
    header: list[str] | None = None
    taken: set[str] = set()
    for n, line in lines:
        if not line.strip():
            continue
        cells = line.split("\t")
        if header is None:
            header = [c.strip() for c in cells]
            missing = [c for c in ("path", "sentence") if c not in header]
            if missing:
                raise ValueError(f"{source.uri(options.tsv)}: its header has no {', '.join(missing)} column; "
                                 f"it has {', '.join(header)}")
            continue
        where = f"{options.tsv}:{n}"
        if len(cells) > len(header):
            yield Rejected(f"line_{n}", "malformed_row", f"{where} has {len(cells)} cells, the header "
                                                         f"{len(header)}", line=n)
            continue
        row = {h: c for h, c in zip(header, cells, strict=False) if c != ""}
        path = row.get("path", "").strip()
        if not path:
            yield Rejected(f"line_{n}", "missing_audio", f"{where} names no clip (empty path)", line=n)
            continue
        utt_id = stem_id(path, taken)
        fields = {"id": utt_id, "text": row.get("sentence"), "speaker_id": row.get("client_id", "").strip() or None,
                  "source": where}
        language = row.get("locale") or options.language
        if language:
            fields["language"] = language
        fields.update({k: v for k, v in row.items() if k not in USED})
        yield Item(fields, InSource(f"clips/{path}"), RowRef(n, utt_id, f"clips/{path}"))
