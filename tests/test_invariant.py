"""The preprocessing invariant, on generated inputs: manifests (JSONL or CSV, in the encodings and
line ends people save) that mix good rows of real audio with arbitrarily broken ones (any JSON in
any field, hostile paths, garbage or cut-off files, FIFOs, links out of the input, lines of random
bytes). Whatever the mix:

- the run finishes;
- every input row is exactly once in the shards or in the quarantine (by its manifest line);
- every kept row is intact: its text and speaker are its own, and its codes are the codes of its
  own audio file.

`make test` runs 15 examples (about a minute); `make test-slow` runs 200.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from infra.settings import load_settings
from infra.storage import Store
from preprocess.pipeline import input_store, run
from tests.conftest import SAMPLE

SAMPLE_ROWS = {r["id"]: r for r in map(json.loads, (SAMPLE / "manifest.jsonl").read_text().splitlines())}
GOOD_POOL = ["pa_008_02", "pa_007_01", "pa_028_02", "ms_003_01", "pa_021_01", "cs_005_01"]
PLACEMENTS = ["as_is", "nested", "dotdot", "odd_name"]
BAD_FILES = ["bytes", "truncated", "silence", "noise", "low_rate", "clipped", "nan", "long", "fifo", "folder",
             "to_dev_zero", "outside_link", "loop", "missing", "empty"]
FIELDS = ["id", "audio", "text", "speaker_id", "word_timings", "particle_tags", "word_langs", "language"]
HOSTILE_PATHS = ["/etc/hostname", "../x.wav", "a/../../x.wav", ".", "", "audio/", "a\x00b.wav", "\ud800.wav",
                 "audio/" + "n" * 300 + ".wav", "~/x.wav", "C:\\x.wav", "audio//../audio/./missing.flac"]
HOSTILE_KEYS = ["..", ".", "a/b", "../../etc", " ", "", "x" * 300, "tab\t", "\ud800", "é", "ok-1.2", "a\x00b"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)

GOOD = st.tuples(st.just("good"), st.sampled_from(GOOD_POOL), st.sampled_from(PLACEMENTS), st.booleans())
BROKEN = st.one_of(
    st.tuples(st.just("fields"), st.sampled_from(GOOD_POOL),
              st.dictionaries(st.sampled_from(FIELDS), JSON | st.sampled_from(HOSTILE_KEYS), min_size=1, max_size=3)),
    st.tuples(st.just("file"), st.sampled_from(GOOD_POOL), st.sampled_from(BAD_FILES), st.binary(max_size=3000),
              st.floats(0.05, 0.95)),
    st.tuples(st.just("path"), st.sampled_from(GOOD_POOL), st.sampled_from(HOSTILE_PATHS) | st.text(max_size=30)),
    st.tuples(st.just("line"), st.text(min_size=1, max_size=120).map(lambda s: s.replace("\n", " "))),
    st.tuples(st.just("raw"), st.binary(min_size=1, max_size=120).map(lambda b: b.replace(b"\n", b" "))),
)


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    """Up to three good rows and up to five broken ones, shuffled, blank lines between some."""
    rows = draw(st.lists(GOOD, min_size=1, max_size=3)) + draw(st.lists(BROKEN, min_size=1, max_size=5))
    rows = draw(st.permutations(rows))
    return {
        "format": draw(st.sampled_from(["jsonl", "jsonl", "csv"])),
        "encoding": draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"])),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "ascii": draw(st.booleans()),
        "rows": [(row, draw(st.integers(0, 2))) for row in rows],  # (row, blank lines before it)
    }


SCENARIOS = scenarios()


def is_row(line: str) -> bool:
    """What the reader counts as a row of a JSONL manifest (blank lines are not rows)."""
    return bool(line.removesuffix("\r").lstrip("\ufeff").strip())


def place_good(corpus: Path, index: int, utt: str, placement: str) -> str:
    source = SAMPLE / SAMPLE_ROWS[utt]["audio"]
    name = Path(SAMPLE_ROWS[utt]["audio"]).name
    if placement == "as_is":
        target = f"audio/{name}"
    elif placement == "nested":
        target = f"audio/deep/r{index}/{name}"
    elif placement == "dotdot":
        target = f"audio/r{index}/{name}"
        (corpus / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, corpus / target)
        return f"audio/r{index}/../r{index}/./{name}"
    else:
        target = f"audio/odd name r{index}/é {name}"
    (corpus / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, corpus / target)
    return target


def bad_file(corpus: Path, index: int, utt: str, kind: str, data: bytes, fraction: float) -> str:
    source = SAMPLE / SAMPLE_ROWS[utt]["audio"]
    target = corpus / "audio" / f"bad{index}{source.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(index)
    if kind == "bytes":
        target.write_bytes(data)
    elif kind == "truncated":
        whole = source.read_bytes()
        target.write_bytes(whole[: max(1, int(len(whole) * fraction))])
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind in ("silence", "noise", "low_rate", "clipped", "nan", "long"):
        target = target.with_suffix(".wav")
        rate = 8000 if kind == "low_rate" else 16_000
        seconds = 70 if kind == "long" else 2
        samples = {"silence": np.zeros(rate * seconds), "nan": np.full(rate * seconds, np.nan)}.get(
            kind, rng.normal(0, 5.0 if kind == "clipped" else 0.2, rate * seconds))
        sf.write(target, np.clip(samples, -1, 1) if kind != "nan" else samples, rate,
                 subtype="FLOAT" if kind == "nan" else "PCM_16")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    elif kind == "to_dev_zero":
        os.symlink("/dev/zero", target)
    elif kind == "outside_link":
        os.symlink(source.resolve(), target)
    elif kind == "loop":
        os.symlink(target.name, target)
    # "missing": nothing there
    return target.relative_to(corpus).as_posix()


def materialise(corpus: Path, index: int, spec: tuple) -> dict[str, Any] | str | bytes:
    """The manifest row (a dict) or raw line for one generated spec, with the files it needs."""
    kind = spec[0]
    if kind == "line":
        return spec[1]
    if kind == "raw":
        return spec[1]
    utt = spec[1]
    row = json.loads(json.dumps(SAMPLE_ROWS[utt]))
    row["id"] = f"{utt}-{index}"
    if kind == "good":
        row["audio"] = place_good(corpus, index, utt, spec[2])
        if not spec[3]:
            del row["id"]
    elif kind == "fields":
        row["audio"] = place_good(corpus, index, utt, "nested")
        row.update(spec[2])
    elif kind == "file":
        row["audio"] = bad_file(corpus, index, utt, *spec[2:])
    elif kind == "path":
        row["audio"] = spec[2]
    return row


def write_manifest(corpus: Path, scenario: dict, rows: list[dict | str | bytes]) -> list[tuple[int, Any]]:
    """Writes the manifest; returns (line, row) for every row the manifest holds."""
    newline, ascii_only = scenario["newline"], scenario["ascii"]
    if scenario["format"] == "csv":
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator=newline)
        writer.writerow(FIELDS)
        located = []
        for row, blanks in zip(rows, scenario["blanks"], strict=True):
            out.write(newline * blanks)
            line = len(io.StringIO(out.getvalue(), newline="").readlines()) + 1
            cells = [cell(row.get(name)) for name in FIELDS]
            writer.writerow(cells)
            located.append((line, dict(zip(FIELDS, cells, strict=True))))  # the row as the reader sees it
        (corpus / "manifest.csv").write_bytes(out.getvalue().encode(scenario["encoding"], "surrogatepass"))
        return located
    parts: list[bytes] = []
    located = []
    encoding = scenario["encoding"]
    for row, blanks in zip(rows, scenario["blanks"], strict=True):
        parts += [b""] * blanks
        if isinstance(row, bytes):
            text, data = row.decode("utf-8", "surrogateescape"), row
        else:
            text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=ascii_only)
            data = text.encode("utf-8", "surrogatepass")
        parts.append(data)
        if is_row(text):
            located.append((len(parts), row))
    body = newline.encode().join(parts) + newline.encode()
    if encoding == "utf-16":
        body = body.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    elif encoding == "utf-8-sig":
        body = b"\xef\xbb\xbf" + body
    (corpus / "manifest.jsonl").write_bytes(body)
    return located


def cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


@cache
def codec(cache_dir: str):
    from preprocess.codec import Codec

    return Codec.load("tiny", Path(cache_dir), "cpu")


def reference_codes(path: Path, cache_dir: str) -> str:
    """sha256 of the codes of one file's audio, by the same cleaning and codec, outside the run."""
    data = path.read_bytes()
    return _codes_of(data, hashlib.sha256(data).hexdigest(), cache_dir)


@cache
def _codes_of(data: bytes, digest: str, cache_dir: str) -> str:
    from infra.settings import PreprocessSettings
    from preprocess.audio import clean_file

    audio = clean_file(io.BytesIO(data), PreprocessSettings()).samples
    return hashlib.sha256(np.ascontiguousarray(codec(cache_dir).encode(audio), np.int16).tobytes()).hexdigest()


def shard_samples(run_store: Store, manifest: dict, cache: Path) -> list[dict]:
    from trainer.shared_memory import open_dataset

    samples = []
    for key in manifest["buckets"]:
        if not key.startswith("phase4/"):
            ds = open_dataset(remote=run_store.uri(f"data/{key}"), local=str(cache / key), batch_size=1)
            samples += [ds[i] for i in range(len(ds))]
    return samples


def check_invariant(scenario: dict, cache_dir: Path) -> None:
    if scenario["format"] == "csv" or scenario["encoding"] == "utf-16":  # raw bytes need a UTF-8 JSONL file
        scenario["rows"] = [(spec, n) for spec, n in scenario["rows"] if spec[0] != "raw"]
    if scenario["format"] == "csv":
        scenario["rows"] = [(spec, n) for spec, n in scenario["rows"] if spec[0] != "line"]
    scenario["blanks"] = [n for _, n in scenario["rows"]]
    with tempfile.TemporaryDirectory(prefix="suara-invariant-") as tmp:
        root = Path(tmp)
        corpus = root / "input"
        (corpus / "audio").mkdir(parents=True)
        rows = [materialise(corpus, i, spec) for i, (spec, _) in enumerate(scenario["rows"])]
        located = write_manifest(corpus, scenario, rows)

        settings = load_settings(store=f"file://{root / 'store'}", cache_dir=cache_dir, run_id="invariant",
                                 preprocess={"workers": 1, "aligner": "proportional", "codec_batch": 3})
        report = run(settings, input_store(str(corpus), settings), progress=False)  # 1. it finishes

        run_store = Store.for_run(settings)
        manifest = run_store.get_json("data/manifest.json")
        quarantine = [json.loads(x) for x in run_store.get_bytes("quarantine.jsonl").decode("utf-8").splitlines()]
        samples = shard_samples(run_store, manifest, root / "cache")

        event(f"kept {min(len(samples), 3)}{'+' if len(samples) > 3 else ''} rows")
        for reason in {q["reason"] for q in quarantine}:
            event(f"quarantined: {reason}")
        # 2. every row exactly once: quarantined by its line, or kept
        lines = {line for line, _ in located}
        quarantined = [q["line"] for q in quarantine]
        assert len(quarantined) == len(set(quarantined)) and set(quarantined) <= lines, (quarantine, located)
        assert len(samples) + len(quarantine) == len(located) == manifest["totals"]["rows"]
        assert report.samples == len(samples) and report.quarantined == len(quarantine)
        assert len({s["id"] for s in samples}) == len(samples)

        # 3. every kept row intact: its own text, speaker and audio's codes
        kept = [row for line, row in located if line not in set(quarantined)]
        expected = Counter()
        for row in kept:
            assert isinstance(row, dict), row
            audio = corpus / posixpath.normpath(row["audio"])
            expected[(row["text"], row["speaker_id"].strip(), reference_codes(audio, str(cache_dir)))] += 1
        got = Counter((s["text"], s["speaker_id"], hashlib.sha256(np.ascontiguousarray(s["codes"], np.int16)
                                                                  .tobytes()).hexdigest()) for s in samples)
        assert got == expected
        # ... and each in its speaker's phase-4 bucket
        per_speaker = Counter()
        for key, stats in manifest["buckets"].items():
            if key.startswith("phase4/"):
                per_speaker[key.split("/")[1]] += stats["samples"]
        assert per_speaker == Counter(s["speaker_id"] for s in samples)


SETTINGS = dict(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=15, **SETTINGS)
@given(scenario=SCENARIOS)
def test_every_row_is_kept_intact_or_quarantined_exactly_once(scenario, cache_dir):
    check_invariant(scenario, cache_dir)


@pytest.mark.slow
@settings(max_examples=200, **SETTINGS)
@given(scenario=SCENARIOS)
def test_every_row_is_kept_intact_or_quarantined_exactly_once_many_examples(scenario, cache_dir):
    check_invariant(scenario, cache_dir)
