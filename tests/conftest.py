"""Shared fixtures: a real S3-compatible server on 127.0.0.1, one tiny-model cache, settings."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
BUCKET = "suara-test"


def pytest_addoption(parser):
    parser.addoption("--real-shape", action="store_true",
                     help="benchmarks: add the rows measured on the full-size random CSM-1B (minutes, ~12 GB)")


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    """Tests see only the settings they set: a developer's SUARA_* variables are removed."""
    for name in list(os.environ):
        if name.startswith("SUARA_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (tiny CSM bundle, streaming scratch) for the whole session."""
    return tmp_path_factory.mktemp("suara-cache")


@pytest.fixture(scope="session")
def s3_endpoint():
    from infra.s3server import local_s3

    with local_s3(BUCKET) as url:
        yield url


def tiny_plan(steps: int = 12, lr: float = 2e-3, batch_size: int = 4) -> dict:
    return {str(p): {"lr": lr, "max_steps": steps, "warmup_steps": 1, "batch_size": batch_size}
            for p in (1, 2, 3, 4)}


@pytest.fixture
def make_settings(tmp_path, cache_dir):
    """Settings on a fresh local store (or `store=`), the shared cache, small phases."""
    from infra.settings import load_settings

    def make(store: str | None = None, s3_endpoint_url: str | None = None, steps: int = 12, **overrides):
        # Best-checkpoint scoring (validation at every checkpoint) is off unless a test is about it.
        train = _deep_merge({"phases": tiny_plan(steps), "checkpoint_every": 4, "keep_best_checkpoints": 0},
                            overrides.pop("train", {}))
        # W&B and TensorBoard are off unless a test is about logging: they cost seconds per trainer.
        logging = {"wandb_mode": "disabled", "tensorboard": False, "val_every": 0, **overrides.pop("logging", {})}
        return load_settings(
            store=store or f"file://{tmp_path / 'store'}", s3_endpoint_url=s3_endpoint_url,
            cache_dir=cache_dir, run_id=overrides.pop("run_id", "test"), train=train, logging=logging,
            **overrides,
        )

    return make


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def subprocess_env(settings, **extra: str) -> dict[str, str]:
    """Environment that makes `python -m ...` children see the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUARA_")}
    env.update({
        "SUARA_STORE": settings.store,
        "SUARA_RUN_ID": settings.run_id,
        "SUARA_CACHE_DIR": str(settings.cache_dir),
        "SUARA_SEED": str(settings.seed),
        "SUARA_TRAIN__CHECKPOINT_EVERY": str(settings.train.checkpoint_every),
        "SUARA_TRAIN__LOG_EVERY": str(settings.train.log_every),
        "SUARA_TRAIN__STALL_TIMEOUT_S": str(settings.train.stall_timeout_s),
        "SUARA_TRAIN__KEEP_BEST_CHECKPOINTS": str(settings.train.keep_best_checkpoints),
        "SUARA_LOGGING__WANDB_MODE": settings.logging.wandb_mode,
        "SUARA_LOGGING__VAL_EVERY": str(settings.logging.val_every),
        "PYTHONUNBUFFERED": "1",
    })
    for phase, plan in settings.train.phases.items():
        for key, value in plan.model_dump().items():
            if isinstance(value, dict):  # early_stopping: one variable per field
                env.update({f"SUARA_TRAIN__PHASES__{phase}__{key.upper()}__{k.upper()}": str(v)
                            for k, v in value.items()})
            elif value is not None:
                env[f"SUARA_TRAIN__PHASES__{phase}__{key.upper()}"] = str(value)
    env["SUARA_LOGGING__TENSORBOARD"] = str(settings.logging.tensorboard)
    if settings.s3_endpoint_url:
        env["SUARA_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    env.update(extra)
    return env


PYTHON = sys.executable


def shard_sample(i: int, frames: int, speaker: str = "s", normalized: str = "Okay lah", codebooks: int = 8,
                 **fields):
    """A training sample with random codes (seeded by `i`) and empty masks; `fields` override."""
    import numpy as np

    from preprocess.shards import ShardSample

    rng = np.random.default_rng(i)
    zeros = np.zeros(frames, np.uint8)
    base = {"id": f"u{i}", "speaker_id": speaker, "text": normalized, "normalized": normalized, "words": [],
            "switches": [], "phase": 1, "split": "train", "duration_s": frames / 12.5,
            "codes": rng.integers(0, 64, (frames, codebooks)).astype(np.int16), "particle_mask": zeros,
            "switch_mask": zeros, "f0_hz": np.zeros(frames, np.float32), "energy_db": np.zeros(frames, np.float32),
            "word_times": [], "aligner": "manifest"}
    return ShardSample(**{**base, **fields})


def small_corpus(dest: Path, ids: list[str]) -> Path:
    """A copy of some sample-corpus rows (and their audio) in `dest`."""
    import json

    rows = [json.loads(line) for line in (SAMPLE / "manifest.jsonl").read_text().splitlines()]
    chosen = [r for r in rows if r["id"] in set(ids)]
    (dest / "audio").mkdir(parents=True, exist_ok=True)
    for row in chosen:
        shutil.copy(SAMPLE / row["audio"], dest / row["audio"])
    (dest / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return dest


@pytest.fixture(scope="session")
def preprocessed_store(tmp_path_factory, cache_dir) -> str:
    """A local store with the whole sample corpus preprocessed (run id `shared`); read-only use."""
    from infra.settings import load_settings
    from preprocess.pipeline import input_store, run

    root = tmp_path_factory.mktemp("shared-store")
    settings = load_settings(store=f"file://{root}", cache_dir=cache_dir, run_id="shared")
    run(settings, input_store(None, settings), progress=False)
    return settings.store


def copy_store(store_url: str, dest: Path) -> str:
    """A private copy of a local (`file://`) store at `dest`; its URL."""
    shutil.copytree(Path(store_url.removeprefix("file://")), dest)
    return f"file://{dest}"


@pytest.fixture
def store_with_data(preprocessed_store, tmp_path) -> str:
    """A private copy of the preprocessed sample corpus (run id `shared`) that a test may write to."""
    return copy_store(preprocessed_store, tmp_path / "store")


@pytest.fixture(scope="module")
def tiny(cache_dir):
    """The tiny random CSM (eval mode) and its tokenizer."""
    from transformers import AutoTokenizer, CsmForConditionalGeneration

    from infra.models import tiny_bundle

    path = tiny_bundle(cache_dir)
    return CsmForConditionalGeneration.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def published_store(preprocessed_store, tmp_path_factory, cache_dir) -> str:
    """A copy of the preprocessed store (run id `shared`) with every phase's adapter published after two
    real training steps (phase 4: speaker_01 and speaker_02); read-only use (copy_store to write)."""
    import torch

    from infra.settings import load_settings

    store = copy_store(preprocessed_store, tmp_path_factory.mktemp("published") / "store")
    settings = load_settings(store=store, cache_dir=cache_dir, run_id="shared",
                             train={"phases": tiny_plan(steps=2, batch_size=2), "checkpoint_every": 4},
                             logging={"wandb_mode": "disabled", "val_every": 0})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and far faster on a busy machine
    try:
        train_every_phase(settings)
    finally:
        torch.set_num_threads(threads)
    return store


def train_phase(settings, phase: int, speaker: str | None = None, **options):
    """Train one phase in process to a clean exit; returns the (cleaned-up) trainer to inspect."""
    from trainer.train import PhaseTrainer

    trainer = PhaseTrainer(settings, phase, speaker, progress=False, **options)
    try:
        trainer.setup()
        assert trainer.train() == 0
    finally:
        trainer.cleanup()
    return trainer


def train_every_phase(settings) -> None:
    """Phases 1-3 and phase 4 for both sample speakers, in process, each to a clean exit."""
    for phase, speaker in [(1, None), (2, None), (3, None), (4, "speaker_01"), (4, "speaker_02")]:
        train_phase(settings, phase, speaker)
