"""Validation loss per category: a mean over exactly that category's frames, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import shard_sample
from trainer.loss import build_batch, embed, weighted_csm_loss
from trainer.validation import category_loss, frame_errors


def _particle_samples(frames=(7, 10)):
    out = []
    for i, n in enumerate(frames):
        mask = np.zeros(n, np.uint8)
        mask[2:4] = 1  # two particle frames in each clip
        out.append(shard_sample(i, n, normalized="Okay lah, I go", particle_mask=mask))
    return out


def _by_hand(model, tok, sample):
    """Each target frame's loss from transformers' own CSM loss with only that frame labelled
    (backbone CE + depth CE of one frame = that frame's loss): (frame losses, EOS loss)."""
    batch = build_batch([sample], tok, model.config, {"s": 0})
    positions = batch.labels[0, :, 0].ne(-100).nonzero().flatten().tolist()  # frames, then EOS
    losses = []
    for pos in positions:
        labels = torch.full_like(batch.labels, -100)
        labels[0, pos] = batch.labels[0, pos]
        out = model(inputs_embeds=embed(model, batch), labels=labels, attention_mask=batch.attention_mask)
        losses.append(float(out.loss))
    return losses[:-1], losses[-1]


@torch.no_grad()
def test_particle_loss_is_the_mean_over_particle_frames_only(tiny):
    model, tok = tiny
    samples = _particle_samples()
    expected = []
    for s in samples:
        frames, _ = _by_hand(model, tok, s)
        expected += [frames[f] for f in np.flatnonzero(s.particle_mask)]
    got = category_loss(model, tok, samples, {"s": 0}, "particle", batch_size=2, device=torch.device("cpu"))
    assert got == pytest.approx(float(np.mean(expected)), rel=1e-5)


@torch.no_grad()
def test_whole_clip_categories_are_the_mean_over_every_target_frame_and_eos(tiny):
    model, tok = tiny
    samples = _particle_samples((5, 9, 6))
    expected = []
    for s in samples:
        frames, eos = _by_hand(model, tok, s)
        expected += frames + [eos]
    # Batches of 2 then 1: a mean of batch means would weight the last clip's frames double.
    got = category_loss(model, tok, samples, {"s": 0}, "all", batch_size=2, device=torch.device("cpu"))
    assert got == pytest.approx(float(np.mean(expected)), rel=1e-5)


@torch.no_grad()
def test_particle_loss_does_not_move_with_how_much_else_the_clip_holds(tiny):
    model, tok = tiny
    short = _particle_samples((6,))[0]
    # The same clip with more non-particle frames after it: the causal model's errors on the first
    # frames are unchanged, so the particle figure must be too.
    codes = np.concatenate([short.codes, np.random.default_rng(9).integers(0, 64, (12, 8)).astype(np.int16)])
    longer = shard_sample(0, 18, normalized=short.normalized, codes=codes,
                          particle_mask=np.concatenate([short.particle_mask, np.zeros(12, np.uint8)]))
    a = category_loss(model, tok, [short], {"s": 0}, "particle", 4, torch.device("cpu"))
    b = category_loss(model, tok, [longer], {"s": 0}, "particle", 4, torch.device("cpu"))
    assert a == pytest.approx(b, rel=1e-5)


@torch.no_grad()
def test_frame_errors_sum_to_the_unit_weight_training_loss(tiny):
    model, tok = tiny
    batch = build_batch(_particle_samples(), tok, model.config, {"s": 0})
    errors, is_target = frame_errors(model, batch)
    assert float(errors[is_target].mean()) == pytest.approx(float(weighted_csm_loss(model, batch).loss), rel=1e-5)
    assert float(errors[~is_target].abs().sum()) == 0.0


def test_a_category_without_counted_frames_has_no_figure(tiny):
    model, tok = tiny
    samples = [shard_sample(0, 5)]  # no particle frame
    assert category_loss(model, tok, samples, {"s": 0}, "particle", 4, torch.device("cpu")) is None
