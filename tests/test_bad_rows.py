"""One bad row never ends a run: each family of hostile input, on real audio, ends as its own
quarantine line naming the row, and every good row beside it is kept."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from infra.settings import PreprocessSettings
from infra.storage import Store
from preprocess.manifest import Utterance
from preprocess.pipeline import input_store, run
from tests.conftest import SAMPLE

SAMPLE_ROWS = {r["id"]: r for r in map(json.loads, (SAMPLE / "manifest.jsonl").read_text().splitlines())}


def sample_row(utt_id: str, **fields) -> dict:
    return {**SAMPLE_ROWS[utt_id], **fields}


def kept_and_quarantined(settings) -> tuple[dict[str, dict], list[dict]]:
    """Samples of the run (phases 1-3) by id, and its quarantine lines."""
    from trainer.shared_memory import open_dataset

    run_store = Store.for_run(settings)
    manifest = run_store.get_json("data/manifest.json")
    kept: dict[str, dict] = {}
    for key in manifest["buckets"]:
        if key.startswith("phase4/"):
            continue
        local = Path(settings.cache_dir) / "streaming" / settings.run_id / key
        shutil.rmtree(local, ignore_errors=True)
        ds = open_dataset(remote=run_store.uri(f"data/{key}"), local=str(local), batch_size=1)
        for i in range(len(ds)):
            assert ds[i]["id"] not in kept, f"{ds[i]['id']} kept twice"
            kept[ds[i]["id"]] = ds[i]
    quarantine = [json.loads(x) for x in run_store.get_bytes("quarantine.jsonl").decode("utf-8").splitlines()]
    return kept, quarantine


def test_every_family_of_hostile_row_is_quarantined_by_line_and_the_good_rows_are_kept(tmp_path, make_settings):
    corpus = tmp_path / "corpus"
    audio = corpus / "audio"
    audio.mkdir(parents=True)
    for utt in ("ms_001_01", "en_002_02", "cs_001_01", "pa_001_01", "ms_003_01", "cs_002_02", "cs_004_02"):
        shutil.copy(SAMPLE / SAMPLE_ROWS[utt]["audio"], corpus / SAMPLE_ROWS[utt]["audio"])
    speech, rate = sf.read(SAMPLE / SAMPLE_ROWS["cs_001_01"]["audio"], dtype="float32")
    sf.write(audio / "quiet.wav", speech * 10 ** (-55 / 20), rate, subtype="PCM_16")
    sf.write(audio / "inverted.wav", np.stack([speech, -speech], axis=1), rate, subtype="FLOAT")
    (audio / "x").mkdir()
    shutil.copy(SAMPLE / SAMPLE_ROWS["cs_002_02"]["audio"], audio / "x_y.wav")  # derived ids would collide
    shutil.copy(SAMPLE / SAMPLE_ROWS["cs_004_02"]["audio"], audio / "x" / "y.wav")
    mp3 = (SAMPLE / SAMPLE_ROWS["cs_005_01"]["audio"]).read_bytes()
    (audio / "cut.mp3").write_bytes(mp3[: len(mp3) // 2])
    ogg = (SAMPLE / SAMPLE_ROWS["cs_003_01"]["audio"]).read_bytes()
    (audio / "cut.ogg").write_bytes(ogg[: len(ogg) * 2 // 3])
    (audio / "garbage.wav").write_bytes(os.urandom(5000))
    sf.write(audio / "long.wav", np.zeros((16_000 * 600, 1), np.int16), 16_000, subtype="PCM_16")
    os.mkfifo(audio / "fifo.wav")
    os.symlink("/dev/zero", audio / "zero.wav")
    os.symlink("loop_b.wav", audio / "loop_a.wav")
    os.symlink("loop_a.wav", audio / "loop_b.wav")
    (audio / "folder.wav").mkdir()
    (tmp_path / "outside.wav").write_bytes(mp3)

    cs1 = SAMPLE_ROWS["cs_001_01"]  # "I want to pergi shopping": five words, with their timings
    good = [sample_row(u) for u in ("ms_001_01", "en_002_02", "cs_001_01", "pa_001_01")] + [
        sample_row("ms_003_01", id="dotdot", audio="audio/x/../" + Path(SAMPLE_ROWS["ms_003_01"]["audio"]).name),
        sample_row("cs_002_02", id=None, audio="audio/x_y.wav"),
        sample_row("cs_004_02", id=None, audio="audio/x/y.wav"),
        {**cs1, "id": "quiet", "audio": "audio/quiet.wav"},
        {**cs1, "id": "inverted", "audio": "audio/inverted.wav"},
    ]
    for row in good:
        if row["id"] is None:
            del row["id"]
    bad = {
        "fifo": ({"audio": "audio/fifo.wav"}, "unreadable_audio"),
        "zero": ({"audio": "audio/zero.wav"}, "path_outside_input"),
        "loop": ({"audio": "audio/loop_a.wav"}, "unreadable_audio"),
        "folder": ({"audio": "audio/folder.wav"}, "unreadable_audio"),
        "root": ({"audio": "."}, "unreadable_audio"),
        "too_long": ({"audio": "audio/" + "n" * 300 + ".wav"}, "unreadable_audio"),
        "nul": ({"audio": "audio/a\x00.wav"}, "malformed_row"),
        "absolute": ({"audio": "/etc/hostname"}, "path_outside_input"),
        "escape": ({"audio": "../outside.wav"}, "path_outside_input"),
        "cut_mp3": ({"audio": "audio/cut.mp3"}, "truncated_audio"),
        "cut_ogg": ({"audio": "audio/cut.ogg"}, "truncated_audio"),
        "garbage": ({"audio": "audio/garbage.wav"}, "unreadable_audio"),
        "long": ({"audio": "audio/long.wav"}, "duration_out_of_bounds"),
        "speaker_dots": ({"speaker_id": ".."}, "unsafe_id"),
        "speaker_path": ({"speaker_id": "../../etc"}, "unsafe_id"),
        "speaker_long": ({"speaker_id": "s" * 300}, "unsafe_id"),
        "speaker_blank": ({"speaker_id": "   "}, "malformed_row"),
        "timings_negative": ({"word_timings": [[-1.0, 0.5]] + [[1.0 + i, 1.5 + i] for i in range(7)]},
                             "timings_mismatch"),
        "timings_count": ({"word_timings": [[0.1, 0.5]]}, "timings_mismatch"),
        "timings_past_end": ({"word_timings": cs1["word_timings"][:-1] + [{"start": 2.5, "end": 30.0}]},
                             "timings_mismatch"),
        "timings_reversed": ({"word_timings": cs1["word_timings"][::-1]}, "timings_mismatch"),
        "timings_nan": ({"word_timings": [[float("nan"), 0.5]] * 8}, "timings_mismatch"),
        "particle_unknown": ({"particle_tags": ["lahhhx"] + ["none"] * 7}, "tags_mismatch"),
        "surrogate": ({"text": "lah \ud83d"}, "bad_encoding"),
    }
    lines = [json.dumps(r, ensure_ascii=False) for r in good]
    expect: dict[int, str] = {}
    for name, (fields, reason) in bad.items():
        row = {**cs1, "id": name, **fields}
        lines.append(json.dumps(row, ensure_ascii=True))
        expect[len(lines)] = reason
    lines.append(json.dumps({**cs1, "id": {"an": "object"}}))
    expect[len(lines)] = "malformed_row"
    lines.append("[" * 50_000 + "]" * 50_000)
    expect[len(lines)] = "malformed_row"
    lines.append(json.dumps({**cs1, "id": "cs_001_01"}))  # the same id again
    expect[len(lines)] = "duplicate_id"
    lines.append(json.dumps({**cs1, "id": "copy"}))  # the same audio again
    expect[len(lines)] = "duplicate_audio"
    # As a spreadsheet-minded tool saves it: a byte-order mark and CRLF line ends.
    (corpus / "manifest.jsonl").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))

    settings = make_settings(preprocess={"workers": 2})
    report = run(settings, input_store(str(corpus), settings), progress=False)
    kept, quarantine = kept_and_quarantined(settings)

    by_line = {q["line"]: q for q in quarantine}
    assert len(by_line) == len(quarantine) == len(expect)
    assert {line: q["reason"] for line, q in by_line.items()} == expect
    assert all(q["detail"] and q["id"] for q in quarantine)
    assert by_line[len(good) + 1]["id"] == "fifo" and by_line[len(good) + 1]["audio"] == "audio/fifo.wav"
    assert "/etc/hostname" in by_line[len(good) + 8]["detail"] and "absolute" in by_line[len(good) + 8]["detail"]
    assert len(kept) == len(good) == report.samples and report.quarantined == len(expect)
    assert {"dotdot", "quiet", "inverted", "audio_x_y"} <= set(kept)
    assert len([k for k in kept if k.startswith("audio_x_y")]) == 2  # a_b.wav and a/b.wav: both kept
    for row in good:
        if "id" in row:
            assert kept[row["id"]]["text"] == row["text"]
    manifest = Store.for_run(settings).get_json("data/manifest.json")
    assert manifest["totals"]["rows"] == len(lines)
    assert not any(k.startswith("phase4/") and "." in k.split("/")[1][:1] for k in manifest["buckets"])


def test_the_quarantine_names_the_row_of_an_unexpected_failure(tmp_path, make_settings):
    from preprocess.quarantine import RowRef, RunError, guarded

    def boom():
        raise KeyError("nobody expected this")

    ref = RowRef(7, "u7", "audio/u7.wav")
    entry = guarded(ref, "features", boom)
    assert (entry.id, entry.line, entry.audio, entry.reason) == ("u7", 7, "audio/u7.wav", "internal_error")
    assert entry.detail.startswith("features: KeyError: 'nobody expected this' (at test_bad_rows.py:")

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunError, match=r"manifest line 7 \(id 'u7'.*No space left"):
        guarded(ref, "shard write", disk_full)  # the machine's fault: every later row would fail too


def _square_or_die(n: int) -> int:
    """A worker's job for the crash test: dies like a decoder crash (3) or hangs in C past the row
    deadline (6), else squares."""
    if n == 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    if n == 6:
        from preprocess.prepare import row_deadline

        with row_deadline(0.2):  # as prepare arms it in a worker, around each row
            time.sleep(3600)
    return n * n


def test_a_worker_that_crashes_or_hangs_costs_only_its_row():
    from preprocess.pipeline import _ordered, _pool

    with _pool(2) as pool:
        results = list(_ordered(pool, _square_or_die, list(range(12)), window=4,
                                on_crash=lambda job, why: f"crashed {job}: {why}"))
    assert results[:3] == [0, 1, 4] and results[4:6] == [16, 25] and results[7:] == [n * n for n in range(7, 12)]
    assert results[3] == "crashed 3: crashed (Segmentation fault)"
    assert results[6] == "crashed 6: ran past preprocess.row_timeout_s and was stopped"


def test_a_clip_that_breaks_a_codec_batch_costs_only_its_row(tmp_path, make_settings):
    from preprocess.codec import Codec
    from preprocess.pipeline import RankDataset
    from preprocess.prepare import Prepared, prepare
    from preprocess.shards import shard_writer

    settings = make_settings(preprocess={"codec_batch": 8})
    source = Store(f"file://{SAMPLE}")
    good = []
    for i, utt in enumerate(("ms_001_01", "cs_001_01", "pa_001_01"), start=1):
        row = Utterance.from_dict(SAMPLE_ROWS[utt], line=i)
        good.append(prepare((row, source.url, None, settings.preprocess, None)))
    assert all(isinstance(p, Prepared) for p in good)
    poison = Prepared(Utterance.from_dict({**SAMPLE_ROWS["en_002_02"]}, line=4), "feed",
                      good[0].analysis, np.zeros((4, 4, 4), np.float32), good[0].extras)
    codec = Codec.load(settings.codec, settings.cache_dir, "cpu")
    rejected = []
    with shard_writer(Store.for_run(settings)) as writer:
        dataset = RankDataset(writer, codec, settings.preprocess, rejected)
        for item in (good[0], poison, *good[1:]):
            dataset.add(item)
        dataset.flush()
    assert [(r.id, r.line, r.reason) for r in rejected] == [("en_002_02", 4, "internal_error")]
    assert rejected[0].detail.startswith("codec: ")
    assert sum(v.samples for k, v in writer.stats.items() if not k.startswith("phase4/")) == 3


class StallingProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that, for GETs of keys containing
    `hang-me`, passes the response headers and then no more bytes: a stalled object read."""

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self.sockets += [client, upstream]
            stall = threading.Event()
            threading.Thread(target=self._pump, args=(client, upstream, stall, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, stall, False), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, stall: threading.Event, request: bool) -> None:
        try:
            while data := src.recv(65536):
                if request:
                    first = data.split(b"\r\n", 1)[0]
                    if first.startswith(b"GET ") and b"hang-me" in first:
                        stall.set()
                elif stall.is_set():
                    head = data.find(b"\r\n\r\n")
                    dst.sendall(data[: head + 4] if head >= 0 else data)
                    if head >= 0:
                        return  # the body never comes
                    continue
                dst.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.server.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_a_stalled_object_read_is_abandoned_and_the_run_goes_on(s3_endpoint, make_settings, tmp_path):
    import boto3

    from tests.conftest import BUCKET

    proxy = StallingProxy(s3_endpoint)
    try:
        s3 = boto3.client("s3", endpoint_url=s3_endpoint)
        rows = [SAMPLE_ROWS["ms_001_01"], {**SAMPLE_ROWS["cs_001_01"], "id": "stalled", "audio": "audio/hang-me.flac"},
                SAMPLE_ROWS["pa_001_01"]]
        prefix = f"corpus-{os.getpid()}-{time.monotonic_ns()}"
        for row, source in zip(rows, ("ms_001_01", "cs_001_01", "pa_001_01"), strict=True):
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{row['audio']}",
                          Body=(SAMPLE / SAMPLE_ROWS[source]["audio"]).read_bytes())
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/manifest.jsonl",
                      Body="".join(json.dumps(r) + "\n" for r in rows).encode())
        # The output stays local; the input is read through the proxy. No row can finish while the
        # stalled one is read, so the timeout only needs to exceed a healthy read of one file.
        settings = make_settings(s3_endpoint_url=proxy.url, preprocess={"workers": 1, "read_timeout_s": 5.0})
        report = run(settings, input_store(f"s3://{BUCKET}/{prefix}", settings), progress=False)
        kept, quarantine = kept_and_quarantined(settings)
    finally:
        proxy.close()
    assert sorted(kept) == ["ms_001_01", "pa_001_01"] and report.samples == 2
    assert [(q["id"], q["line"], q["reason"]) for q in quarantine] == [("stalled", 2, "read_timeout")]
    assert "made no progress for 5 s" in quarantine[0]["detail"]


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path):
    from preprocess.fetch import fetch
    from preprocess.quarantine import RowError

    (tmp_path / "big.wav").write_bytes(b"\0" * (2 << 20))
    with pytest.raises(RowError) as err:
        fetch(Store(f"file://{tmp_path}"), "big.wav", PreprocessSettings(max_audio_mb=1))
    assert err.value.reason == "file_too_large" and "2.0 MiB" in err.value.detail


def test_every_reason_code_is_documented_and_every_code_raised_is_known():
    import re

    from preprocess.quarantine import REASONS
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Bad input"):readme.index("## The cloud path")]
    documented = {code for row in table.splitlines() if row.startswith("| ")
                  for code in re.findall(r"`([a-z_]+)`", row.rsplit("|", 2)[-2])}
    assert documented == set(REASONS)
    raised = set()
    for path in (REPO / "preprocess").glob("*.py"):
        raised |= set(re.findall(r"(?:RowError|AudioError|Rejected\.of\([^,]+,|_mark)\(\s*\"([a-z_]+)\"",
                                 path.read_text()))
        raised |= set(re.findall(r"Rejected\.of\([^\n]*?, \"([a-z_]+)\"", path.read_text()))
        raised |= set(re.findall(r"Rejected\([^\n]*?, \"([a-z_]+)\"", path.read_text()))
    assert raised and raised <= set(REASONS), raised - set(REASONS)


def test_a_transcript_too_long_to_be_said_is_refused_before_it_is_analysed(tmp_path):
    from preprocess.prepare import prepare

    pre = PreprocessSettings()
    row = Utterance.from_dict({**SAMPLE_ROWS["cs_001_01"], "text": "panjang " * 100_000}, line=1)
    outcome = prepare((row, f"file://{SAMPLE}", None, pre, None))
    assert (outcome.reason, outcome.line) == ("speaking_rate", 1) and "800000 characters" in outcome.detail
