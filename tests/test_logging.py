"""Logging: validation per category, W&B offline runs that continue under the same id."""

from __future__ import annotations

import math

from tests.conftest import copy_store
from trainer.train import PhaseTrainer


def test_validation_reports_each_category_and_wandb_resumes_the_same_run(preprocessed_store, tmp_path,
                                                                        make_settings):
    settings = make_settings(store=copy_store(preprocessed_store, tmp_path / "store"), run_id="shared", steps=6,
                             logging={"wandb_mode": "offline", "val_every": 3, "val_batches": 1},
                             train={"log_every": 1})
    first = PhaseTrainer(settings, 1, progress=False, max_steps=3)
    try:
        first.setup()
        results = first.validate()
        assert set(results) == {"val/single_language", "val/code_switched", "val/particle"}
        assert all(math.isfinite(v) and v > 0 for v in results.values())
        assert first.train() == 0
        run_id = first.logger.run_id
    finally:
        first.cleanup()
    offline = list((settings.cache_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert offline and offline[0].stat().st_size > 0

    # A new process for the same scope (here: more steps) continues the same W&B run.
    again = PhaseTrainer(settings, 1, progress=False, max_steps=6)
    try:
        again.setup()
        assert again.step == 3 and again.logger.run_id == run_id
    finally:
        again.cleanup()


def test_audio_samples_from_fixed_prompts_are_generated_and_logged(preprocessed_store, tmp_path, make_settings,
                                                                   monkeypatch):
    from trainer.train import AUDIO_PROMPTS

    settings = make_settings(store=copy_store(preprocessed_store, tmp_path / "store"), run_id="shared", steps=2,
                             logging={"wandb_mode": "offline", "audio_every": 2, "audio_max_seconds": 0.4})
    trainer = PhaseTrainer(settings, 1, progress=False)
    logged = {}
    try:
        trainer.setup()
        monkeypatch.setattr(trainer.logger, "log_audio",
                            lambda step, clips, sample_rate: logged.update(step=step, clips=clips, rate=sample_rate))
        assert trainer.train() == 0
    finally:
        trainer.cleanup()
    assert logged["step"] == 2 and logged["rate"] == 24_000
    assert set(logged["clips"]) == set(AUDIO_PROMPTS)
    assert all(0 < len(clip) <= 0.4 * 24_000 + 1920 for clip in logged["clips"].values())
