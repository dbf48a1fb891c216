"""The training step's data and precision path: batches built ahead of the step without changing
what is trained, a padding budget that counts every position, fp32 master weights, activation
checkpointing that changes memory and nothing else, and backends that refuse what they cannot do."""

from __future__ import annotations

import random

import pytest
import torch

from infra.settings import SettingsError, load_settings
from infra.storage import Store
from tests.conftest import copy_store
from tests.conftest import shard_sample as sample
from trainer.data import Prefetcher, ShardStream, bucket, choose_contexts
from trainer.loss import build_batch, turn_ids, weighted_csm_loss
from trainer.memory_plan import measure_saved_bytes


@pytest.fixture
def run_store(preprocessed_store, tmp_path):
    return Store(copy_store(preprocessed_store, tmp_path / "store")).child("runs/shared")


def row_length(tokenizer, config, speaker_index):
    return lambda s: len(turn_ids(tokenizer, config, speaker_index[s.speaker_id], s.normalized)) + s.frames + 1


# -- the padding budget ---------------------------------------------------------------------------
def test_the_budget_counts_prompt_tokens_not_only_frames():
    # Same frames, very different prompts: by frames alone all four fit 4 x 10 = 40 positions.
    samples = [sample(i, 10, normalized="x" * (1 if i % 2 else 30)) for i in range(4)]
    by_positions = bucket(samples, 4, 80, random.Random(0), length=lambda s: len(s.normalized) + s.frames)
    for batch in by_positions:
        assert len(batch) * max(len(s.normalized) + s.frames for s in batch) <= 80 or len(batch) == 1
    assert len(by_positions) > 1
    assert len(bucket(samples, 4, 80, random.Random(0))) == 1  # the frames-only default would pack them


def test_a_context_turn_that_would_break_the_budget_is_left_out():
    samples = [sample(i, 20) for i in range(4)]
    length = lambda s: s.frames + 1  # noqa: E731
    always = choose_contexts(samples, 1.0, random.Random(3), length)
    assert all(c is not None and c is not s for c, s in zip(always, samples, strict=True))
    within = choose_contexts(samples, 1.0, random.Random(3), length, frame_budget=4 * 21 + 4 * 21)
    rows = [21 + (21 if c is not None else 0) for c in within]
    assert len(samples) * max(rows) <= 4 * 42
    assert choose_contexts(samples, 1.0, random.Random(3), length, frame_budget=4 * 30) == [None] * 4


def test_built_batches_stay_under_the_budget_with_text_and_contexts(run_store, tmp_path, tiny):
    model, tok = tiny
    speakers = {"speaker_01": 0, "speaker_02": 1}
    budget = 600  # rows of ~100 positions: some contexts fit, some would not
    stream = ShardStream(run_store, [("data/phase2/train", 1.0)], 4, 5, tmp_path / "cache", frame_budget=budget,
                         length=row_length(tok, model.config, speakers), context_share=1.0)
    try:
        drawn = stream.drawn()
        batches = [next(drawn) for _ in range(12)]
    finally:
        stream.close()
    assert any(c is not None for d in batches for c in d.contexts)
    for d in batches:
        built = build_batch(d.samples, tok, model.config, speakers, contexts=d.contexts)
        assert built.input_ids.numel() <= budget or built.rows == 1, (built.input_ids.shape, budget)


# -- prefetch -------------------------------------------------------------------------------------
def test_prefetched_batches_are_the_batches_built_in_line_and_leave_the_global_rng_alone(run_store, tmp_path, tiny):
    model, tok = tiny
    speakers = {"speaker_01": 0, "speaker_02": 1}

    def batches(depth: int) -> list:
        stream = ShardStream(run_store, [("data/phase1/train", 1.0)], 4, 9, tmp_path / f"c{depth}",
                             length=row_length(tok, model.config, speakers), context_share=0.5)
        make = lambda d: (build_batch(d.samples, tok, model.config, speakers, contexts=d.contexts), d.position)  # noqa: E731
        ahead = Prefetcher(stream.drawn(), make, depth)
        try:
            return [next(ahead) for _ in range(10)]
        finally:
            ahead.close()
            stream.close()

    torch.manual_seed(0)
    before = torch.get_rng_state()
    inline, prefetched = batches(0), batches(3)
    assert torch.equal(torch.get_rng_state(), before)  # contexts draw from the batch's own generator
    for (a, pa), (b, pb) in zip(inline, prefetched, strict=True):
        assert pa == pb
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.frame_weights, b.frame_weights)


def test_an_error_while_building_ahead_reaches_the_training_thread():
    def make(i: int) -> int:
        if i == 3:
            raise ValueError("sample 3 is broken")
        return i

    ahead = Prefetcher(iter(range(10)), make, depth=2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="sample 3 is broken"):
        next(ahead)
    ahead.close()


# -- precision ------------------------------------------------------------------------------------
def test_bf16_weights_lose_small_updates_that_fp32_master_weights_keep():
    from trainer.model import master_weights_fp32

    def one_step(weights: torch.nn.Linear) -> torch.Tensor:
        before = weights.weight.detach().float().clone()
        opt = torch.optim.AdamW(weights.parameters(), lr=1e-4, weight_decay=0.0)
        weights(torch.ones(1, 4, dtype=weights.weight.dtype)).sum().backward()
        opt.step()
        return weights.weight.detach().float() - before

    bf16 = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    torch.nn.init.ones_(bf16.weight)
    assert torch.count_nonzero(one_step(bf16)) == 0  # 1 - 1e-4 rounds back to 1 in bf16

    master = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    torch.nn.init.ones_(master.weight)
    master_weights_fp32(master)
    assert master.weight.dtype == torch.float32
    assert torch.allclose(one_step(master), torch.full((4, 4), -1e-4), atol=1e-6)


def test_full_fine_tune_trains_fp32_masters_and_leaves_the_frozen_codec_in_its_dtype(make_settings):
    from trainer.model import load_trainable, make_optimizer, master_weights_fp32, trainable_parameters

    model, _ = load_trainable(make_settings(train={"mode": "full"}), None)
    model = model.to(torch.bfloat16)  # as loaded on CUDA
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith("codec_model."))
    with pytest.raises(ValueError, match="would round away"):
        make_optimizer(make_settings(), trainable_parameters(model), 1e-5)
    master_weights_fp32(model)
    assert {p.dtype for n, p in model.named_parameters() if not n.startswith("codec_model.")} == {torch.float32}
    assert {p.dtype for n, p in model.named_parameters() if n.startswith("codec_model.")} == {torch.bfloat16}
    make_optimizer(make_settings(), trainable_parameters(model), 1e-5)


def test_eight_bit_adamw_is_refused_without_cuda_and_auto_picks_adamw(make_settings):
    from trainer.model import optimizer_kind

    assert optimizer_kind(make_settings()) == "adamw"
    with pytest.raises(ValueError, match="adamw_8bit needs a CUDA device"):
        optimizer_kind(make_settings(train={"optimizer": "adamw_8bit"}))


# -- activation checkpointing ---------------------------------------------------------------------
def test_activation_checkpointing_keeps_loss_and_gradients_and_saves_memory(make_settings):
    from trainer.model import load_trainable, trainable_parameters

    def run(checkpointing: bool):
        torch.manual_seed(0)
        settings = make_settings(train={"gradient_checkpointing": checkpointing})
        model, tok = load_trainable(settings, None)
        model.train()
        batch = build_batch([sample(i, 30 + 5 * i) for i in range(3)], tok, model.config, {"s": 0})
        torch.manual_seed(1)  # the same LoRA dropout masks
        with measure_saved_bytes(model) as saved:
            parts = weighted_csm_loss(model, batch)
        parts.loss.backward()
        return parts.loss.detach(), [p.grad.clone() for p in trainable_parameters(model)], saved()

    loss, grads, plain_bytes = run(False)
    loss_ckpt, grads_ckpt, ckpt_bytes = run(True)
    assert torch.allclose(loss, loss_ckpt)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, grads_ckpt, strict=True))
    assert ckpt_bytes < 0.5 * plain_bytes


# -- backends -------------------------------------------------------------------------------------
def test_unsloth_full_fine_tune_is_refused_with_the_reason():
    with pytest.raises(SettingsError, match="unsloth cannot do train.mode=full.*fp32 master"):
        load_settings(train={"backend": "unsloth", "mode": "full"})
    assert load_settings(train={"backend": "auto", "mode": "full"}).train.mode == "full"


def test_unsloth_lora_targets_the_same_layers_as_peft_and_never_the_codec(tiny):
    from peft import LoraConfig, get_peft_model

    from infra.settings import LoraSettings
    from trainer.model import lora_config, lora_target_regex

    def adapted(config) -> set[str]:
        model = type(tiny[0])(tiny[0].config)
        return {n for n, m in get_peft_model(model, config).named_modules() if n.endswith(".lora_A")}

    lora = LoraSettings()
    by_pattern = adapted(LoraConfig(r=lora.r, target_modules=lora_target_regex(lora)))
    assert by_pattern == adapted(lora_config(lora))
    assert by_pattern and not any("codec_model" in n for n in by_pattern)
    assert any("depth_decoder" in n for n in by_pattern) and any("backbone_model" in n for n in by_pattern)


# -- reading values back --------------------------------------------------------------------------
def test_the_loop_reads_values_back_from_the_device_only_at_the_steps_it_logs(store_with_data, make_settings,
                                                                              monkeypatch):
    """`.item()` and `float(tensor)` wait for the GPU to finish; a step that does neither lets the
    host queue the next step while the device works. (AdamW's step counters are not counted: torch
    keeps them on the host, so reading them never waits for the device.)"""
    import threading

    from trainer import exit_codes
    from trainer.train import PhaseTrainer

    settings = make_settings(store=store_with_data, run_id="shared", steps=6,
                             train={"log_every": 3, "checkpoint_every": 100})
    trainer = PhaseTrainer(settings, 1, progress=False)
    trainer.setup()
    read_at: list[int] = []

    def counted(method):
        def read(self, *args):
            counters = (state.get("step") for state in trainer.optimizer.state.values())
            if threading.current_thread() is threading.main_thread() and not any(self is c for c in counters):
                read_at.append(trainer.step)
            return method(self, *args)
        return read

    monkeypatch.setattr(torch.Tensor, "item", counted(torch.Tensor.item))
    monkeypatch.setattr(torch.Tensor, "__float__", counted(torch.Tensor.__float__))
    try:
        assert trainer.train() == exit_codes.FINISHED
    finally:
        monkeypatch.undo()
        trainer.cleanup()
    # Steps 1-6 run with trainer.step 0-5 during the step and 1-6 after it: only the logged 3 and 6 read.
    assert read_at and set(read_at) <= {3, 6}, sorted(set(read_at))
