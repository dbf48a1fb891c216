"""Preemption: a killed or stopped trainer, run again, ends with the same adapter bit for bit."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from infra.storage import Store
from tests.conftest import PYTHON, subprocess_env
from trainer import exit_codes
from trainer.checkpoint import Checkpoints

STEPS, EVERY = 40, 4


@pytest.fixture
def runs(preprocessed_store, tmp_path, make_settings):
    """Two private copies of the preprocessed corpus: one for the reference run, one to interrupt."""
    src = Path(preprocessed_store.removeprefix("file://"))
    made = []
    for name in ("reference", "interrupted"):
        shutil.copytree(src, tmp_path / name)
        made.append(make_settings(store=f"file://{tmp_path / name}", run_id="shared", steps=STEPS,
                                  train={"checkpoint_every": EVERY}))
    return made


def train_cmd():
    return [PYTHON, "-m", "trainer", "train", "--phase", "1", "--no-progress"]


def adapter_bytes(settings) -> bytes:
    run = Store(settings.store).child(settings.run_prefix)
    return run.get_bytes("adapters/phase1/adapter_model.safetensors")


def wait_for_checkpoint(settings, step: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    key = f"checkpoints/phase1/step_{step:06d}/manifest.json"
    run = Store(settings.store).child(settings.run_prefix)
    deadline = time.monotonic() + timeout_s
    while not run.exists(key):
        assert proc.poll() is None, f"trainer exited early: {proc.returncode}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


def test_sigkill_mid_phase_then_rerun_gives_the_same_adapter(runs):
    reference, interrupted = runs
    subprocess.run(train_cmd(), env=subprocess_env(reference), check=True, capture_output=True)

    proc = subprocess.Popen(train_cmd(), env=subprocess_env(interrupted),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(interrupted, 2 * EVERY, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    run = Store(interrupted.store).child(interrupted.run_prefix)
    assert not run.exists("adapters/phase1/manifest.json")  # it really died mid-phase
    resumed_from = Checkpoints(run, "phase1", 3).steps()[-1]
    assert 2 * EVERY <= resumed_from < STEPS

    rerun = subprocess.run(train_cmd(), env=subprocess_env(interrupted), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resumed phase1 from step {resumed_from}" in rerun.stderr
    assert adapter_bytes(interrupted) == adapter_bytes(reference)


def test_sigterm_checkpoints_the_current_step_and_exits_retryable(runs):
    reference, interrupted = runs
    subprocess.run(train_cmd(), env=subprocess_env(reference), check=True, capture_output=True)

    proc = subprocess.Popen(train_cmd(), env=subprocess_env(interrupted),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(interrupted, EVERY, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.PREEMPTED, err[-2000:]
    run = Store(interrupted.store).child(interrupted.run_prefix)
    stopped_at = Checkpoints(run, "phase1", 3).steps()[-1]
    assert f"at step {stopped_at} after a checkpoint" in err  # no step lost

    subprocess.run(train_cmd(), env=subprocess_env(interrupted), check=True, capture_output=True)
    assert adapter_bytes(interrupted) == adapter_bytes(reference)
