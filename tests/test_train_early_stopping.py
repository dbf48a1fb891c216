"""Early stopping: a phase whose validation figure stops improving ends, and its best checkpoint
becomes the phase's adapter; it says so in the log, the events and the adapter's metadata."""

from __future__ import annotations

import logging
import math

import pytest

from infra.settings import EarlyStopping as EarlyStoppingSettings
from infra.settings import SettingsError, load_settings
from infra.storage import Store
from tests.conftest import train_phase
from trainer.checkpoint import Checkpoints
from trainer.early_stopping import EarlyStopping, Verdict
from trainer.train import PhaseTrainer

UP, W, S, A = Verdict.IMPROVED, Verdict.WAITING, Verdict.STOP, Verdict.ABSENT


def _judge(stopping: EarlyStopping, sequence: list[tuple[int, float | None]]) -> list[Verdict]:
    return [stopping.observe(step, {} if value is None else {stopping.metric: value}) for step, value in sequence]


def test_min_mode_stops_once_the_best_is_patience_steps_old():
    stopping = EarlyStopping("val/loss", "min", patience_steps=4)
    verdicts = _judge(stopping, [(2, 5.0), (4, 4.0), (6, 4.5), (8, 3.9), (10, 4.0), (12, 3.9)])
    # 3.9 again at step 12 is not better than 3.9: the best stays step 8, and 12 - 8 = 4 is patience.
    assert verdicts == [UP, UP, W, UP, W, S]
    assert (stopping.best_step, stopping.best_value, stopping.stopped_at) == (8, 3.9, 12)


def test_max_mode_counts_a_higher_figure_as_better():
    stopping = EarlyStopping("val/score", "max", patience_steps=3)
    assert _judge(stopping, [(1, 0.5), (2, 0.4), (3, 0.6), (4, 0.6), (5, 0.59), (6, 0.1)]) == [UP, W, UP, W, W, S]
    assert stopping.best_step == 3


def test_a_missing_figure_is_absent_and_a_nan_never_improves_but_uses_patience():
    stopping = EarlyStopping("val/particle", "min", patience_steps=2)
    assert _judge(stopping, [(1, None), (2, 3.0), (3, math.nan), (4, math.nan)]) == [A, UP, W, S]
    assert stopping.best_value == 3.0


def test_progress_survives_a_checkpoint_unless_the_watched_figure_changed():
    stopping = EarlyStopping("val/loss", "min", patience_steps=5)
    _judge(stopping, [(2, 3.0), (4, 2.5)])
    again = EarlyStopping("val/loss", "min", patience_steps=5)
    again.load_state_dict(stopping.state_dict())
    # The best (2.5 at step 4) came along: step 9 is 5 steps after it.
    assert _judge(again, [(6, 2.6), (8, 2.7), (9, 2.6)]) == [W, W, S]
    other = EarlyStopping("val/particle", "min", patience_steps=5)
    other.load_state_dict(stopping.state_dict())
    assert other.best_step is None


def test_early_stopping_is_off_by_default_and_needs_validation():
    assert all(plan.early_stopping is None for plan in load_settings().train.phases.values())
    plan = load_settings(train={"phases": {"3": {"early_stopping": {"patience_steps": 200}}}}).train.phases[3]
    assert plan.early_stopping == EarlyStoppingSettings(metric="val/loss", patience_steps=200, mode="min")
    with pytest.raises(SettingsError, match="logging.val_every is 0.*SUARA_LOGGING__VAL_EVERY"):
        load_settings(logging={"val_every": 0}, train={"phases": {"3": {"early_stopping": {"patience_steps": 9}}}})


def test_an_unknown_figure_is_refused_naming_the_ones_validation_produces(make_settings):
    settings = make_settings(logging={"val_every": 2},
                             train={"phases": {"1": {"early_stopping": {"metric": "val/los", "patience_steps": 2}}}})
    with pytest.raises(ValueError, match="'val/los' is not a figure validation produces; use one of val/loss, "
                                         "val/single_language"):
        PhaseTrainer(settings, 1)


def test_a_real_phase_stops_early_and_publishes_its_best_checkpoint(store_with_data, make_settings, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # The loss falls while the tiny model trains, so watched with mode max its first validation is the
    # best, and patience (4 steps = 2 validations) runs out long before max_steps.
    stopping = {"metric": "val/loss", "mode": "max", "patience_steps": 4}
    settings = make_settings(store=store_with_data, run_id="shared", steps=30,
                             logging={"val_every": 2, "val_batches": 1, "tensorboard": True},
                             train={"phases": {"1": {"early_stopping": stopping}}, "checkpoint_every": 100,
                                    "keep_last_checkpoints": 1})
    caplog.set_level(logging.INFO)
    trainer = train_phase(settings, 1)
    run = Store.for_run(settings)
    state = trainer.early_stopping
    assert state.stopped_at == trainer.step < 30
    assert state.stopped_at - state.best_step >= 4

    # The validation figures, read back from the TensorBoard events in the store.
    acc = EventAccumulator(str(run.uri("tensorboard/phase1")))
    acc.Reload()
    figures = {e.step: e.value for e in acc.Scalars("val/loss")}
    assert sorted(figures) == list(range(2, state.stopped_at + 1, 2))
    assert state.best_step == max(figures, key=lambda s: (figures[s], -s))  # the first of the highest
    assert state.best_value == pytest.approx(figures[state.best_step])
    assert [e.step for e in acc.Scalars("early_stopping/best_step")] == [state.stopped_at]
    assert "early_stopping/text_summary" in acc.Tags()["tensors"]

    # The best checkpoint survived pruning (keep_last 1) and is, byte for byte, the phase's adapter.
    ckpts = Checkpoints(run, "phase1", keep_last=1)
    assert set(ckpts.steps()) == {state.best_step, state.stopped_at}
    weights = "weights/adapter_model.safetensors"
    assert run.get_bytes("adapters/phase1/adapter_model.safetensors") == \
        run.get_bytes(f"checkpoints/phase1/step_{state.best_step:06d}/{weights}")
    manifest = run.get_json("adapters/phase1/manifest.json")
    assert manifest["steps"] == state.best_step and manifest["complete"] is True
    assert manifest["early_stopping"] == {"metric": "val/loss", "mode": "max", "patience_steps": 4,
                                          "best_step": state.best_step, "best_value": state.best_value,
                                          "stopped_at": state.stopped_at, "published_step": state.best_step}
    assert f"early stopping at step {state.stopped_at} of 30: val/loss has not improved for 4 steps" in caplog.text

    # Running the phase again finds it stopped: no more training, the same adapter.
    caplog.clear()
    again = PhaseTrainer(settings, 1, progress=False)
    try:
        again.setup()
        assert again.train() == 0 and again.step == state.stopped_at
    finally:
        again.cleanup()
    assert f"phase1 stopped early at step {state.stopped_at}" in caplog.text
    assert run.get_json("adapters/phase1/manifest.json")["steps"] == state.best_step
