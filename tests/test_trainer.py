"""The phase trainer in-process: it learns, checkpoints commit last, damaged ones are skipped."""

from __future__ import annotations

import pytest

from infra.storage import Store
from trainer.checkpoint import CheckpointError, Checkpoints, fetch_adapter
from trainer.train import PhaseTrainer


def train(settings, phase, speaker=None, **kw):
    trainer = PhaseTrainer(settings, phase, speaker, progress=False, **kw)
    try:
        trainer.setup()
        code = trainer.train()
    finally:
        trainer.cleanup()
    return trainer, code


def test_training_really_updates_the_adapter_and_lowers_the_loss(store_with_data, make_settings):
    settings = make_settings(store=store_with_data, run_id="shared", steps=30)
    trainer, code = train(settings, 1)
    assert code == 0 and len(trainer.losses) == 30
    first, last = sum(trainer.losses[:5]) / 5, sum(trainer.losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)


def test_checkpoints_are_written_every_k_steps_and_pruned(store_with_data, make_settings):
    settings = make_settings(store=store_with_data, run_id="shared", steps=12,
                             train={"keep_last_checkpoints": 2})
    train(settings, 1, checkpoint_every=3)
    run = Store.for_run(settings)
    assert Checkpoints(run, "phase1", 2).steps() == [9, 12]
    manifest = run.get_json("checkpoints/phase1/step_000012/manifest.json")
    assert set(manifest["objects"]) == {"weights/adapter_config.json", "weights/adapter_model.safetensors",
                                        "weights/README.md", "training_state.pt", "rng.pt", "state.json"}


def test_each_phase_starts_from_the_previous_phases_adapter(store_with_data, make_settings, tmp_path):
    settings = make_settings(store=store_with_data, run_id="shared", steps=4)
    run = Store.for_run(settings)
    with pytest.raises(CheckpointError, match="train it first: python -m trainer train --phase 1"):
        train(settings, 2)
    train(settings, 1)
    trainer, _ = train(settings, 2)
    assert trainer.adapter_uri.endswith("adapters/phase2")
    from safetensors.torch import load_file

    fetch_adapter(run, 1, None, tmp_path / "a1")
    fetch_adapter(run, 2, None, tmp_path / "a2")
    w1 = load_file(tmp_path / "a1" / "adapter_model.safetensors")
    w2 = load_file(tmp_path / "a2" / "adapter_model.safetensors")
    assert w1.keys() == w2.keys()
    assert any(not (w1[k] == w2[k]).all() for k in w1)


def test_phase4_trains_one_adapter_per_speaker(store_with_data, make_settings):
    settings = make_settings(store=store_with_data, run_id="shared", steps=3)
    for phase in (1, 2, 3):
        train(settings, phase)
    for speaker in ("speaker_01", "speaker_02"):
        trainer, code = train(settings, 4, speaker)
        assert code == 0 and trainer.adapter_uri.endswith(f"adapters/phase4/{speaker}")
    with pytest.raises(ValueError, match="one adapter per speaker"):
        PhaseTrainer(settings, 4)


def _commit(tmp_path, run, step, payload=b"weights"):
    local = tmp_path / f"ck{step}"
    (local / "weights").mkdir(parents=True)
    (local / "weights" / "w.bin").write_bytes(payload)
    (local / "state.json").write_text(f'{{"step": {step}}}')
    Checkpoints(run, "phase1", keep_last=5).save(step, local)


def test_resume_skips_a_damaged_or_uncommitted_newest_checkpoint(tmp_path):
    run = Store(f"file://{tmp_path}/store")
    ckpts = Checkpoints(run, "phase1", keep_last=5)
    for step in (4, 8, 12):
        _commit(tmp_path, run, step)
    # step 12: an object truncated after commit; step 16: objects without a manifest (died mid-upload)
    run.put_bytes("checkpoints/phase1/step_000012/weights/w.bin", b"weig")
    run.put_bytes("checkpoints/phase1/step_000016/weights/w.bin", b"weights")
    restored = ckpts.restore_latest(tmp_path)
    assert restored is not None and restored.step == 8
    assert (restored.directory / "weights" / "w.bin").read_bytes() == b"weights"


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert Checkpoints(Store(f"file://{tmp_path}"), "phase1", 3).restore_latest(tmp_path) is None


def test_full_fine_tune_trains_every_weight_but_the_codec(store_with_data, make_settings, tmp_path):
    import torch
    from safetensors.torch import load_file

    settings = make_settings(store=store_with_data, run_id="shared", steps=3, train={"mode": "full"})
    trainer, code = train(settings, 1)
    assert code == 0
    run = Store.for_run(settings)
    manifest = fetch_adapter(run, 1, None, tmp_path / "full")
    assert manifest["mode"] == "full"
    from infra.models import tiny_bundle

    before = load_file(tiny_bundle(settings.cache_dir) / "model.safetensors")
    after = load_file(tmp_path / "full" / "model.safetensors")
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert any(k.startswith("backbone_model.") for k in changed)
    assert any(k.startswith("depth_decoder.") for k in changed)
    assert not any(k.startswith("codec_model.") for k in changed)
    trainer2, code2 = train(settings, 2)  # continues from phase 1's full weights
    assert code2 == 0
    lora = make_settings(store=store_with_data, run_id="shared", steps=3)
    with pytest.raises(ValueError, match="one mode for every phase"):
        train(lora, 3)


def test_backend_is_peft_without_cuda_and_unsloth_cannot_be_forced_there(make_settings):
    from trainer.model import backend

    assert backend(make_settings()) == "peft"
    with pytest.raises(ValueError, match="needs a CUDA device and the unsloth package"):
        backend(make_settings(train={"backend": "unsloth"}))


def test_every_trainer_subcommand_has_a_handler():
    import argparse

    from trainer.__main__ import _COMMANDS, _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(_COMMANDS)
