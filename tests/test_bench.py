"""Benchmarks (make bench): one table of ratios, every figure measured in this run on this machine.

Each row is ours against a baseline where there is one, with its goal; goals stated as ratios are
asserted here (never in the default test suite). `make bench REAL=1` (pytest --real-shape) adds the
rows measured on the full-size random CSM-1B, which take minutes and about 12 GB.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import pyloudnorm
import pytest

from preprocess.manifest import read_manifest
from preprocess.pipeline import input_store
from tests.conftest import BUCKET, PYTHON, REPO, SAMPLE, subprocess_env, tiny_plan

pytestmark = pytest.mark.bench
STEP_LINE = re.compile(r"phase1 step (\d+)/")


@dataclass
class Row:
    measure: str
    ours: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None


class Table:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, measure: str, ours: str, baseline: str = "", ratio: float | None = None, goal: str = "",
            met: bool | None = None) -> None:
        self.rows.append(Row(measure, ours, baseline, ratio, goal, met))

    def render(self) -> str:
        cells = [("measure", "ours", "baseline", "ratio", "goal", "met")]
        cells += [(r.measure, r.ours, r.baseline, "" if r.ratio is None else f"{r.ratio:.3g}", r.goal,
                   "" if r.met is None else ("yes" if r.met else "NO")) for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(6)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)


@pytest.fixture(scope="module")
def table():
    """The one table; printed once every benchmark of the run has added its rows."""
    found = Table()
    yield found
    print("\n\nBenchmarks (measured in this run, on this machine)\n" + found.render())


def naive_pipeline(rows: list[dict]) -> float:
    """What a first script would do: librosa.load (soxr_hq), trim, loudness-normalise, in a loop."""
    seconds = 0.0
    meter = pyloudnorm.Meter(24_000)
    for row in rows:
        audio, _ = librosa.load(SAMPLE / row["audio"], sr=24_000)
        audio, _ = librosa.effects.trim(audio, top_db=40)
        audio = pyloudnorm.normalize.loudness(audio, meter.integrated_loudness(audio), -23.0)
        seconds += len(audio) / 24_000
    return seconds


def ours(settings, strip_timings: bool, tmp_path: Path) -> tuple[float, float]:
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from preprocess.prepare import Prepared, prepare

    source = input_store(None, settings)
    rows = [r for r in read_manifest(source)]
    if strip_timings:
        rows = [type(r)(**{**r.__dict__, "custom": {k: v for k, v in r.custom.items() if k != "word_timings"}})
                for r in rows]
    work = [(r, source.url, None, settings.preprocess, None) for r in rows]
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(prepare, work[:4]))  # start the workers before timing
        start = time.perf_counter()
        results = [p for p in pool.map(prepare, work, chunksize=4) if isinstance(p, Prepared)]
        wall = time.perf_counter() - start
    return sum(len(p.audio) for p in results) / 24_000, wall


def test_preprocessing_throughput_against_a_naive_pipeline(make_settings, tmp_path, cache_dir, table):
    rows = [json.loads(line) for line in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    settings = make_settings(preprocess={"aligner": "proportional"})
    start = time.perf_counter()
    naive_seconds = naive_pipeline(rows)
    naive_wall = time.perf_counter() - start
    audio_s, wall = ours(settings, strip_timings=False, tmp_path=tmp_path)
    naive_rt, ours_rt = naive_seconds / naive_wall, audio_s / wall
    print(f"\npreprocessing without alignment and Mimi: {ours_rt:.0f}x real time; naive librosa loop "
          f"{naive_rt:.0f}x; ratio {ours_rt / naive_rt:.2f} ({len(rows)} clips, {audio_s / 60:.1f} min)")

    aligned_s, aligned_wall = ours(make_settings(preprocess={"aligner": "espeak_dtw"}), True, tmp_path)
    print(f"with the espeak-ng+DTW aligner: {aligned_s / aligned_wall:.0f}x real time")

    from preprocess.codec import Codec
    from preprocess.prepare import prepare

    codec = Codec.load("tiny", cache_dir)
    clips = [prepare((r, input_store(None, settings).url, None, settings.preprocess, None)).audio
             for r in list(read_manifest(input_store(None, settings)))[:32]]
    start = time.perf_counter()
    for i in range(0, len(clips), 16):
        codec.encode_batch(clips[i : i + 16])
    mimi_rt = sum(len(c) for c in clips) / 24_000 / (time.perf_counter() - start)
    print(f"Mimi (tiny, CPU, batches of 16): {mimi_rt:.0f}x real time")
    table.add("preprocessing (no alignment, no Mimi) vs naive librosa loop", f"{ours_rt:.0f}x real time",
              f"{naive_rt:.0f}x real time", ours_rt / naive_rt, ">= 1.5x and >= 20x real time",
              ours_rt >= 20 and ours_rt >= 1.5 * naive_rt)
    table.add("preprocessing with the espeak-ng+DTW aligner", f"{aligned_s / aligned_wall:.0f}x real time")
    table.add("Mimi encoding (tiny, CPU, batches of 16)", f"{mimi_rt:.0f}x real time")
    assert ours_rt >= 20 and ours_rt >= 1.5 * naive_rt, (ours_rt, naive_rt)
    assert np.isfinite(mimi_rt)


def test_text_analysis_throughput_on_one_core(table):
    from preprocess.text import analyze, chat, lexicon, particles, tagger
    from preprocess.text.charmodel import char_model

    start = time.perf_counter()
    lexicon.frequencies(), char_model(), chat._skeleton_index(), lexicon.zh_loans(), lexicon.pinyin_words()
    load = time.perf_counter() - start
    labelled = [line.split("\t")[0] for name in ("dev.tsv", "check.tsv", "chat.tsv", "chat-check.tsv", "chat-blind.tsv")
                for line in (REPO / "data" / "text" / name).read_text().splitlines() if line and line[0] != "#"]
    texts = labelled + [json.loads(line)["text"] for line in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    # Cold: every word's emission computed afresh (the per-word caches emptied), as on a new corpus.
    tagger._emission.cache_clear(), particles.pinyin_only.cache_clear(), lexicon._split.cache_clear()
    tagger._form.cache_clear(), tagger._only_pinyin.cache_clear(), chat._skeleton_candidates.cache_clear()
    start, cpu = time.perf_counter(), time.process_time()
    for line in texts:
        analyze(line)
    cold = len(texts) / (time.perf_counter() - start)
    cold_cpu = len(texts) / (time.process_time() - cpu)  # what one core gives us on a shared machine
    lines = (texts * 10)[:5000]
    start = time.perf_counter()
    for line in lines:
        analyze(line)
    warm = len(lines) / (time.perf_counter() - start)
    print(f"\ntext analysis on one core: {cold:.0f} utterances/s on {len(texts)} unseen utterances "
          f"({cold_cpu:.0f} per CPU-second), {warm:.0f}/s once their words are cached; tables load in {load:.2f} s")
    table.add("text frontend, one core, unseen utterances", f"{cold:.0f} utterances/s ({cold_cpu:.0f} per CPU-s)",
              goal=">= 2000/s",
              met=cold >= 2000)
    assert cold >= 2000


# -- the trainer ----------------------------------------------------------------------------------
# Best-checkpoint scoring is off: it is validation, measured by its own settings, not a checkpoint's cost.
TINY_TRAIN = {"phases": tiny_plan(10_000), "depth_decoder_frame_ratio": 1 / 16, "log_every": 1,
              "keep_best_checkpoints": 0}


def upload_store(local_url: str, s3_endpoint: str) -> str:
    """A copy of a local store on the S3 server; its URL."""
    from infra.storage import Store

    url = f"s3://{BUCKET}/bench-{uuid.uuid4().hex[:8]}"
    remote = Store(url, s3_endpoint)
    root = Path(local_url.removeprefix("file://"))
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        remote.put_file(path, path.relative_to(root).as_posix())
    return url


def bench_settings(store: str, s3_endpoint: str | None, cache_dir: Path, **overrides):
    from infra.settings import load_settings

    train = {**TINY_TRAIN, **overrides.pop("train", {})}
    return load_settings(store=store, s3_endpoint_url=s3_endpoint, run_id="shared", cache_dir=cache_dir, train=train,
                         logging={"wandb_mode": "disabled", "val_every": 0}, **overrides)


def steps_per_second(trainer, steps: int, warmup: int = 2) -> tuple[float, float]:
    """(samples/s, seconds/step) of the trainer's own loop body: next prefetched batch, step."""
    for _ in range(warmup):
        trainer.train_step(trainer.next_batch().batches)
    samples, started = 0, time.perf_counter()
    for _ in range(steps):
        samples += trainer.train_step(trainer.next_batch().batches).samples
    seconds = time.perf_counter() - started
    return samples / seconds, seconds / steps


def corpus_clips(settings, ids: set[str]) -> list:
    """The cleaned 24 kHz audio of the given rows, as preprocessing saw it before Mimi."""
    from preprocess.prepare import Prepared, prepare
    from trainer.notebook_baseline import Clip

    source = input_store(None, settings)
    speakers: dict[str, int] = {}
    clips = []
    for row in read_manifest(source):
        if getattr(row, "id", None) in ids:
            prepared = prepare((row, source.url, None, settings.preprocess, None))
            if isinstance(prepared, Prepared):
                clips.append(Clip(speakers.setdefault(row.speaker_id, len(speakers)), row.text, prepared.audio))
    return clips


def notebook_rate(trainer, clips: list, batch: int, steps: int) -> float:
    from trainer.notebook_baseline import NotebookStep, samples_per_second

    step = NotebookStep(trainer.model, trainer.tokenizer, trainer.optimizer, trainer.params,
                        trainer.settings.train.grad_clip, trainer.device)
    batches = [[clips[(i * batch + j) % len(clips)] for j in range(batch)] for i in range(steps + 1)]
    return samples_per_second(step, batches, warmup=1)


@pytest.fixture(scope="module")
def s3_store(preprocessed_store, s3_endpoint) -> str:
    return upload_store(preprocessed_store, s3_endpoint)


@pytest.fixture(scope="module")
def tiny_trainer(s3_store, s3_endpoint, cache_dir):
    """The phase-1 trainer on the tiny model, streaming the sample corpus from S3, and its rate."""
    from trainer.train import PhaseTrainer

    trainer = PhaseTrainer(bench_settings(s3_store, s3_endpoint, cache_dir), 1, progress=False, max_steps=10_000)
    trainer.setup()
    trainer.rate, trainer.step_s = steps_per_second(trainer, steps=30)
    yield trainer
    trainer.cleanup()


def test_our_step_against_the_notebook_recipe(tiny_trainer, table):
    from trainer.data import first_samples

    ids = {s.id for s in first_samples(tiny_trainer.run, "data/phase1/train", 10_000,
                                       tiny_trainer.settings.cache_dir / "streaming")}
    notebook = notebook_rate(tiny_trainer, corpus_clips(tiny_trainer.settings, ids), 4, steps=4)
    ratio = tiny_trainer.rate / notebook
    table.add("trainer step vs notebook recipe (tiny, batch 4)", f"{tiny_trainer.rate:.1f} samples/s",
              f"{notebook:.2f} samples/s", ratio, ">= 2x", ratio >= 2)
    assert ratio >= 2, (tiny_trainer.rate, notebook)


def test_the_loader_streams_from_s3_far_faster_than_training_consumes(tiny_trainer, s3_endpoint, tmp_path, table):
    from trainer.data import Prefetcher, ShardStream
    from trainer.loss import build_batch

    t = tiny_trainer
    # A cold start: a new local cache, so the shards are downloaded from the S3 server while timed.
    stream = ShardStream(t.run, [("data/phase1/train", 1.0)], 4, 99, tmp_path / "cold",
                         length=t._row_length, context_share=0.0)
    make = lambda d: build_batch(d.samples, t.tokenizer, t.model.config, t.speaker_index, contexts=d.contexts)  # noqa: E731
    batches = Prefetcher(stream.drawn(), make, depth=0)
    try:
        started, samples = time.perf_counter(), 0
        for _ in range(60):
            samples += next(batches).rows
        rate = samples / (time.perf_counter() - started)
    finally:
        batches.close()
        stream.close()
    ratio = rate / t.rate
    table.add("data loader from S3 (cold cache, built batches) vs trainer consumption (tiny)",
              f"{rate:.0f} samples/s", f"{t.rate:.1f} samples/s", ratio, ">= 10x", ratio >= 10)
    assert ratio >= 10, (rate, t.rate)


def test_checkpoints_cost_little_of_training_time(tiny_trainer, table):
    t = tiny_trainer
    seconds = []
    for _ in range(3):
        t.step += 1  # each save is a new checkpoint, as in training
        started = time.perf_counter()
        t.save_checkpoint()
        seconds.append(time.perf_counter() - started)
    save_s = statistics.median(seconds)
    every = t.settings.train.checkpoint_every
    share = save_s / (every * t.step_s + save_s)
    table.add(f"checkpoint save + upload to S3 per {every} steps (tiny)", f"{save_s:.2f} s ({share:.2%} of the time)",
              f"{every * t.step_s:.1f} s of steps", share, "< 2 % of training time", share < 0.02)
    assert share < 0.02, (save_s, t.step_s)


def _run_until_first_step(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, float, list[str]]:
    """Start the trainer; seconds until it logs its first step (the process keeps running)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: list[str] = []
    first = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if STEP_LINE.search(line):
                first.set()
        first.set()  # the process ended

    threading.Thread(target=read, daemon=True).start()
    assert first.wait(timeout=3600), "no step within an hour: the trainer hangs"  # only fails a hung run
    assert proc.poll() is None or any(STEP_LINE.search(x) for x in lines), "".join(lines[-30:])
    return proc, time.monotonic() - started, lines


def resume_seconds(settings, checkpoint_at: int) -> tuple[float, float]:
    """(first start to first step, restart after SIGKILL to its first step), in seconds."""
    from infra.storage import Store

    cmd = [PYTHON, "-m", "trainer", "train", "--phase", "1", "--no-progress"]
    env = subprocess_env(settings, SUARA_TRAIN__CHECKPOINT_EVERY=str(checkpoint_at), SUARA_MODEL=settings.model,
                         SUARA_CODEC=settings.codec)
    proc, cold_s, _ = _run_until_first_step(cmd, env)
    run = Store.for_run(settings)
    key = f"checkpoints/phase1/step_{checkpoint_at:06d}/manifest.json"
    while not run.exists(key):  # wait for the checkpoint: progress, not a clock
        assert proc.poll() is None, "the trainer ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again, resume_s, lines = _run_until_first_step(cmd, env)
    again.send_signal(signal.SIGKILL)
    again.wait()
    assert any(f"resumed phase1 from step {checkpoint_at}" in x for x in lines), "".join(lines[-30:])
    return cold_s, resume_s


def test_resume_after_sigkill_reaches_its_first_step_quickly(preprocessed_store, s3_endpoint, cache_dir, table):
    settings = bench_settings(upload_store(preprocessed_store, s3_endpoint), s3_endpoint, cache_dir)
    cold_s, resume_s = resume_seconds(settings, checkpoint_at=4)
    table.add("resume to first step after SIGKILL (tiny, S3)", f"{resume_s:.1f} s", f"{cold_s:.1f} s first start",
              resume_s / cold_s, "< 60 s", resume_s < 60)
    assert resume_s < 60


# -- the real shape (make bench REAL=1) -----------------------------------------------------------
real_shape = pytest.mark.skipif("not config.getoption('--real-shape')", reason="make bench REAL=1 measures these")
REAL_CACHE = Path.home() / ".cache" / "suara"  # the settings' default: the 1.6 B-parameter bundle is built once


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> str:
    """The sample corpus preprocessed with the random kyutai/mimi-shaped codec (32 codebooks)."""
    from infra.models import RANDOM_CSM, RANDOM_MIMI
    from infra.settings import load_settings
    from preprocess.pipeline import run

    root = tmp_path_factory.mktemp("real-store")
    settings = load_settings(store=f"file://{root}", cache_dir=REAL_CACHE, run_id="shared", model=RANDOM_CSM,
                             codec=RANDOM_MIMI)
    run(settings, input_store(None, settings), progress=False)
    return settings.store


def real_settings(store: str, **overrides):
    from infra.models import RANDOM_CSM, RANDOM_MIMI

    plan = tiny_plan(10_000, batch_size=2)
    return bench_settings(store, None, REAL_CACHE, model=RANDOM_CSM, codec=RANDOM_MIMI,
                          train={"phases": plan, **overrides.pop("train", {})}, **overrides)


@real_shape
def test_real_shape_step_against_the_notebook_recipe(real_store, table):
    import gc

    from trainer.data import first_samples
    from trainer.train import PhaseTrainer

    trainer = PhaseTrainer(real_settings(real_store), 1, progress=False, max_steps=10_000)
    try:
        trainer.setup()
        ours, step_s = steps_per_second(trainer, steps=3, warmup=1)
        started = time.perf_counter()
        trainer.step += 1
        trainer.save_checkpoint()
        save_s = time.perf_counter() - started
        ids = {s.id for s in first_samples(trainer.run, "data/phase1/train", 10_000,
                                           trainer.settings.cache_dir / "streaming")}
        notebook = notebook_rate(trainer, corpus_clips(trainer.settings, ids), 2, steps=3)
    finally:
        trainer.cleanup()
        del trainer
        gc.collect()
    table.add("trainer step vs notebook recipe (real shape, CPU, batch 2)", f"{ours:.3f} samples/s",
              f"{notebook:.3f} samples/s", ours / notebook, "report")
    every = 100
    table.add(f"checkpoint save per {every} steps (real shape, CPU, local store)",
              f"{save_s:.1f} s ({save_s / (every * step_s + save_s):.2%} of the time)",
              f"{every * step_s:.0f} s of steps", save_s / (every * step_s + save_s), "report")


@real_shape
def test_real_shape_resume_after_sigkill(real_store, tmp_path, table):
    from tests.conftest import copy_store

    settings = real_settings(copy_store(real_store, tmp_path / "store"))
    cold_s, resume_s = resume_seconds(settings, checkpoint_at=1)
    table.add("resume to first step after SIGKILL (real shape, CPU)", f"{resume_s:.0f} s",
              f"{cold_s:.0f} s first start", resume_s / cold_s, "report")


def test_environment_of_these_figures(table):
    """Last: where the figures were measured (they are ratios of runs on this one machine)."""
    import torch

    table.add("machine", f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
              f"load average {os.getloadavg()[0]:.1f}")
