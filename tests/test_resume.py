"""Preemption: a killed or stopped trainer, run again, ends with the same adapter bit for bit.

Each trial trains phase 1 of the tiny model in a subprocess, interrupts it, runs the same command
again, and compares the final adapter's bytes with an uninterrupted run's.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from infra.storage import Store
from tests.conftest import PYTHON, copy_store, subprocess_env
from tests.supervisor import Preemption, Supervisor
from trainer import exit_codes
from trainer.checkpoint import Checkpoints

STEPS, EVERY = 40, 4


@pytest.fixture(scope="module")
def reference(preprocessed_store, tmp_path_factory, cache_dir):
    """The uninterrupted run's adapter bytes (once per module)."""
    settings = _settings(preprocessed_store, tmp_path_factory.mktemp("reference"), cache_dir)
    subprocess.run(train_cmd(), env=subprocess_env(settings), check=True, capture_output=True)
    return adapter_bytes(settings)


def _settings(preprocessed_store, root: Path, cache_dir):
    from infra.settings import load_settings
    from tests.conftest import tiny_plan

    return load_settings(store=copy_store(preprocessed_store, root / "store"), run_id="shared", cache_dir=cache_dir,
                         train={"phases": tiny_plan(STEPS), "checkpoint_every": EVERY, "log_every": 1},
                         logging={"wandb_mode": "disabled", "val_every": 0})


@pytest.fixture
def interrupted(preprocessed_store, tmp_path, cache_dir):
    return _settings(preprocessed_store, tmp_path, cache_dir)


def train_cmd():
    return [PYTHON, "-m", "trainer", "train", "--phase", "1", "--no-progress"]


def adapter_bytes(settings) -> bytes:
    return Store.for_run(settings).get_bytes("adapters/phase1/adapter_model.safetensors")


def checkpoints(settings) -> list[int]:
    return Checkpoints(Store.for_run(settings), "phase1", 3).steps()


def wait_for_checkpoint(settings, step: int, proc: subprocess.Popen, timeout_s: float = 900) -> None:
    key = f"checkpoints/phase1/step_{step:06d}/manifest.json"
    run = Store.for_run(settings)
    deadline = time.monotonic() + timeout_s
    while not run.exists(key):
        assert proc.poll() is None, f"trainer exited early: {proc.returncode}"
        assert time.monotonic() < deadline, "no checkpoint: the trainer hangs"
        time.sleep(0.005)


def last_logged_step(stderr: str) -> int:
    steps = re.findall(r"phase1 step (\d+)/", stderr)
    return int(steps[-1]) if steps else 0


def resume_and_compare(settings, reference: bytes) -> str:
    rerun = subprocess.run(train_cmd(), env=subprocess_env(settings), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert adapter_bytes(settings) == reference
    return rerun.stderr


def kill_trial(settings, reference: bytes, seed: int) -> None:
    rng = random.Random(seed)
    # A random step, anywhere in a checkpoint interval, with intervals left to run after it.
    target = rng.randrange(EVERY, STEPS - 2 * EVERY)
    killed = Supervisor(train_cmd(), subprocess_env(settings), exit_codes.RETRYABLE).attempt(
        Preemption(target, "SIGKILL"))
    assert killed.returncode == -signal.SIGKILL, "the trainer finished before it could be killed"
    trained = last_logged_step(killed.stderr)
    resumed_from = checkpoints(settings)[-1]
    assert trained >= target
    assert trained - resumed_from <= EVERY, (trained, resumed_from)  # lost at most one interval
    stderr = resume_and_compare(settings, reference)
    assert f"resumed phase1 from step {resumed_from}" in stderr


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_a_random_step_then_rerun_gives_the_same_adapter(interrupted, reference, seed):
    kill_trial(interrupted, reference, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5, 25))
def test_sigkill_many_more_random_trials(interrupted, reference, seed):
    kill_trial(interrupted, reference, seed)


def test_sigterm_checkpoints_the_current_step_and_loses_nothing(interrupted, reference):
    proc = subprocess.Popen(train_cmd(), env=subprocess_env(interrupted), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(interrupted, EVERY, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.PREEMPTED, err[-2000:]
    stopped_at = checkpoints(interrupted)[-1]
    assert stopped_at == last_logged_step(err)  # the step in progress was finished and saved
    assert f"at step {stopped_at} after a checkpoint" in err
    resume_and_compare(interrupted, reference)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(interrupted, reference):
    proc = subprocess.Popen(train_cmd(), env=subprocess_env(interrupted), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_checkpoint(interrupted, 3 * EVERY, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = checkpoints(interrupted)[-1]
    run = Store.for_run(interrupted)
    # As if the newest checkpoint had been committed and pointed at, then damaged (the kill may
    # have landed between its manifest and the pointer).
    run.put_json("checkpoints/phase1/latest.json", {"step": newest, "generation": None})
    key = f"checkpoints/phase1/step_{newest:06d}/weights/adapter_model.safetensors"
    run.put_bytes(key, run.get_bytes(key)[:100])  # a half-written upload
    stderr = resume_and_compare(interrupted, reference)
    assert f"skipping checkpoint step_{newest:06d}" in stderr
    assert f"resumed phase1 from step {newest - EVERY}" in stderr
