"""Manifests as people save them, and rows that must be refused before any audio is read.

Each row of a manifest ends as one Utterance or one Rejected naming its line; nothing here reads
audio (that is tests/test_bad_rows.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.storage import Store
from preprocess.manifest import Rejected, Utterance, read_manifest
from preprocess.shards import bucket_keys, key_problem

ROW = {"audio": "audio/a.wav", "text": "Saya nak pergi", "speaker_id": "spk"}


def rows_of(folder: Path, data: bytes, name: str = "manifest.jsonl") -> list[Utterance | Rejected]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return list(read_manifest(Store(f"file://{folder}")))


def jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_saved_by_excel_or_notepad_reads_the_same(tmp_path, encoding, newline):
    text = newline.join(["audio,text,speaker_id,id", "a/x.wav,Boleh leh,spk,x1", "a/y.wav,Okay lah,spk,x2", ""])
    rows = rows_of(tmp_path, text.encode(encoding), "manifest.csv")
    assert [(r.id, r.audio, r.text, r.line) for r in rows] == [("x1", "a/x.wav", "Boleh leh", 2),
                                                                ("x2", "a/y.wav", "Okay lah", 3)]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16-le", "utf-16"])
def test_jsonl_with_a_byte_order_mark_or_in_utf16_reads_the_same(tmp_path, encoding):
    text = jsonl({**ROW, "id": "a"}, {**ROW, "id": "b"}).decode().replace("\n", "\r\n")
    rows = rows_of(tmp_path, text.encode(encoding))
    assert [(r.id, r.line) for r in rows] == [("a", 1), ("b", 2)]


def test_line_separators_inside_a_text_stay_in_the_text(tmp_path):
    text = "Satu\u2028dua\u0085tiga\u2029empat\x0cfive"
    rows = rows_of(tmp_path, jsonl({**ROW, "id": "a", "text": text}, {**ROW, "id": "b"}))
    assert [r.id for r in rows] == ["a", "b"] and rows[0].text == text and rows[1].line == 2


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    long_text = "panjang " * 40_000  # 320,000 characters: over csv's default 131,072
    data = f'audio,text,speaker_id\na.wav,"{long_text}",spk\nb.wav,ok,spk\n'.encode()
    rows = rows_of(tmp_path, data, "manifest.csv")
    assert [r.text for r in rows] == [long_text, "ok"] and [r.line for r in rows] == [2, 3]


def test_csv_rows_with_line_breaks_in_quoted_cells_keep_their_starting_line(tmp_path):
    data = b'audio,text,speaker_id\na.wav,"two\nlines",spk\n\nb.wav,one,spk\n,,\n'
    rows = rows_of(tmp_path, data, "manifest.csv")
    assert [(r.audio, r.text, r.line) for r in rows] == [("a.wav", "two\nlines", 2), ("b.wav", "one", 5)]


def test_lines_that_are_not_json_objects_are_quarantined_by_line_and_the_rest_read(tmp_path):
    lines = [json.dumps({**ROW, "id": "first"}), "[" * 100_000 + "]" * 100_000, "{not json", "[1, 2]", '"text"',
             json.dumps({**ROW, "id": "last"})]
    rows = rows_of(tmp_path, ("\n".join(lines) + "\n").encode())
    assert [r.id for r in rows] == ["first", "line_2", "line_3", "line_4", "line_5", "last"]
    assert [r.reason for r in rows[1:5]] == ["malformed_row"] * 4
    assert "nested too deeply" in rows[1].detail and "not a JSON object" in rows[3].detail
    assert [r.line for r in rows] == [1, 2, 3, 4, 5, 6]


def test_invalid_utf8_costs_its_line_but_a_text_with_a_replacement_character_is_valid(tmp_path):
    good = json.dumps({**ROW, "id": "fffd", "text": "caf\ufffd lah"}, ensure_ascii=False).encode()
    bad = json.dumps({**ROW, "id": "bad"}).encode().replace(b"Saya", b"S\xe4ya")  # Latin-1 byte
    rows = rows_of(tmp_path, good + b"\n" + bad + b"\n")
    assert rows[0].text == "caf\ufffd lah"
    assert (rows[1].id, rows[1].reason, rows[1].line) == ("line_2", "bad_encoding", 2)


def test_broken_unicode_escapes_are_bad_encoding_and_the_quarantine_line_stays_writable(tmp_path):
    line = '{"audio": "a.wav", "text": "lah \\ud800", "speaker_id": "spk", "id": "x\\udfff"}'
    (row,) = rows_of(tmp_path, line.encode() + b"\n")
    assert row.reason == "bad_encoding" and row.line == 1
    json.dumps(row.to_dict(), ensure_ascii=False).encode("utf-8")  # the quarantine file can hold it


@pytest.mark.parametrize(("fields", "reason", "says"), [
    ({"id": {"a": 1}}, "malformed_row", "id must be a string or a number"),
    ({"id": [1]}, "malformed_row", "id must be a string or a number"),
    ({"id": True}, "malformed_row", "id must be a string or a number"),
    ({"id": "../x"}, "unsafe_id", "'/'"),
    ({"id": "a b"}, "unsafe_id", "' '"),
    ({"id": "x" * 200}, "unsafe_id", "bytes long"),
    ({"speaker_id": "   "}, "malformed_row", "speaker_id is blank"),
    ({"speaker_id": ".."}, "unsafe_id", "starts with '.'"),
    ({"speaker_id": "a/../../b"}, "unsafe_id", "'/'"),
    ({"speaker_id": "s" * 300}, "unsafe_id", "bytes long"),
    ({"speaker_id": "tab\there"}, "unsafe_id", "'\\t'"),
    ({"speaker_id": 7}, "malformed_row", "speaker_id must be a string"),
    ({"text": None}, "malformed_row", "missing column(s) text"),
    ({"audio": "/etc/hostname"}, "path_outside_input", "absolute"),
    ({"audio": "audio/../../secret.wav"}, "path_outside_input", "leaves the input folder"),
    ({"audio": "a\x00b.wav"}, "malformed_row", "NUL"),
    ({"audio": "./"}, "unreadable_audio", "input folder itself"),
    ({"particle_tags": ["none", "lahx", "none"]}, "tags_mismatch", "unknown particle tag"),
    ({"word_langs": "[not json"}, "malformed_row", "not a JSON list"),
    ({"word_timings": [{"start": 1.0, "end": 0.5}]}, "timings_mismatch", "not after its start"),
    ({"language": ["ms"]}, "malformed_row", "language must be a string"),
])
def test_rows_that_cannot_be_keys_paths_or_records_are_refused_naming_the_field(tmp_path, fields, reason, says):
    (row,) = rows_of(tmp_path, jsonl({**ROW, **fields}))
    assert isinstance(row, Rejected), row
    assert (row.reason, row.line) == (reason, 1) and says in row.detail, row.detail


def test_ids_as_numbers_and_blank_padded_keys_are_accepted(tmp_path):
    rows = rows_of(tmp_path, jsonl({**ROW, "id": 17}, {**ROW, "id": " u2 ", "speaker_id": " spk "}))
    assert [(r.id, r.speaker_id) for r in rows] == [("17", "spk"), ("u2", "spk")]


def test_dot_dot_that_stays_inside_the_input_is_fine(tmp_path):
    (row,) = rows_of(tmp_path, jsonl({**ROW, "audio": "audio/x/../a.wav", "id": "a"}))
    assert row.audio == "audio/a.wav"


def test_derived_ids_never_collide_and_given_ids_never_change(tmp_path):
    rows = rows_of(tmp_path, jsonl(
        {**ROW, "audio": "a_b.wav"}, {**ROW, "audio": "a/b.wav"}, {**ROW, "audio": "a/b.flac"},
        {**ROW, "audio": "c d/é.wav"}, {**ROW, "audio": "given.wav"}, {**ROW, "audio": "x.wav", "id": "given"},
    ))
    ids = [r.id for r in rows]
    assert len(set(ids)) == len(ids) and ids[0] == "a_b" and ids[3] == "c_d_é" and ids[5] == "given"
    assert all(key_problem(i) is None for i in ids)
    assert rows_of(tmp_path / "again", jsonl(
        {**ROW, "audio": "a_b.wav"}, {**ROW, "audio": "a/b.wav"}, {**ROW, "audio": "a/b.flac"},
        {**ROW, "audio": "c d/é.wav"}, {**ROW, "audio": "given.wav"}, {**ROW, "audio": "x.wav", "id": "given"},
    )) == rows  # deterministic


def test_speaker_ids_cannot_steer_the_per_speaker_layout():
    assert bucket_keys(3, "speaker_01", "train") == ["phase3/train", "phase4/speaker_01/train"]
    for hostile in ("..", "../../x", "a/b", "", "s" * 200, ".hidden"):
        with pytest.raises(ValueError, match="not a safe store key"):
            bucket_keys(3, hostile, "train")


def test_a_header_that_names_a_column_twice_costs_its_rows_not_the_run(tmp_path):
    rows = rows_of(tmp_path, b"audio,text,text,speaker_id\na.wav,x,y,spk\n", "manifest.csv")
    assert [(r.reason, r.line) for r in rows] == [("malformed_row", 2)] and "twice" in rows[0].detail
