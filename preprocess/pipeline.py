"""Preprocessing: manifest + audio in, Mimi-coded shards per phase and split out.

Every input row ends as exactly one of: a sample in the shards, or a line in `quarantine.jsonl`
with its reason. Running again rebuilds the run's data from scratch (idempotent).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from infra.settings import PreprocessSettings, Settings
from infra.storage import Store
from preprocess import align, mfa
from preprocess.codec import Codec
from preprocess.manifest import Utterance, read_manifest
from preprocess.prepare import FRAME_RATE_HZ, Prepared, for_mfa, prepare, worker_init
from preprocess.quarantine import Rejected, RunError, guarded, is_run_fault
from preprocess.shards import (
    DATA_PREFIX,
    ShardSample,
    ShardWriter,
    make_sample,
    merge_indexes,
    rank_dir,
    shard_writer,
    split_of,
)

log = logging.getLogger(__name__)
SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "data" / "sample"
QUARANTINE = "quarantine.jsonl"
RANKS_PREFIX = f"{DATA_PREFIX}/_ranks"


@dataclass
class Report:
    samples: int
    quarantined: int
    seconds: float
    manifest_uri: str
    quarantine_uri: str
    merged: bool = True  # False: this rank is done, others are still running


def input_store(location: str | None, settings: Settings) -> Store:
    """The folder or prefix holding the manifest and audio (default: the bundled sample corpus)."""
    if location is None:
        if not (SAMPLE_CORPUS / "manifest.jsonl").is_file():
            raise FileNotFoundError(f"bundled sample corpus missing at {SAMPLE_CORPUS}; give --input")
        return Store(f"file://{SAMPLE_CORPUS}")
    if location.startswith("s3://"):
        return Store(location, settings.s3_endpoint_url)
    path = Path(location.removeprefix("file://")).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"input {location} is not a folder")
    return Store(f"file://{path.resolve()}")


def rank_of(utt_id: str, world_size: int) -> int:
    """The preprocessing rank that owns a row: by a hash of its id, so a duplicated id always lands
    on one rank (where it is caught) and the split is stable when rows are added."""
    return int.from_bytes(hashlib.sha256(utt_id.encode("utf-8")).digest()[4:8], "big") % world_size


def marker_key(rank: int) -> str:
    return f"{RANKS_PREFIX}/{rank_dir(rank)}.json"


MERGE_CLAIM = f"{RANKS_PREFIX}/merge-claim.json"


def _job() -> str | None:
    """The job this run belongs to: SkyPilot's task id, the same across a managed job's recoveries
    and new for every launch (None outside SkyPilot)."""
    return os.environ.get("SKYPILOT_TASK_ID")


def _finished_before(run_store: Store, rank: int, world_size: int, input_url: str) -> bool:
    """A multi-node rank that this same job already processed from this input: a recovered node
    skips it. A new launch rebuilds it (its settings or data may have changed), and one machine
    rebuilds from scratch on every run, as documented."""
    if world_size == 1 or not run_store.exists(marker_key(rank)):
        return False
    marker = run_store.get_json(marker_key(rank))
    return (marker.get("world_size"), marker.get("input"), marker.get("job")) == (world_size, input_url, _job())


def _merge_once(run_store: Store, rank: int, world_size: int) -> Report | None:
    """Merge when every rank is done, on exactly one rank: the one whose write-once claim lands
    (a conditional write, so ranks finishing together cannot both merge). A recovered claimant whose
    merge did not finish merges again; every other rank returns None."""
    if not all(run_store.exists(marker_key(r)) for r in range(world_size)):
        return None
    if world_size == 1 or run_store.put_if_absent(MERGE_CLAIM, json.dumps({"rank": rank}).encode()):
        return merge(run_store, world_size)
    claimant = run_store.get_json(MERGE_CLAIM).get("rank")
    if claimant == rank and not run_store.exists(f"{DATA_PREFIX}/manifest.json"):
        return merge(run_store, world_size)
    log.info("rank %d of %d done; rank %s merges", rank, world_size, claimant)
    return None


def run(settings: Settings, source: Store, progress: bool = True, rank: int = 0, world_size: int = 1) -> Report:
    """Preprocess this rank's share of the input; the rank that completes the set merges."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    pre = settings.preprocess
    run_store = Store.for_run(settings)
    if _finished_before(run_store, rank, world_size, source.url):
        log.info("rank %d of %d already finished for %s; not redone", rank, world_size, source.url)
        merged = _merge_once(run_store, rank, world_size)
        return merged or Report(samples=0, quarantined=0, seconds=0.0, manifest_uri="", quarantine_uri="",
                                merged=False)
    _clear_rank(run_store, rank, world_size)
    codec = _load_codec(settings)
    rows, jobs, rejected = _rows_of_rank(source, rank, world_size)
    workers = pre.workers or os.cpu_count() or 1
    aligned: dict[str, Any] = {}
    if pre.aligner == "mfa" or (pre.aligner == "auto" and mfa.available()):
        aligned = _mfa_pass(jobs, source, pre, workers)
    work = [(row, source.url, source.endpoint_url, pre, aligned.get(row.id)) for row in jobs]
    desc = "preprocess" if world_size == 1 else f"preprocess rank {rank}/{world_size}"
    with shard_writer(run_store, rank) as writer, _pool(workers) as pool:
        dataset = RankDataset(writer, codec, pre, rejected)
        for outcome in tqdm(_ordered(pool, prepare, work, window=4 * workers, on_crash=_crashed_row),
                            total=len(work), desc=desc, unit="utt", disable=not progress):
            dataset.add(outcome)
        dataset.flush()
    for item in dataset.rejected:
        log.warning("quarantined %s: %s (%s)", item.ref.describe(), item.reason, item.detail)
    run_store.put_json(marker_key(rank), {**dataset.marker(rank, world_size, source.url, len(rows)), "job": _job()})
    merged = _merge_once(run_store, rank, world_size)
    if merged is not None:
        return merged
    log.info("rank %d of %d done; the last rank to finish merges", rank, world_size)
    return Report(samples=sum(v.samples for k, v in writer.stats.items() if not k.startswith("phase4/")),
                  quarantined=len(dataset.rejected), seconds=0.0, manifest_uri="", quarantine_uri="", merged=False)


def _clear_rank(run_store: Store, rank: int, world_size: int) -> None:
    """A rerun rebuilds this rank's data; checkpoints and adapters of the run are left alone."""
    own = f"/{rank_dir(rank)}/"
    for key in run_store.list(DATA_PREFIX):
        if own in f"/{key}":
            run_store.delete(key)
    run_store.delete(marker_key(rank))
    run_store.delete(MERGE_CLAIM)  # a rank built anew: the dataset will be merged anew
    run_store.delete(f"{DATA_PREFIX}/manifest.json")
    if world_size == 1:
        run_store.delete(RANKS_PREFIX)  # markers of an earlier multi-rank layout


def _load_codec(settings: Settings) -> Codec:
    """The codec, after the checks that would otherwise fail a run halfway."""
    aligner = settings.preprocess.aligner
    if aligner == "espeak_dtw" and not align.available():
        raise ValueError("preprocess.aligner=espeak_dtw needs espeak-ng, which `make setup` installs "
                         "(espeakng-loader); or use auto / proportional")
    if aligner == "auto" and not mfa.available() and not align.available():
        log.warning("word timings: neither Montreal Forced Aligner nor espeak-ng is available, so rows without "
                    "manifest timings get a proportional split by word length (make setup installs espeak-ng)")
    codec = Codec.load(settings.codec, settings.cache_dir, settings.device)
    if abs(codec.frame_rate_hz - FRAME_RATE_HZ) > 1e-9:
        raise ValueError(f"codec {settings.codec} runs at {codec.frame_rate_hz} frames/s; Suara expects Mimi's 12.5")
    return codec


def _rows_of_rank(source: Store, rank: int,
                  world_size: int) -> tuple[list[Utterance | Rejected], list[Utterance], list[Rejected]]:
    """This rank's manifest rows; those to process (first of each id) and those rejected already."""
    rows = [r for r in read_manifest(source) if rank_of(r.id, world_size) == rank]
    rejected: list[Rejected] = []
    jobs: list[Utterance] = []
    first_line: dict[str, int | None] = {}
    for row in rows:
        if isinstance(row, Rejected):
            rejected.append(row)
        elif row.id in first_line:
            rejected.append(Rejected.of(row.ref, "duplicate_id", f"id {row.id!r} appears more than once (first on "
                                                                 f"manifest line {first_line[row.id]})"))
        else:
            first_line[row.id] = row.line
            jobs.append(row)
    return rows, jobs, rejected


class F0Stats:
    """Voiced-frame F0 sums per speaker (sum, sum of squares, count): mergeable across ranks."""

    def __init__(self, totals: dict[str, list] | None = None):
        self.totals: dict[str, list] = {k: list(v) for k, v in (totals or {}).items()}

    def add(self, speaker: str, f0_hz: np.ndarray) -> None:
        voiced = f0_hz[f0_hz > 0].astype(np.float64)
        self.merge({speaker: [float(voiced.sum()), float((voiced**2).sum()), int(voiced.size)]})

    def merge(self, totals: dict[str, list]) -> None:
        for speaker, (total, squares, count) in totals.items():
            acc = self.totals.setdefault(speaker, [0.0, 0.0, 0])
            acc[0], acc[1], acc[2] = acc[0] + total, acc[1] + squares, acc[2] + count

    def by_speaker(self) -> dict[str, dict[str, float]]:
        return {
            spk: {"mean_hz": round(t / n, 2), "std_hz": round(float(np.sqrt(max(sq / n - (t / n) ** 2, 0.0))), 2),
                  "voiced_frames": n}
            for spk, (t, sq, n) in sorted(self.totals.items()) if n
        }


class RankDataset:
    """What one rank keeps: prepared clips are de-duplicated by their audio bytes, encoded by the
    codec in batches and written to the shards; every other outcome joins the quarantine. The
    codec and the sample are per-row work too (quarantine.guarded): a clip that breaks a batch is
    found by encoding the batch's clips one by one, and only it is quarantined. Writing a checked
    sample can only fail for the run's own reasons (the output store, the disk), which end the run."""

    def __init__(self, writer: ShardWriter, codec: Codec, pre: PreprocessSettings, rejected: list[Rejected]):
        self.writer, self.codec, self.pre = writer, codec, pre
        self.rejected = rejected
        self.speakers: set[str] = set()
        self.f0 = F0Stats()
        self._seen_audio: dict[str, Utterance] = {}
        self._pending: list[Prepared] = []

    def add(self, outcome: Prepared | Rejected) -> None:
        if isinstance(outcome, Rejected):
            self.rejected.append(outcome)
            return
        first = self._seen_audio.setdefault(outcome.digest, outcome.row)
        if first is not outcome.row:
            self.rejected.append(Rejected.of(outcome.row.ref, "duplicate_audio", f"same audio bytes as {first.id!r} "
                                                                                 f"(manifest line {first.line})"))
            return
        self._pending.append(outcome)
        if len(self._pending) >= self.pre.codec_batch:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for item, codes in zip(pending, self._encode(pending), strict=True):
            sample = codes if isinstance(codes, Rejected) else guarded(item.row.ref, "shard sample", self._sample,
                                                                       item, codes)
            if isinstance(sample, Rejected):
                self.rejected.append(sample)
                continue
            try:
                self.writer.write(sample)
            except Exception as exc:
                raise RunError(f"cannot write the shards at {item.row.ref.describe()}: {exc}") from exc
            self.speakers.add(sample.speaker_id)
            self.f0.add(sample.speaker_id, sample.f0_hz)

    def _encode(self, pending: list[Prepared]) -> list[np.ndarray | Rejected]:
        try:
            return list(self.codec.encode_batch([p.audio for p in pending]))
        except Exception as exc:
            if is_run_fault(exc):
                raise
            log.warning("the codec failed on a batch of %d clips (%s); encoding them one by one", len(pending), exc)
        return [guarded(p.row.ref, "codec", self.codec.encode, p.audio) for p in pending]

    def _sample(self, item: Prepared, codes: np.ndarray) -> ShardSample:
        row = item.row
        sample = make_sample(
            utt_id=row.id, speaker_id=row.speaker_id, text=row.text, analysis=item.analysis,
            split=split_of(row.id), duration_s=len(item.audio) / self.pre.sample_rate_hz, codes=codes,
            extras=item.extras,
        )
        self.writer.check(sample)
        return sample

    def marker(self, rank: int, world_size: int, input_url: str, rows: int) -> dict[str, Any]:
        """This rank's report, read by the merge."""
        return {
            "rank": rank, "world_size": world_size, "input": input_url, "codec": self.codec.describe(),
            "rows": rows, "speakers": sorted(self.speakers), "f0_stats": self.f0.totals,
            "buckets": {k: {"samples": v.samples, "seconds": round(v.seconds, 3)}
                        for k, v in self.writer.stats.items()},
            "quarantine": [r.to_dict() for r in self.rejected],
        }


def _mfa_pass(jobs: list[Utterance], source: Store, pre: Any, workers: int) -> dict[str, Any]:
    """Clean every clip into an MFA corpus on disk, train and align it; word timings per id."""
    if not mfa.available():
        raise ValueError("preprocess.aligner=mfa needs the `mfa` command (the GPU image has it); "
                         "use auto, espeak_dtw or proportional")
    with tempfile.TemporaryDirectory(prefix="suara-mfa-") as tmp:
        root = Path(tmp)
        work = [(row, source.url, source.endpoint_url, pre, root) for row in jobs]
        with _pool(workers) as pool:
            items = [i for i in _ordered(pool, for_mfa, work, window=4 * workers, on_crash=lambda job, why: None)
                     if i]
        log.info("aligning %d utterances with Montreal Forced Aligner", len(items))
        mfa.run(root, [words for _, _, words in items], workers)
        return mfa.read_alignments(root, [(utt, speaker, [w.text for w in words]) for utt, speaker, words in items])


def _crashed_row(job: Any, why: str) -> Rejected:
    log.warning("the worker process %s at %s", why, job[0].ref.describe())
    return Rejected.of(job[0].ref, "internal_error", f"the worker process {why} while processing this row")


def _ordered(pool: Workers | None, fn: Any, jobs: list[Any], window: int,
             on_crash: Callable[[Any, str], Any] | None = None) -> Iterator[Any]:
    """fn over jobs in order, with at most `window` jobs in flight: finished clips wait for the codec
    in a bounded queue, so memory does not grow with the corpus (Executor.map submits everything).

    A worker process that dies (a decoder crash, the kernel's out-of-memory killer, the row
    deadline) breaks the whole pool and fails every job in flight with it. The pool is then
    rebuilt and those jobs run again one at a time: one that breaks the pool alone is the culprit,
    and `on_crash(job, why)` stands for its result. The others run as if nothing happened."""
    if pool is None:
        yield from map(fn, jobs)
        return
    flight: deque[tuple[Any, Future]] = deque()
    upcoming = iter(jobs)
    for job in itertools.islice(upcoming, window):
        flight.append((job, pool.submit(fn, job)))
    while flight:
        job, future = flight[0]
        try:
            result = future.result()
        except BrokenProcessPool:
            suspects = list(flight)
            flight.clear()
            pool.restart()
            for suspect, done in suspects:
                if done.done() and not isinstance(done.exception(), BrokenProcessPool):
                    yield done.result()
                else:
                    yield _alone(pool, fn, suspect, on_crash)
            for job in itertools.islice(upcoming, window):
                flight.append((job, pool.submit(fn, job)))
            continue
        flight.popleft()
        for job in itertools.islice(upcoming, 1):
            flight.append((job, pool.submit(fn, job)))
        yield result


def _alone(pool: Workers, fn: Any, job: Any, on_crash: Callable[[Any, str], Any] | None) -> Any:
    """fn(job) with nothing else in flight; on_crash(job, why) if it breaks the pool."""
    try:
        return pool.submit(fn, job).result()
    except BrokenProcessPool:
        why = pool.restart()
        if on_crash is None:
            raise RunError(f"a preprocessing worker {why}") from None
        return on_crash(job, why)


class Workers:
    """Worker processes for the per-row work (spawned: they never inherit torch's threads), rebuilt
    when one dies. Each writes why it died (faulthandler) to a file of its own in `crash_dir`."""

    def __init__(self, workers: int):
        self.workers = workers
        self._crash_dir = tempfile.TemporaryDirectory(prefix="suara-workers-")
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=worker_init, initargs=(os.getpid(), self._crash_dir.name))

    def submit(self, fn: Any, job: Any) -> Future:
        return self.pool.submit(fn, job)

    def restart(self) -> str:
        """A new pool after one broke; why a worker of the old one died."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        logs = [p.read_text(errors="replace") for p in Path(self._crash_dir.name).glob("*.log")]
        for p in Path(self._crash_dir.name).glob("*.log"):
            p.unlink()
        self.pool = self._start()
        fatal = next((m.group(1) for text in logs for m in [re.search(r"Fatal Python error: (.+)", text)] if m), None)
        if any(text.startswith("Timeout (") or "\nTimeout (" in text for text in logs):
            return "ran past preprocess.row_timeout_s and was stopped"
        if fatal:
            return f"crashed ({fatal.strip()})"
        return "was killed (by the out-of-memory killer?)"

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._crash_dir.cleanup()


@contextmanager
def _pool(workers: int) -> Iterator[Workers | None]:
    if workers <= 1:
        yield None
        return
    pool = Workers(workers)
    try:
        yield pool
    finally:
        pool.shutdown()


def merge(run_store: Store, world_size: int) -> Report:
    """Join every rank's shards and reports into one dataset: an index per bucket, the quarantine
    and the data manifest. Idempotent; in a multi-node run `_merge_once` picks the one rank that runs it."""
    missing = [r for r in range(world_size) if not run_store.exists(marker_key(r))]
    if missing:
        raise FileNotFoundError(f"ranks {missing} of {world_size} have not finished preprocessing")
    markers = [run_store.get_json(marker_key(r)) for r in range(world_size)]
    if {m["world_size"] for m in markers} != {world_size}:
        raise ValueError("the rank reports disagree on the world size; rerun every rank")
    buckets: dict[str, dict[str, float]] = {}
    for m in markers:
        for key, stats in m["buckets"].items():
            merged = buckets.setdefault(key, {"samples": 0, "seconds": 0.0})
            merged["samples"] += stats["samples"]
            merged["seconds"] = round(merged["seconds"] + stats["seconds"], 3)
    for key in sorted(buckets):
        merge_indexes(run_store, key, list(range(world_size)))
    rejected = [q for m in markers for q in m["quarantine"]]
    run_store.put_text(QUARANTINE, "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in rejected))
    files = {key: run_store.sha256(key) for key in run_store.list(DATA_PREFIX)
             if not key.startswith(f"{RANKS_PREFIX}/") and key != f"{DATA_PREFIX}/manifest.json"}
    main = {k: v for k, v in buckets.items() if not k.startswith("phase4/")}
    f0 = F0Stats()
    for m in markers:
        f0.merge(m.get("f0_stats", {}))
    manifest = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": markers[0]["input"],
        "codec": markers[0]["codec"],
        "world_size": world_size,
        "speakers": sorted({s for m in markers for s in m["speakers"]}),
        "f0_by_speaker": f0.by_speaker(),
        "buckets": dict(sorted(buckets.items())),
        "totals": {
            "rows": sum(m["rows"] for m in markers),
            "samples": sum(v["samples"] for v in main.values()),
            "seconds": round(sum(v["seconds"] for v in main.values()), 3),
        },
        "quarantine": {"count": len(rejected), "by_reason": dict(Counter(q["reason"] for q in rejected)),
                       "file": QUARANTINE},
        "files": files,
    }
    run_store.put_json(f"{DATA_PREFIX}/manifest.json", manifest)
    return Report(
        samples=manifest["totals"]["samples"],
        quarantined=len(rejected),
        seconds=manifest["totals"]["seconds"],
        manifest_uri=run_store.uri(f"{DATA_PREFIX}/manifest.json"),
        quarantine_uri=run_store.uri(QUARANTINE),
    )


