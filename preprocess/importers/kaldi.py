"""Kaldi data directories: `text` (utt words...), `wav.scp` (id path), `utt2spk`, and optionally
`segments` (utt recording start end), `spk2gender`, `utt2lang`.

The `text` file drives the rows, line by line. With `segments`, `wav.scp` names recordings and
each utterance is cut from its recording (seconds start..end; an end of -1 is the recording's end)
into `segments/<utt>.flac`; without it, `wav.scp` names each utterance's own file. The speaker is
utt2spk's, the language utt2lang's (else `--language`), the gender spk2gender's (a tag).

wav.scp paths are read relative to the data directory, or to `--audio-root` when it is given;
an absolute path only when it lies under that folder (a data directory names files anywhere on
its machine: reading them is for the user to allow). Commands (`sox a.wav -t wav - |`) and archive offsets (`x.ark:12`)
are not run or read: those rows are `unreadable_audio`, to be converted to files first (Kaldi's
`wav-copy` does it). Utterances in utt2spk that `text` lacks are `empty_text`: no row is dropped
without an entry.
"""

from __future__ import annotations

from collections.abc import Iterator

from infra.storage import Store
from preprocess.importers import ImportOptions, InSource, Item, Segment, text_lines
from preprocess.quarantine import Rejected, RowError, RowRef


def read(source: Store, options: ImportOptions) -> Iterator[Item | Rejected]:
    for name in ("text", "wav.scp"):
        if not source.exists(name):
            raise FileNotFoundError(f"no {name} in {source.url}: is it a Kaldi data directory "
                                    "(text, wav.scp, utt2spk, optionally segments)?")
    utt2spk = _table(source, "utt2spk")
    wav_scp = _table(source, "wav.scp", whole_rest=True)
    segments = _table(source, "segments", whole_rest=True) if source.exists("segments") else None
    utt2lang = _table(source, "utt2lang") if source.exists("utt2lang") else {}
    spk2gender = _table(source, "spk2gender") if source.exists("spk2gender") else {}
    seen: set[str] = set()
    for n, line in text_lines(source, "text"):
        if not line.strip():
            continue
        utt, _, words = line.strip().partition(" ")
        seen.add(utt)
        speaker = utt2spk.get(utt)
        fields = {"id": utt, "text": words.strip(), "speaker_id": speaker, "source": f"text:{n}"}
        if utt2lang.get(utt) or options.language:
            fields["language"] = utt2lang.get(utt) or options.language
        if speaker in spk2gender:
            fields["gender"] = spk2gender[speaker]
        try:
            audio = _audio(utt, wav_scp, segments, source, options)
        except RowError as exc:
            yield Rejected.of(RowRef(n, utt), exc.reason, exc.detail)
            continue
        yield Item(fields, audio, RowRef(n, utt, audio.key))
    for utt in sorted(set(utt2spk) - seen):
        yield Rejected.of(RowRef(None, utt), "empty_text", f"utterance {utt!r} is in utt2spk but has no line in text")


def _audio(utt: str, wav_scp: dict[str, str], segments: dict[str, str] | None, source: Store,
           options: ImportOptions) -> InSource | Segment:
    if segments is not None:
        seg = segments.get(utt)
        if seg is None:
            raise RowError("missing_audio", f"utterance {utt!r} has no line in segments")
        parts = seg.split()
        if len(parts) != 3:
            raise RowError("bad_segment", f"segments line of {utt!r} is not `utt recording start end`")
        recording, start, end = parts
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise RowError("bad_segment", f"segment of {utt!r}: start {start!r} / end {end!r} are not "
                                          "numbers") from None
        if not (start_s >= 0 and (end_s == -1 or end_s > start_s)):
            raise RowError("bad_segment", f"segment of {utt!r} runs {start_s:g}..{end_s:g} s: needs "
                                          "0 <= start < end (or end -1)")
        if recording not in wav_scp:
            raise RowError("missing_audio", f"recording {recording!r} of {utt!r} has no line in wav.scp")
        return Segment(_path(wav_scp[recording], recording, source, options), start_s, None if end_s == -1 else end_s)
    if utt not in wav_scp:
        raise RowError("missing_audio", f"utterance {utt!r} has no line in wav.scp")
    return InSource(_path(wav_scp[utt], utt, source, options))


def _path(entry: str, name: str, source: Store, options: ImportOptions) -> str:
    """A wav.scp entry as a key of the source."""
    entry = entry.strip()
    if entry.endswith("|"):
        raise RowError("unreadable_audio", f"wav.scp entry of {name!r} is a command ({entry!r}); commands are not "
                                           "run: write the audio to files first (e.g. with Kaldi's wav-copy)")
    if ".ark:" in entry:
        raise RowError("unreadable_audio", f"wav.scp entry of {name!r} is an archive offset ({entry!r}); write "
                                           "the audio to files first (e.g. with Kaldi's wav-copy)")
    root = options.audio_root or source
    if not entry.startswith("/"):
        return entry
    if root.scheme == "file" and entry.startswith(root.root.rstrip("/") + "/"):
        return entry[len(root.root.rstrip("/")) + 1:]
    raise RowError("path_outside_input", f"wav.scp path {entry!r} of {name!r} lies outside {root.url}; pass "
                                         "--audio-root with the folder that holds the audio")


def _table(source: Store, name: str, whole_rest: bool = False) -> dict[str, str]:
    """`key value` lines of a Kaldi table file (the value: the rest of the line when `whole_rest`)."""
    table: dict[str, str] = {}
    for _, line in text_lines(source, name):
        key, _, rest = line.strip().partition(" ")
        if key:
            table[key] = rest.strip() if whole_rest else (rest.split() or [""])[0]
    return table
