"""Benchmark (make bench-scale): preprocessing at corpus scale, from the S3 server on 127.0.0.1,
with the whole pipeline (checks, cleaning, espeak-ng+DTW aligner, features, the tiny Mimi codec,
shards written to S3).

A corpus of SUARA_BENCH_HOURS hours (default 3) is generated from the bundled sample clips: each
utterance joins 1-5 clips of one sample speaker (1-15 s), and is made a new speaker's by a declared
sample rate 8 % either way (pitch and speed move together, as between voices) and a gain; about 2 %
of rows are bad (missing file, empty text, bytes that are not audio). It is preprocessed at full
and at half size in fresh processes, measuring wall time (x real time) and the peak resident memory
of the whole process tree (the main process and its workers, sampled every 0.2 s). Then the
full-size run is killed by its progress (SIGKILL once its bar shows KILL_AT of the rows done) and
run again: every good row must be in the shards exactly once, every bad row in the quarantine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from infra.storage import Store
from tests.conftest import BUCKET, PYTHON, REPO, SAMPLE, subprocess_env

pytestmark = pytest.mark.bench

HOURS = float(os.environ.get("SUARA_BENCH_HOURS", "3"))
SPEAKERS = 40
KILL_AT = 0.5


def generate(hours: float, out: Path, seed: int = 0) -> tuple[list[dict], float]:
    """A corpus of about `hours` of speech in `out` (manifest rows in order) and its good seconds."""
    rng = np.random.default_rng(seed)
    rows = [json.loads(x) for x in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    by_speaker: dict[str, list[tuple[np.ndarray, int, str]]] = {}
    for row in rows:
        audio, rate = sf.read(SAMPLE / row["audio"], dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        if rate != 22_050:
            import soxr

            audio = soxr.resample(audio, rate, 22_050).astype(np.float32)
        by_speaker.setdefault(row["speaker_id"], []).append((audio, 22_050, row["text"]))
    (out / "audio").mkdir(parents=True, exist_ok=True)
    manifest, total, n = [], 0.0, 0
    while total < hours * 3600:
        n += 1
        utt = f"utt_{n:06d}"
        if n % 50 == 7:
            manifest.append({"id": utt, "audio": f"audio/{utt}.flac", "text": "Saya nak go", "speaker_id": "spk000"})
            continue  # missing file
        source = by_speaker[sorted(by_speaker)[n % len(by_speaker)]]
        picks = [source[i] for i in rng.choice(len(source), int(rng.integers(1, 6)), replace=False)]
        gap = np.zeros(int(0.25 * 22_050), np.float32)
        audio = np.concatenate([x for clip, _, _ in picks for x in (clip, gap)][:-1])
        if len(audio) > 14 * 22_050:
            continue
        speaker = int(rng.integers(0, SPEAKERS))
        rate = int(22_050 * (0.92 + 0.16 * speaker / SPEAKERS))  # the speaker's "voice"
        audio = audio * float(rng.uniform(0.3, 0.9)) / max(1e-6, float(np.abs(audio).max()))
        text = " ".join(t for _, _, t in picks)
        if n % 50 == 23:
            (out / "audio" / f"{utt}.flac").write_bytes(os.urandom(2000))
        else:
            sf.write(out / "audio" / f"{utt}.flac", audio, rate)
        if n % 50 == 31:
            text = " ... "
        manifest.append({"id": utt, "audio": f"audio/{utt}.flac", "text": text, "speaker_id": f"spk{speaker:03d}",
                         "language": "ms"})
        if n % 50 not in (23, 31):
            total += len(audio) / rate
    return manifest, total


def upload(local: Path, rows: list[dict], store: Store) -> None:
    for row in rows:
        if (local / row["audio"]).exists():
            store.put_file(local / row["audio"], row["audio"])
    store.put_text("manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


class TreeMemory:
    """Peak summed RSS of a process and all its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int):
        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def preprocess(settings, input_url: str) -> tuple[float, int, str]:
    """`python -m preprocess run --input URL` in a fresh process: wall seconds, peak tree RSS, stdout."""
    cmd = [PYTHON, "-m", "preprocess", "run", "--input", input_url, "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=subprocess_env(settings), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    out, err = proc.communicate()
    peak = memory.stop()
    assert proc.returncode == 0, err[-3000:]
    return time.perf_counter() - start, peak, out


def shard_ids(settings, cache: Path) -> list[str]:
    from trainer.shared_memory import open_dataset

    run_store = Store.for_run(settings)
    ids = []
    for key in run_store.get_json("data/manifest.json")["buckets"]:
        if not key.startswith("phase4/"):
            with run_store.library_env():
                ds = open_dataset(remote=run_store.uri(f"data/{key}"), local=str(cache / key), batch_size=1)
                ids += [ds[i]["id"] for i in range(len(ds))]
    return ids


def test_preprocessing_scales_linearly_in_time_and_flat_in_memory(tmp_path, make_settings, s3_endpoint):
    from tests.test_preprocess import kill_at_progress

    rows, good_s = generate(HOURS, tmp_path / "corpus")
    half = rows[: len(rows) // 2]
    root = f"s3://{BUCKET}/bench-scale"
    for name, part in (("full", rows), ("half", half)):
        upload(tmp_path / "corpus", part, Store(f"{root}/{name}", s3_endpoint))
    figures = {}
    for name in ("half", "full"):
        settings = make_settings(store=f"{root}/store-{name}", s3_endpoint_url=s3_endpoint, run_id=name,
                                 preprocess={"aligner": "espeak_dtw"})
        wall, peak, out = preprocess(settings, f"{root}/{name}")
        manifest = Store.for_run(settings).get_json("data/manifest.json")
        figures[name] = {"rows": manifest["totals"]["rows"], "samples": manifest["totals"]["samples"],
                         "quarantined": manifest["quarantine"]["count"], "audio_s": manifest["totals"]["seconds"],
                         "wall_s": wall, "peak_rss_mb": peak / 2**20}
    print(f"\nscale benchmark, {HOURS:g} h generated ({good_s / 3600:.2f} h of good input audio), "
          f"{os.cpu_count()} cores, S3 on 127.0.0.1, aligner espeak_dtw, codec tiny")
    print("| size | rows | kept | quarantined | audio kept (h) | wall (s) | x real time | peak RSS, tree (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['rows']} | {f['samples']} | {f['quarantined']} | {f['audio_s'] / 3600:.2f} | "
              f"{f['wall_s']:.0f} | {f['audio_s'] / f['wall_s']:.1f} | {f['peak_rss_mb']:.0f} |")
    full, halfway = figures["full"], figures["half"]
    time_ratio, memory_ratio = full["wall_s"] / halfway["wall_s"], full["peak_rss_mb"] / halfway["peak_rss_mb"]
    print(f"full / half: rows x{full['rows'] / halfway['rows']:.2f}, time x{time_ratio:.2f}, "
          f"peak memory x{memory_ratio:.2f}")
    assert full["samples"] + full["quarantined"] == full["rows"] == len(rows)
    assert memory_ratio < 1.25, "memory grows with the corpus"
    assert 1.5 < time_ratio < 2.6, "time is not linear in the corpus"

    # Killed by progress at the full size, run again: nothing lost, nothing twice.
    settings = make_settings(store=f"{root}/store-killed", s3_endpoint_url=s3_endpoint, run_id="killed",
                             preprocess={"aligner": "espeak_dtw"})
    env = subprocess_env(settings)
    kill_at_progress([PYTHON, "-m", "preprocess", "run", "--input", f"{root}/full"], env,
                     int(len(rows) * KILL_AT))
    subprocess.run([PYTHON, "-m", "preprocess", "run", "--input", f"{root}/full", "--no-progress"], env=env,
                   check=True, capture_output=True, cwd=REPO)
    ids = shard_ids(settings, tmp_path / "mds")
    quarantine = [json.loads(x)["id"] for x in
                  Store.for_run(settings).get_bytes("quarantine.jsonl").decode().splitlines()]
    assert len(ids) == len(set(ids)) and not set(ids) & set(quarantine)
    assert sorted(ids + quarantine) == sorted(r["id"] for r in rows)
    print(f"killed at {int(len(rows) * KILL_AT)} of {len(rows)} rows and run again: {len(ids)} kept once each, "
          f"{len(quarantine)} quarantined, none lost")
