"""The weighted CSM loss from pre-computed codes."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import shard_sample
from trainer.loss import build_batch, embed, weighted_csm_loss


def samples(frames=(5, 9, 7)):
    return [shard_sample(i, n, normalized="Saya nak go lah") for i, n in enumerate(frames)]


def test_unit_weights_equal_transformers_own_csm_loss(tiny):
    model, tok = tiny
    batch = build_batch(samples(), tok, model.config, {"s": 0})
    ours = weighted_csm_loss(model, batch)
    ref = model(inputs_embeds=embed(model, batch), labels=batch.labels, attention_mask=batch.attention_mask)
    torch.testing.assert_close(ours.loss, ref.loss)
    torch.testing.assert_close(ours.backbone, ref.backbone_loss)
    torch.testing.assert_close(ours.depth, ref.depth_decoder_loss)


def _grad(model, batch):
    model.zero_grad(set_to_none=True)
    weighted_csm_loss(model, batch).loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()


def test_a_frame_with_weight_zero_does_not_affect_the_gradient(tiny):
    model, tok = tiny
    base = samples(frames=(6,))
    mask = [np.array([1, 1, 0, 1, 1, 1], np.float32)]
    g_masked = _grad(model, build_batch(base, tok, model.config, {"s": 0}, weights=mask))
    # Same inputs, different target codes for the weight-0 frame only: the gradient must not move.
    relabelled = build_batch(base, tok, model.config, {"s": 0}, weights=mask)
    pos = int(relabelled.audio_mask[0].nonzero()[2])
    relabelled.labels[0, pos] = (relabelled.labels[0, pos] + 1) % 64
    g_relabelled = _grad(model, relabelled)
    torch.testing.assert_close(g_masked, g_relabelled)
    assert not torch.allclose(g_masked, _grad(model, build_batch(base, tok, model.config, {"s": 0})))


def test_weight_two_doubles_a_frames_contribution(tiny):
    model, tok = tiny
    one_hot = np.zeros(6, np.float32)
    one_hot[3] = 1.0
    g1 = _grad(model, build_batch(samples((6,)), tok, model.config, {"s": 0}, weights=[one_hot]))
    g2 = _grad(model, build_batch(samples((6,)), tok, model.config, {"s": 0}, weights=[2 * one_hot]))
    g0 = _grad(model, build_batch(samples((6,)), tok, model.config, {"s": 0}, weights=[0 * one_hot]))
    # The EOS frame keeps weight 1 in all three; subtract its share.
    torch.testing.assert_close(g2 - g0, 2 * (g1 - g0), rtol=1e-4, atol=1e-6)


def test_depth_decoder_can_train_on_a_share_of_frames(tiny):
    model, tok = tiny
    batch = build_batch(samples(frames=(16, 16)), tok, model.config, {"s": 0})
    gen = torch.Generator().manual_seed(0)
    part = weighted_csm_loss(model, batch, depth_frame_ratio=1 / 16, generator=gen)
    full = weighted_csm_loss(model, batch)
    torch.testing.assert_close(part.backbone, full.backbone)
    assert part.depth != full.depth
