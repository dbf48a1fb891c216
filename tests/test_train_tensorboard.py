"""TensorBoard: every phase's scalars and audio land as event files in the run's store, and the
README's `pull-logs` + `tensorboard --logdir` reads them on a machine that never trained."""

from __future__ import annotations

import subprocess

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import PYTHON, subprocess_env
from trainer.train import AUDIO_PROMPTS, PhaseTrainer


def _train(settings, phase: int) -> None:
    trainer = PhaseTrainer(settings, phase, progress=False, checkpoint_every=2)
    try:
        trainer.setup()
        assert trainer.train() == 0
    finally:
        trainer.cleanup()


def test_pulled_events_hold_every_phases_scalars_and_audio(store_with_data, make_settings, tmp_path):
    settings = make_settings(store=store_with_data, run_id="shared", steps=4,
                             logging={"tensorboard": True, "val_every": 2, "val_batches": 1, "audio_every": 4,
                                      "audio_max_seconds": 0.2},
                             train={"log_every": 1, "phases": {"2": {"gradient_accumulation_steps": 2}}})
    _train(settings, 1)
    _train(settings, 2)

    # As the README says, on a machine with only the store.
    pulled = tmp_path / "tb"
    out = subprocess.run([PYTHON, "-m", "trainer", "pull-logs", "--to", str(pulled)], env=subprocess_env(settings),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"TensorBoard events of phase1, phase2 in {pulled}; view: tensorboard --logdir {pulled}" in out.stdout

    for phase in ("phase1", "phase2"):
        acc = EventAccumulator(str(pulled / phase), size_guidance={"audio": 0})
        acc.Reload()
        tags = acc.Tags()
        assert {"loss", "lr", "grad_norm", "val/loss", "val/single_language"} <= set(tags["scalars"])
        assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4]  # optimizer steps, not micro-batches
        assert [e.step for e in acc.Scalars("val/loss")] == [2, 4]
        assert all(e.value > 0 for e in acc.Scalars("loss"))
        assert set(tags["audio"]) == {f"audio/{name}" for name in AUDIO_PROMPTS}
        clip = acc.Audio("audio/malay")[0]
        assert clip.step == 4 and clip.sample_rate == 24_000 and clip.encoded_audio_string[:4] == b"RIFF"


def test_pull_logs_before_any_training_says_what_to_do(make_settings, tmp_path):
    settings = make_settings()
    out = subprocess.run([PYTHON, "-m", "trainer", "pull-logs", "--to", str(tmp_path / "tb")],
                         env=subprocess_env(settings), capture_output=True, text=True)
    assert out.returncode != 0
    assert "no TensorBoard events under" in out.stderr and "train a phase first" in out.stderr
