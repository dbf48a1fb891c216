"""Chaos under a local stand-in for managed-job recovery (tests/supervisor.py): random spot
preemptions at random points of training, restarts, a simulated hourly price, and the trainer's
exit codes deciding what is restarted."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from infra.settings import load_settings
from infra.storage import Store
from tests.conftest import PYTHON, copy_store, subprocess_env, tiny_plan
from tests.supervisor import Preemption, Supervisor, random_plan
from trainer import exit_codes

STEPS, EVERY = 60, 5
CMD = [PYTHON, "-m", "trainer", "train", "--phase", "1", "--no-progress"]


def settings_for(preprocessed_store, root: Path, cache_dir, **extra):
    return load_settings(store=copy_store(preprocessed_store, root / "store"), run_id="shared", cache_dir=cache_dir,
                         train={"phases": tiny_plan(STEPS), "checkpoint_every": EVERY, "log_every": 1},
                         logging={"wandb_mode": "disabled", "val_every": 0}, **extra)


def adapter(settings) -> bytes:
    return Store.for_run(settings).get_bytes("adapters/phase1/adapter_model.safetensors")


def last_step(stderr: str) -> int:
    found = re.findall(r"phase1 step (\d+)/", stderr)
    return int(found[-1]) if found else 0


def resumed_from(stderr: str) -> int:
    found = re.findall(r"resumed phase1 from step (\d+)", stderr)
    return int(found[-1]) if found else 0


@pytest.mark.parametrize("seed", [0, 1])
def test_random_preemptions_end_in_the_uninterrupted_adapter(preprocessed_store, tmp_path, cache_dir, seed):
    reference = settings_for(preprocessed_store, tmp_path / "ref", cache_dir)
    Supervisor(CMD, subprocess_env(reference), exit_codes.RETRYABLE).run()
    chaos = settings_for(preprocessed_store, tmp_path / "chaos", cache_dir)
    plan = random_plan(seed, count=3, steps=STEPS)
    run = Supervisor(CMD, subprocess_env(chaos), exit_codes.RETRYABLE, plan=plan).run()
    assert run.returncode == exit_codes.FINISHED
    assert [a.preempted_by for a in run.attempts] == [p.kind for p in plan] + [None]
    assert adapter(chaos) == adapter(reference)
    previous_kill = None
    # Steps lost to each preemption: what it had trained minus where the next attempt that got as
    # far as loading a checkpoint resumed (an attempt preempted while starting up loads none).
    reached = 0
    for attempt in run.attempts:
        if "resumed phase1" in attempt.stderr or "phase1 step" in attempt.stderr:
            lost = reached - resumed_from(attempt.stderr)
            assert lost <= (EVERY if previous_kill == "SIGKILL" else 0), (lost, previous_kill)
        if last_step(attempt.stderr):
            reached, previous_kill = last_step(attempt.stderr), attempt.preempted_by
        elif reached == 0:
            previous_kill = attempt.preempted_by


def _seconds_of_one_attempt(preprocessed_store, tmp_path, cache_dir) -> tuple[float, float]:
    """This machine's wall time for one short trainer attempt, and the part of it the trainer's own
    ledger does not see (interpreter start and exit): the budget test's unit of time, so that it
    holds on a fast machine and on a loaded one alike."""
    settings = settings_for(preprocessed_store, tmp_path / "calibrate", cache_dir)
    env = subprocess_env(settings, SUARA_TRAIN__PHASES__1__MAX_STEPS="6", SUARA_BUDGET__HOURLY_PRICE_USD="3600")
    attempt = Supervisor(CMD, env, exit_codes.RETRYABLE).run().attempts[0]
    assert attempt.returncode == 0, attempt.stderr[-2000:]
    ledger_s = Store.for_run(settings).get_json("spend/phase1.json")["usd"]  # $1/s at $3600/h
    return attempt.seconds, max(attempt.seconds - ledger_s, 0.0)


def test_spend_stays_within_the_cap_and_budget_exhaustion_is_not_restarted(preprocessed_store, tmp_path,
                                                                         cache_dir):
    wall_s, unseen_s = _seconds_of_one_attempt(preprocessed_store, tmp_path, cache_dir)
    price = 360.0  # $0.10 per second of simulated instance time
    # Room for the first attempt to start and train past the preemption at step 3, and for the
    # resumed one to start again and train until the cap stops it.
    cap = round(2.5 * wall_s * price / 3600, 2)
    settings = settings_for(preprocessed_store, tmp_path / "b", cache_dir,
                            budget={"hourly_price_usd": price, "max_cost_usd": cap, "heartbeat_s": 0.25,
                                    "seconds_per_step_estimate": 0.05, "startup_seconds_estimate": 0.0})
    env = subprocess_env(settings, SUARA_TRAIN__PHASES__1__MAX_STEPS="100000",
                         SUARA_BUDGET__HOURLY_PRICE_USD=str(price), SUARA_BUDGET__MAX_COST_USD=str(cap),
                         SUARA_BUDGET__HEARTBEAT_S="0.25", SUARA_BUDGET__SECONDS_PER_STEP_ESTIMATE="0.05",
                         SUARA_BUDGET__STARTUP_SECONDS_ESTIMATE="0")
    run = Supervisor(CMD, env, exit_codes.RETRYABLE, plan=[Preemption(3, "SIGKILL")], hourly_price_usd=price).run()
    assert run.returncode == exit_codes.BUDGET_EXHAUSTED
    assert run.attempts[-1].preempted_by is None  # the supervisor did not restart after it
    assert any("phase1 step" in a.stderr for a in run.attempts)  # it did train before stopping
    # Overshoot allowed: what each of the two attempts spends outside the trainer's sight
    # (interpreter start and exit, as measured above), what a kill loses before the ledger's next
    # heartbeat, and the last step with its checkpoint. Without the guard the run would go on for
    # its 100000 steps.
    slack_s = 2 * unseen_s + 0.25 + max(1.0, 0.1 * wall_s)
    assert run.spend_usd <= cap + slack_s * price / 3600, (run.spend_usd, cap, wall_s, unseen_s)
    ledger = Store.for_run(settings).get_json("spend/phase1.json")
    assert ledger["usd"] <= cap + max(1.0, 0.1 * wall_s) * price / 3600  # the trainer's own count agrees


@pytest.mark.parametrize(("codes", "attempts"), [
    ([exit_codes.FENCED], 1),
    ([exit_codes.BUDGET_EXHAUSTED], 1),
    ([exit_codes.USAGE_ERROR], 1),
    ([exit_codes.PREEMPTED, exit_codes.PREEMPTED, exit_codes.FINISHED], 3),
])
def test_only_retryable_exits_are_restarted(tmp_path, codes, attempts):
    counter = tmp_path / "n"
    script = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; "
              f"p.write_text(str(n + 1)); sys.exit({codes!r}[n])")
    run = Supervisor([sys.executable, "-c", script], {}, exit_codes.RETRYABLE).run()
    assert len(run.attempts) == attempts and run.returncode == codes[attempts - 1]
