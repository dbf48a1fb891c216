"""Preprocessing end to end on real audio: shards, data manifest, and the quarantine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from infra.storage import Store
from preprocess.manifest import read_manifest
from preprocess.pipeline import input_store, run
from preprocess.shards import COLUMNS, ShardSample, split_of
from tests.conftest import SAMPLE, copy_store, shard_sample, small_corpus


def test_sample_corpus_becomes_shards_for_every_phase_and_speaker(preprocessed_store):
    run_store = Store(preprocessed_store).child("runs/shared")
    manifest = run_store.get_json("data/manifest.json")
    rows = [json.loads(line) for line in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    assert manifest["totals"]["rows"] == len(rows) == manifest["totals"]["samples"]
    assert manifest["quarantine"]["count"] == 0
    assert manifest["speakers"] == ["speaker_01", "speaker_02"]
    f0 = manifest["f0_by_speaker"]
    assert f0["speaker_01"]["mean_hz"] > f0["speaker_02"]["mean_hz"]  # the pitched-up synthetic voice
    buckets = manifest["buckets"]
    for key in ("phase1/train", "phase2/train", "phase3/train", "phase4/speaker_01/train",
                "phase4/speaker_02/train"):
        assert buckets[key]["samples"] > 0, key
    per_speaker = sum(v["samples"] for k, v in buckets.items() if k.startswith("phase4/"))
    assert per_speaker == len(rows)
    # Every shard file is listed with a checksum that matches.
    for key, digest in manifest["files"].items():
        assert run_store.sha256(key) == digest


def test_shard_samples_carry_codes_tags_and_masks(preprocessed_store, tmp_path):
    from trainer.shared_memory import open_dataset

    run_store = Store(preprocessed_store).child("runs/shared")
    ds = open_dataset(remote=run_store.uri("data/phase3/train"), local=str(tmp_path / "c"), batch_size=1)
    assert set(ds[0]) == set(COLUMNS)  # the shards hold exactly the record's columns
    sample = ShardSample.from_columns(ds[0])
    assert sample.phase == 3 and any(w["lang"] == "particle" for w in sample.words)
    frames = sample.frames
    assert abs(frames - sample.duration_s * 12.5) <= 2
    for mask in (sample.particle_mask, sample.switch_mask, sample.f0_hz, sample.energy_db):
        assert mask.shape == (frames,)
    # The bundled corpus carries true word timings: particle frames are where the particle was said.
    assert sample.aligner == "manifest" and len(sample.word_times) == len(sample.words)
    particle_words = [t for w, t in zip(sample.words, sample.word_times, strict=True) if w["lang"] == "particle"]
    marked = np.flatnonzero(sample.particle_mask) / 12.5
    assert marked.size and all(any(s - 0.08 <= f <= e for s, e in particle_words) for f in marked)
    assert sample.f0_hz.shape == (frames,) and (sample.f0_hz > 0).mean() > 0.3
    assert sample.split == split_of(sample.id) == "train"


def test_split_is_deterministic_and_roughly_80_10_10():
    splits = [split_of(f"utt_{i}") for i in range(5000)]
    assert splits == [split_of(f"utt_{i}") for i in range(5000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.02


def test_broken_inputs_are_quarantined_with_reasons_and_nothing_else_is_lost(tmp_path, make_settings):
    corpus = small_corpus(tmp_path / "corpus", ["ms_001_01", "en_002_02", "cs_001_01", "pa_001_01"])
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    (corpus / "audio" / "garbage.wav").write_bytes(b"RIFF0000WAVEnot really audio")
    rng = np.random.default_rng(0)
    sf.write(corpus / "audio" / "lowrate.wav", rng.normal(0, 0.1, 8000 * 2).astype(np.float32), 8000)
    shutil.copy(corpus / rows[0]["audio"], corpus / "audio" / "copy.flac")
    speech, speech_rate = sf.read(corpus / rows[0]["audio"])
    sf.write(corpus / "audio" / "other.wav", speech * 0.5, speech_rate)  # new bytes, same length
    bad = [
        {"id": "missing", "audio": "audio/nope.wav", "text": "Saya nak go", "speaker_id": "speaker_01"},
        {"id": "garbage", "audio": "audio/garbage.wav", "text": "Saya nak go", "speaker_id": "speaker_01"},
        {"id": "empty_text", "audio": rows[1]["audio"], "text": " ?! ", "speaker_id": "speaker_01"},
        {"id": "lowrate", "audio": "audio/lowrate.wav", "text": "Saya nak go", "speaker_id": "speaker_01"},
        {"id": "dup_audio", "audio": "audio/copy.flac", "text": "Selamat pagi", "speaker_id": "speaker_01"},
        {"id": rows[2]["id"], "audio": rows[2]["audio"], "text": "again", "speaker_id": "speaker_01"},
        {"id": "bad_tags", "audio": rows[3]["audio"], "text": "Boleh leh", "speaker_id": "speaker_02",
         "word_langs": ["ms"]},
        {"id": "no_speaker", "audio": rows[3]["audio"], "text": "Boleh leh"},
        {"id": "wrong_text", "audio": "audio/other.wav", "speaker_id": "speaker_01",
         "text": " ".join(["panjang"] * 40)},
    ]
    lines = [json.dumps(r) for r in rows] + [json.dumps(r) for r in bad] + ["{not json"]
    (corpus / "manifest.jsonl").write_text("\n".join(lines) + "\n")

    settings = make_settings()
    report = run(settings, input_store(str(corpus), settings), progress=False)
    run_store = Store.for_run(settings)
    quarantined = [json.loads(x) for x in run_store.get_bytes("quarantine.jsonl").decode().splitlines()]
    reasons = {q["id"]: q["reason"] for q in quarantined}
    assert reasons == {
        "missing": "missing_audio", "garbage": "unreadable_audio", "empty_text": "empty_text",
        "lowrate": "low_sample_rate", "dup_audio": "duplicate_audio", rows[2]["id"]: "duplicate_id",
        "bad_tags": "tags_mismatch", "no_speaker": "malformed_row", "line_14": "malformed_row",
        "wrong_text": "speaking_rate",
    }
    assert all(q["detail"] for q in quarantined)
    assert report.samples == len(rows) and report.quarantined == len(bad) + 1
    manifest = run_store.get_json("data/manifest.json")
    assert manifest["quarantine"]["by_reason"]["malformed_row"] == 2


def test_csv_manifest_with_seed_fields_is_read(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "audio,text,speaker_id,word_langs,particle_type,duration\n"
        'a/x.wav,Boleh leh,spk,"[""ms"", ""particle""]",leh_question,1.5\n'
        "a/y.wav,,spk,,,\n"
    )
    rows = list(read_manifest(Store(f"file://{tmp_path}")))
    assert rows[0].id == "a_x" and rows[0].word_langs == ["ms", "particle"]
    assert rows[0].custom == {"particle_type": "leh_question", "duration": "1.5"}
    assert rows[1].reason == "malformed_row" and "text" in rows[1].detail


def test_rerunning_rebuilds_the_same_data(tmp_path, make_settings):
    corpus = small_corpus(tmp_path / "corpus", ["ms_001_01", "cs_001_01", "pa_001_01"])
    settings = make_settings()
    run(settings, input_store(str(corpus), settings), progress=False)
    first = Store.for_run(settings).get_json("data/manifest.json")
    run(settings, input_store(str(corpus), settings), progress=False)
    second = Store.for_run(settings).get_json("data/manifest.json")
    assert first["files"] == second["files"] and first["buckets"] == second["buckets"]


def test_two_ranks_as_two_processes_build_one_dataset(tmp_path, make_settings):
    import subprocess

    from tests.conftest import PYTHON, subprocess_env
    from trainer.shared_memory import open_dataset

    ids = ["ms_001_01", "ms_003_01", "en_001_01", "cs_001_01", "cs_002_02", "cs_003_01", "pa_001_01",
           "pa_002_02", "pa_004_02", "pa_005_01"]
    corpus = small_corpus(tmp_path / "corpus", ids)
    with (corpus / "manifest.jsonl").open("a") as fh:  # one bad row: quarantined by exactly one rank
        fh.write(json.dumps({"id": "gone", "audio": "audio/gone.wav", "text": "hi", "speaker_id": "x"}) + "\n")
    settings = make_settings()
    env = subprocess_env(settings)
    procs = [subprocess.Popen([PYTHON, "-m", "preprocess", "run", "--input", str(corpus), "--no-progress"],
                              env={**env, "SKYPILOT_NODE_RANK": str(r), "SKYPILOT_NUM_NODES": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]

    run_store = Store.for_run(settings)
    manifest = run_store.get_json("data/manifest.json")
    assert manifest["world_size"] == 2 and manifest["totals"]["samples"] == len(ids)
    assert manifest["quarantine"]["count"] == 1
    markers = [run_store.get_json(f"data/_ranks/rank_00{r}.json") for r in (0, 1)]
    assert all(m["rows"] > 0 for m in markers)  # both ranks had work
    seen = []
    for key, stats in manifest["buckets"].items():
        if key.startswith("phase4/"):
            continue
        ds = open_dataset(remote=run_store.uri(f"data/{key}"), local=str(tmp_path / "c" / key), batch_size=1)
        assert len(ds) == stats["samples"]
        seen += [ds[i]["id"] for i in range(len(ds))]
    assert sorted(seen) == sorted(ids)  # every row exactly once
    quarantine = run_store.get_bytes("quarantine.jsonl").decode().splitlines()
    assert [json.loads(q)["id"] for q in quarantine] == ["gone"]


def test_data_report_has_its_plots_and_the_quarantine(preprocessed_store, tmp_path, cache_dir):
    import re

    from preprocess.report import build_report, particle_contours

    run_store = Store(copy_store(preprocessed_store, tmp_path / "s")).child("runs/shared")
    run_store.put_text("quarantine.jsonl", json.dumps({"id": "bad<1>", "reason": "clipping", "detail": "x"}) + "\n")
    uri = build_report(run_store, cache_dir)
    page = Path(uri).read_text()
    assert len(re.findall(r"data:image/png;base64,", page)) == 5
    for title in ("Durations", "Hours per speaker and phase", "Language mix", "F0 per speaker",
                  "Mean F0 contour of each particle"):
        assert title in page
    assert "bad&lt;1&gt;" in page  # escaped
    assert "Particle prosody against the expected table" in page
    assert re.search(r"<td>lah</td><td>\d+</td>", page) and "rise_fall" in page
    assert run_store.get_json("data/manifest.json")["report"] == "report.html"
    sample = shard_sample(0, frames=10, speaker="s", words=[{"text": "leh", "lang": "particle", "particle": "leh"}],
                          word_times=[[0.0, 0.8]], f0_hz=np.linspace(100, 200, 10).astype(np.float32))
    rising = particle_contours([sample], {"s": 150.0})["leh"]
    assert rising[0] < 0 < rising[-1] and np.all(np.diff(rising) > 0)


def test_rows_without_timings_are_aligned_and_say_by_what(tmp_path, make_settings):
    from preprocess import align
    from trainer.shared_memory import open_dataset

    corpus = small_corpus(tmp_path / "corpus", ["pa_001_01", "pa_005_01"])
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    (corpus / "manifest.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "word_timings"}) + "\n" for r in rows))
    settings = make_settings()
    run(settings, input_store(str(corpus), settings), progress=False)
    run_store = Store.for_run(settings)
    ds = open_dataset(remote=run_store.uri("data/phase3/train"), local=str(tmp_path / "c"), batch_size=1)
    expected = "espeak_dtw" if align.available() else "proportional"
    assert {ds[i]["aligner"] for i in range(len(ds))} == {expected}
    assert all(ds[i]["particle_mask"].sum() > 0 for i in range(len(ds)))


def kill_at_progress(cmd: list[str], env: dict[str, str], done: int) -> list[str]:
    """Run `cmd` with its progress bar on and SIGKILL it once the bar shows `done` rows finished, or
    (`done=0`) as soon as its worker processes exist, while they are still starting; their pids."""
    import re
    import signal
    import subprocess
    import time

    def workers() -> list[str]:
        return subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "multiprocessing.spawn"], capture_output=True,
                              text=True).stdout.split()

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done == 0:
        while proc.poll() is None and not workers():
            time.sleep(0.01)
    else:
        seen = b""
        while proc.poll() is None:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            seen = (seen + chunk)[-4096:]
            counts = re.findall(rb"(\d+)/\d+ \[", seen)
            if counts and int(counts[-1]) >= done:
                break
    pids = workers()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert pids, "no worker processes were seen"
    return pids


@pytest.mark.parametrize("done", [0, 40])
def test_killed_preprocessing_run_again_ends_with_every_sample_once(tmp_path, make_settings, done):
    import subprocess
    import time

    from tests.conftest import PYTHON, subprocess_env
    from trainer.shared_memory import open_dataset

    settings = make_settings()
    env = subprocess_env(settings)
    workers = kill_at_progress([PYTHON, "-m", "preprocess", "run"], env, done)
    cmd = [PYTHON, "-m", "preprocess", "run", "--no-progress"]
    # Its worker processes die with it (they would otherwise linger, reparented, holding memory).
    deadline = time.monotonic() + 600  # a hang guard: a worker still importing exits once it has started
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    run_store = Store.for_run(settings)
    manifest = run_store.get_json("data/manifest.json")
    ids = []
    for key in manifest["buckets"]:
        if not key.startswith("phase4/"):
            ds = open_dataset(remote=run_store.uri(f"data/{key}"), local=str(tmp_path / "c" / key), batch_size=1)
            ids += [ds[i]["id"] for i in range(len(ds))]
    rows = [json.loads(line)["id"] for line in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(rows)


def test_the_worker_queue_is_bounded_and_keeps_manifest_order():
    from concurrent.futures import ThreadPoolExecutor

    from preprocess.pipeline import _ordered

    started = []

    def work(n):
        started.append(n)
        return n * n

    with ThreadPoolExecutor(2) as pool:
        results = _ordered(pool, work, list(range(50)), window=4)
        first = next(results)
        import time

        time.sleep(0.2)  # the workers would race ahead if nothing held them back
        assert first == 0 and len(started) <= 5
        assert [first, *results] == [n * n for n in range(50)]
