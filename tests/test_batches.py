"""What reaches the loss: mask-based frame weights, context turns, length buckets, replay."""

from __future__ import annotations

import random

import numpy as np
import pytest

from infra.storage import Store
from tests.conftest import copy_store
from tests.conftest import shard_sample as sample
from trainer.data import ShardStream, bucket
from trainer.loss import IGNORE, build_batch, frame_weights, weighted_csm_loss


def test_masks_become_phase_weights():
    s = sample(0, 6, particle_mask=np.array([0, 0, 1, 1, 0, 0], np.uint8),
               switch_mask=np.array([1, 0, 0, 0, 0, 0], np.uint8))
    assert frame_weights(s).tolist() == [1, 1, 1, 1, 1, 1]
    assert frame_weights(s, particle_weight=2.0, switch_weight=1.5).tolist() == [1.5, 1, 2, 2, 1, 1]


def test_context_turn_frames_are_inputs_but_never_targets(tiny):
    model, tok = tiny
    target, context = sample(1, 5), sample(2, 7)
    plain = build_batch([target], tok, model.config, {"s": 0})
    with_ctx = build_batch([target], tok, model.config, {"s": 0}, contexts=[context])
    assert with_ctx.num_frames == plain.num_frames == 5
    assert int(with_ctx.audio_mask.sum()) == (7 + 1) + (5 + 1)
    targets = (with_ctx.labels[0, :, 0] != IGNORE).nonzero().flatten()
    assert len(targets) == 5 + 1  # the target's frames and its EOS frame only
    first_target = int(targets[0])
    assert (with_ctx.frame_weights[0, :first_target] == 0).all()
    # Same target, different context: the loss counts the same frames.
    assert weighted_csm_loss(model, with_ctx).frames == weighted_csm_loss(model, plain).frames == 6


def test_buckets_group_similar_lengths_under_a_frame_budget():
    samples = [sample(i, n) for i, n in enumerate([40, 5, 38, 7, 6, 41, 39, 4])]
    batches = bucket(samples, batch_size=4, frame_budget=120, rng=random.Random(0))
    assert sorted(s.frames for b in batches for s in b) == sorted(s.frames for s in samples)
    for b in batches:
        lengths = [s.frames for s in b]
        assert len(b) * max(lengths) <= 120 or len(b) == 1
        assert max(lengths) - min(lengths) <= 3  # short with short, long with long
    padded = sum(len(b) * max(s.frames for s in b) for b in batches)
    naive = sum(4 * max(s.frames for s in samples[i : i + 4]) for i in range(0, 8, 4))
    assert padded < naive


@pytest.fixture
def run_store(preprocessed_store, tmp_path):
    return Store(copy_store(preprocessed_store, tmp_path / "store")).child("runs/shared")


def test_replay_mixes_earlier_phases_into_the_stream(run_store, tmp_path):
    stream = ShardStream(run_store, [("data/phase3/train", 0.5), ("data/phase1/train", 0.5)], 4, 7,
                         tmp_path / "cache")
    try:
        batches = stream.batches()
        ids = [s.id for _ in range(10) for s in next(batches)]
    finally:
        stream.close()
    replayed = sum(i.startswith(("ms_", "en_", "zh_")) for i in ids)
    assert 0.3 < replayed / len(ids) < 0.7


def test_the_stream_resumes_mid_window_with_the_same_batches(run_store, tmp_path):
    def open_stream():
        return ShardStream(run_store, [("data/phase2/train", 1.0)], 4, 11, tmp_path / "cache", window_batches=3)

    reference = open_stream()
    it = reference.batches()
    expected = [[s.id for s in next(it)] for _ in range(8)]
    reference.close()

    first = open_stream()
    it = first.batches()
    seen = [[s.id for s in next(it)] for _ in range(4)]  # stops inside the second window
    state = first.state_dict()
    first.close()
    second = open_stream()
    second.load_state_dict(state)
    it = second.batches()
    seen += [[s.id for s in next(it)] for _ in range(4)]
    second.close()
    assert seen == expected


def test_phase_weights_reach_the_particle_frames_of_real_shards(run_store, tmp_path, cache_dir):
    from transformers import AutoTokenizer, CsmForConditionalGeneration

    from infra.models import tiny_bundle

    path = tiny_bundle(cache_dir)
    config = CsmForConditionalGeneration.from_pretrained(path).config
    stream = ShardStream(run_store, [("data/phase3/train", 1.0)], 4, 5, tmp_path / "cache")
    try:
        samples = next(stream.batches())
    finally:
        stream.close()
    batch = build_batch(samples, AutoTokenizer.from_pretrained(path), config,
                        {"speaker_01": 0, "speaker_02": 1}, particle_weight=2.0)
    weights = batch.frame_weights[batch.frame_weights > 0]
    assert set(weights.unique().tolist()) == {1.0, 2.0}
    expected = sum(int(s.particle_mask.sum()) for s in samples)
    assert int((batch.frame_weights == 2.0).sum()) == expected
