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
