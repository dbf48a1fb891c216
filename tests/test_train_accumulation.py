"""Gradient accumulation: batch_size is the effective batch; k micro-batches give one batch's update,
and a trainer killed between micro-batches resumes to the same adapter bit for bit."""

from __future__ import annotations

import signal
import subprocess

import pytest
import torch

from infra.settings import SettingsError, load_settings
from infra.storage import Store
from tests.conftest import PYTHON, copy_store, subprocess_env, tiny_plan
from trainer.data import micro_batches
from trainer.train import PhaseTrainer

# Float32 on the CPU: the micro-batches' gradients differ from the whole batch's only by summation
# order and padding (a shorter micro-batch pads less), i.e. by rounding.
RTOL, ATOL = 1e-5, 1e-6


def test_a_batch_size_that_accumulation_does_not_divide_is_a_settings_error_saying_what_fits():
    with pytest.raises(SettingsError, match=r"train\.phases\.2: .*batch_size 6 is not divisible by "
                                            r"gradient_accumulation_steps 4.*\(1, 2, 3, 6\)"):
        load_settings(train={"phases": {"2": {"batch_size": 6, "gradient_accumulation_steps": 4}}})
    plan = load_settings(train={"phases": {"2": {"batch_size": 16, "gradient_accumulation_steps": 4}}}).train.phases[2]
    assert plan.micro_batch_size == 4


def test_micro_batches_keep_the_order_and_respect_size_and_frame_budget():
    from tests.conftest import shard_sample

    samples = [shard_sample(i, frames) for i, frames in enumerate([10, 12, 20, 40, 41, 90])]
    assert [[s.id for s in m] for m in micro_batches(samples, 2, None)] == [["u0", "u1"], ["u2", "u3"], ["u4", "u5"]]
    # 100 padded frames per forward pass: 2 x 41 fits, 2 x 90 does not; 90 alone still runs.
    cut = micro_batches(samples, 3, 100)
    assert [[s.frames for s in m] for m in cut] == [[10, 12, 20], [40, 41], [90]]


def test_k_micro_batches_give_the_gradient_and_loss_of_one_batch(store_with_data, make_settings):
    # No dropout: the comparison is of arithmetic, not of random masks drawn per forward pass. No
    # prefetch thread: the test draws the step's batch itself. Every target that can get a context
    # turn gets one: the contexts are drawn for the whole batch, whatever the split.
    settings = make_settings(store=store_with_data, run_id="shared", steps=4,
                             train={"lora": {"dropout": 0.0}, "prefetch_batches": 0, "context_share": 1.0})
    trainer = PhaseTrainer(settings, 1, progress=False)
    try:
        trainer.setup()
        drawn = next(trainer.stream.drawn())
        assert len(drawn.samples) == 4 and len({s.frames for s in drawn.samples}) > 1  # micro-batches differ

        def built(micro: int) -> list:
            trainer.micro_batch_size = micro
            batches = trainer._prepare(drawn).batches
            assert [b.rows for b in batches] == [micro] * (4 // micro)
            return batches

        def gradients(micro: int) -> tuple[list[torch.Tensor], float]:
            parts, rows, _ = trainer.accumulate_gradients(built(micro))
            assert rows == 4
            grads = [p.grad.detach().clone() for p in trainer.params]
            trainer.optimizer.zero_grad(set_to_none=True)
            return grads, float(parts.loss.detach())

        whole, whole_loss = gradients(4)
        for micro in (2, 1):  # accumulation 2 and 4
            grads, loss = gradients(micro)
            assert loss == pytest.approx(whole_loss, rel=RTOL)
            for g, w in zip(grads, whole, strict=True):
                torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL)

        # The tolerance is far tighter than the error of averaging micro-batch losses unweighted
        # (what a plain `loss / k` would do): that gradient fails it.
        from trainer.loss import weighted_csm_loss

        for batch in built(1):
            (weighted_csm_loss(trainer.model, batch).loss / 4).backward()
        naive = [p.grad.detach().clone() for p in trainer.params]
        with pytest.raises(AssertionError):
            for g, w in zip(naive, whole, strict=True):
                torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL)
    finally:
        trainer.cleanup()


def test_an_accumulating_phase_logs_and_checkpoints_once_per_optimizer_step(store_with_data, make_settings):
    settings = make_settings(store=store_with_data, run_id="shared", steps=6,
                             train={"phases": {"1": {"gradient_accumulation_steps": 2}}, "log_every": 1})
    trainer = PhaseTrainer(settings, 1, progress=False, checkpoint_every=3)
    try:
        trainer.setup()
        assert trainer.micro_batch_size == 2
        assert trainer.train() == 0
    finally:
        trainer.cleanup()
    assert len(trainer.losses) == 6  # one loss per optimizer step, not per micro-batch
    run = Store.for_run(settings)
    assert sorted(k.split("/")[2] for k in run.list("checkpoints/phase1") if k.endswith("/manifest.json")) == \
        ["step_000003", "step_000006"]
    assert run.get_json("checkpoints/phase1/step_000006/state.json")["loader"]["used"] > 0


# -- SIGKILL between micro-batches ---------------------------------------------------------------
STEPS, EVERY, KILL_STEP = 8, 4, 7


def _settings(preprocessed_store, root, cache_dir):
    plan = tiny_plan(STEPS)
    plan["1"]["gradient_accumulation_steps"] = 2
    return load_settings(store=copy_store(preprocessed_store, root / "store"), run_id="shared", cache_dir=cache_dir,
                         train={"phases": plan, "checkpoint_every": EVERY, "log_every": 1},
                         logging={"wandb_mode": "disabled", "val_every": 0})


def _train(settings, **env) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "trainer", "train", "--phase", "1", "--no-progress"],
                          env=subprocess_env(settings, **env), capture_output=True, text=True)


def _adapter(settings) -> bytes:
    return Store.for_run(settings).get_bytes("adapters/phase1/adapter_model.safetensors")


def test_sigkill_after_the_first_micro_batch_of_a_step_resumes_to_the_same_adapter(preprocessed_store,
                                                                                    tmp_path, cache_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reference = _settings(preprocessed_store, tmp_path / "reference", cache_dir)
    done = _train(reference)
    assert done.returncode == 0, done.stderr[-3000:]

    interrupted = _settings(preprocessed_store, tmp_path / "interrupted", cache_dir)
    # The trainer kills itself right after micro-batch 1 of 2 of step 7: half a step's gradients.
    killed = _train(interrupted, SUARA_FAULTS__SIGKILL_AT_STEP=str(KILL_STEP),
                    SUARA_FAULTS__SIGKILL_AFTER_MICRO_BATCH="1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"SIGKILL after micro-batch 1 of step {KILL_STEP}" in killed.stderr
    assert f"phase1 step {KILL_STEP - 1}/" in killed.stderr and f"phase1 step {KILL_STEP}/" not in killed.stderr

    resumed = _train(interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed phase1 from step {EVERY}" in resumed.stderr
    assert _adapter(interrupted) == _adapter(reference)

    # TensorBoard: the killed attempt left its steps up to the checkpoint, the resumed one the rest.
    events = tmp_path / "interrupted" / "store" / "runs" / "shared" / "tensorboard" / "phase1"
    assert len(list(events.glob("events.out.tfevents.*"))) == 2
    acc = EventAccumulator(str(events))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, STEPS + 1))
