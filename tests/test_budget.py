"""The budget guard: spend counts across restarts, caps stop training cleanly, tested with a fake clock."""

from __future__ import annotations

import pytest

from infra.settings import BudgetSettings
from infra.storage import Store
from trainer import exit_codes
from trainer.budget import BudgetGuard, read_ledger
from trainer.checkpoint import Checkpoints
from trainer.train import PhaseTrainer


class FakeClock:
    def __init__(self, step_s: float = 0.0):
        self.now = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_spend_is_hours_times_price_on_top_of_earlier_attempts():
    clock = FakeClock()
    guard = BudgetGuard(BudgetSettings(hourly_price_usd=0.5), "phase1", phase_cap_usd=None,
                        spent_before=1.25, spent_elsewhere=0.0, clock=clock)
    clock.advance(2 * 3600)
    assert guard.spent == pytest.approx(2.25)


def test_phase_cap_and_campaign_cap_each_stop_training():
    clock = FakeClock()
    guard = BudgetGuard(BudgetSettings(hourly_price_usd=1.0, max_cost_usd=10.0), "phase2", phase_cap_usd=3.0,
                        spent_before=0.0, spent_elsewhere=6.5, clock=clock)
    clock.advance(2.9 * 3600)
    assert guard.exhausted() is None
    clock.advance(0.2 * 3600)
    assert "phase2 spent $3.10 of its $3.00 cap" in guard.exhausted()
    campaign = BudgetGuard(BudgetSettings(hourly_price_usd=1.0, max_cost_usd=10.0), "phase3", phase_cap_usd=None,
                           spent_before=0.0, spent_elsewhere=9.5, clock=clock)
    clock.advance(0.6 * 3600)
    assert "campaign spent $10.10 of its $10.00 cap" in campaign.exhausted()


def test_a_checkpoint_interval_that_cannot_be_paid_for_is_refused():
    guard = BudgetGuard(BudgetSettings(hourly_price_usd=3.6), "phase1", phase_cap_usd=1.0,
                        spent_before=0.95, spent_elsewhere=0.0, clock=FakeClock())
    assert guard.cannot_afford(100) is not None  # $0.10 > $0.05 left
    assert guard.cannot_afford(10) is None  # $0.01


def run_phase(settings, clock, max_steps=None):
    trainer = PhaseTrainer(settings, 1, progress=False, clock=clock, max_steps=max_steps)
    # Each training step costs one simulated hour.
    try:
        trainer.setup()
        inner = trainer._batches

        def costly():
            for batch in inner:
                clock.advance(3600)
                yield batch

        trainer._batches = costly()
        return trainer, trainer.train()
    finally:
        trainer.cleanup()


def test_at_the_cap_the_trainer_checkpoints_publishes_and_exits_budget_exhausted(store_with_data, make_settings):
    settings = make_settings(store=store_with_data, run_id="shared", steps=20,
                             budget={"hourly_price_usd": 1.0, "seconds_per_step_estimate": 1.0},
                             train={"phases": {"1": {"max_cost_usd": 5.5}}, "checkpoint_every": 4})
    trainer, code = run_phase(settings, FakeClock())
    assert code == exit_codes.BUDGET_EXHAUSTED
    assert trainer.step == 6  # $6 spent after 6 one-hour steps: the first step at or past $5.50
    run = Store.for_run(settings)
    assert Checkpoints(run, "phase1", 3).steps()[-1] == 6
    manifest = run.get_json("adapters/phase1/manifest.json")
    assert manifest["complete"] is False and manifest["steps"] == 6
    assert read_ledger(run)["phase1"] == pytest.approx(6.0)

    # Run again: the spend survived the restart, so not one more interval is affordable.
    trainer, code = run_phase(settings, FakeClock())
    assert code == exit_codes.BUDGET_EXHAUSTED and trainer.step == 6


def test_spend_lost_since_the_last_checkpoint_is_counted_through_the_ledger(store_with_data, make_settings):
    settings = make_settings(store=store_with_data, run_id="shared", steps=20,
                             budget={"hourly_price_usd": 1.0, "heartbeat_s": 1.0},
                             train={"checkpoint_every": 10})
    run = Store.for_run(settings)
    trainer, code = run_phase(settings, FakeClock(), max_steps=20)
    assert code == 0
    # A killed attempt after the last checkpoint: the ledger says more than the checkpoint.
    run.put_json("spend/phase1.json", {"scope": "phase1", "usd": 25.0, "step": 20})
    other = PhaseTrainer(settings, 1, progress=False, clock=FakeClock())
    try:
        other.setup()
        assert other.budget.spent == pytest.approx(25.0)
    finally:
        other.cleanup()


# -- preprocessing: a ledger entry kept current while it runs ---------------------------------------

def test_the_heartbeat_refreshes_the_entry_while_the_block_runs_and_once_more_at_the_end(make_settings):
    import threading

    from infra.ledger import Heartbeat

    run = Store.for_run(make_settings())
    usd = [1.0]
    refreshed = threading.Event()

    def spent() -> float:
        if usd[0] > 1.0:
            refreshed.set()
        return usd[0]

    with Heartbeat(run, "preprocess/rank_000", spent, 0.5, every_s=0.01):
        assert read_ledger(run) == {"preprocess/rank_000": 1.0}  # written before any work
        usd[0] = 2.0
        assert refreshed.wait(600)  # a hang guard: the thread writes every 10 ms
    usd[0] = 3.0
    assert read_ledger(run) == {"preprocess/rank_000": 2.0}  # the block ended at 2.0; no write after it


def spend_of(run: Store, scope: str) -> float | None:
    from infra.ledger import ledger_key

    try:
        return float(run.get_json(ledger_key(scope))["usd"])
    except FileNotFoundError:
        return None


def test_a_killed_preprocessing_attempt_keeps_its_spend_and_the_rerun_adds_to_it(make_settings):
    import signal
    import subprocess
    import time

    from tests.conftest import PYTHON, subprocess_env

    settings = make_settings()
    run = Store.for_run(settings)
    # $1/h and an hour of provisioning per attempt: each attempt adds at least $1.
    env = subprocess_env(settings, SUARA_BUDGET__HOURLY_PRICE_USD="1", SUARA_BUDGET__PROVISION_SECONDS_ESTIMATE="3600",
                         SUARA_BUDGET__HEARTBEAT_S="0.01", SUARA_PREPROCESS__WORKERS="1")
    cmd = [PYTHON, "-m", "preprocess", "run", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[float] = set()
    deadline = time.monotonic() + 600  # a hang guard; the event is the entry changing while it runs
    while proc.poll() is None and len(seen) < 2 and time.monotonic() < deadline:
        usd = spend_of(run, "preprocess/rank_000")
        if usd is not None:
            seen.add(usd)
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(seen) >= 2  # refreshed while it ran
    killed = spend_of(run, "preprocess/rank_000")
    assert killed >= 1.0  # its provisioning and its minutes, counted though it never finished

    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert spend_of(run, "preprocess/rank_000") >= killed + 1.0  # added to, not overwritten


def test_preprocessing_does_not_start_once_the_campaign_cap_is_spent(make_settings):
    import subprocess

    from infra.ledger import write_entry
    from tests.conftest import PYTHON, subprocess_env

    settings = make_settings()
    write_entry(Store.for_run(settings), "phase1", 5.0, 1.0)
    out = subprocess.run([PYTHON, "-m", "preprocess", "run", "--no-progress"], capture_output=True, text=True,
                         env=subprocess_env(settings, SUARA_BUDGET__MAX_COST_USD="5"))
    assert out.returncode == exit_codes.BUDGET_EXHAUSTED and "$5.00 of its $5.00 cap" in out.stderr
    assert not Store.for_run(settings).exists("data/manifest.json")
