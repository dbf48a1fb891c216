"""Validation loss per category: the mean cross-entropy over exactly that category's target frames.

A category is a validation set and the frames of it that count:
    single_language  phase 1's val split, every target frame (and the audio-EOS frame)
    code_switched    phase 2's val split, every target frame (and the audio-EOS frame)
    particle         phase 3's val split, only the frames inside a particle word

Each frame's error is CSM's unweighted loss at that frame: the backbone's cross-entropy on
codebook 0 plus the depth decoder's mean cross-entropy over codebooks 1..K-1, the same terms
trainer/loss.py sums for training. The figure is sum(frame errors) / number of counted frames over
all batches together, so it neither depends on the batch split nor on how many other frames a clip
has (dividing particle frames' error by all frames made it move with the particle share).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from preprocess.shards import ShardSample
from trainer.loss import IGNORE, Batch, build_batch, csm_parts, embed


@dataclass(frozen=True)
class Category:
    name: str
    phase: int  # the dataset phase whose val split it reads
    frames: str  # "all" target frames, or only "particle" frames


CATEGORIES = (Category("single_language", 1, "all"), Category("code_switched", 2, "all"),
              Category("particle", 3, "particle"))


def frame_errors(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) unweighted loss of each target position (backbone + mean depth cross-entropy; 0
    elsewhere) and the (B, T) mask of target positions."""
    csm = csm_parts(model)
    hidden = csm.backbone_model(inputs_embeds=embed(model, batch),
                                attention_mask=batch.attention_mask).last_hidden_state
    targets0 = batch.labels[:, 1:, 0]
    logits0 = csm.lm_head(hidden[:, :-1])
    ce0 = F.cross_entropy(logits0.float().transpose(1, 2), targets0, ignore_index=IGNORE, reduction="none")
    errors = torch.zeros(batch.labels.shape[:2], dtype=torch.float32, device=hidden.device)
    errors[:, 1:] = ce0
    is_target = torch.zeros_like(errors, dtype=torch.bool)
    is_target[:, 1:] = targets0 != IGNORE
    b_idx, t_idx = is_target.nonzero(as_tuple=True)
    frame_codes = batch.labels[b_idx, t_idx]
    depth_inputs = F.pad(frame_codes[:, :-1], (1, 0), value=0)
    depth_logits = csm.depth_decoder(input_ids=depth_inputs,
                                     backbone_last_hidden_state=hidden[b_idx, t_idx - 1]).logits
    depth = F.cross_entropy(depth_logits.float().transpose(1, 2), frame_codes[:, 1:], reduction="none").mean(dim=1)
    errors[b_idx, t_idx] += depth
    return errors, is_target


@torch.no_grad()
def category_loss(model: Any, tokenizer: Any, samples: list[ShardSample], speaker_index: dict[str, int],
                  frames: str, batch_size: int, device: torch.device) -> float | None:
    """Mean unweighted loss over the category's frames of `samples`; None if none counts."""
    total, count = 0.0, 0
    config = csm_parts(model).config
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        # The particle mask rides in the frame weights (1 inside a particle word, 0 elsewhere);
        # build_batch gives every audio-EOS position weight 1, so EOS positions are excluded by id.
        weights = [np.asarray(s.particle_mask, np.float32) for s in chunk] if frames == "particle" else None
        batch = build_batch(chunk, tokenizer, config, speaker_index, weights=weights).to(device)
        errors, is_target = frame_errors(model, batch)
        counted = is_target
        if frames == "particle":
            counted = is_target & (batch.frame_weights > 0) & (batch.input_ids != config.audio_eos_token_id)
        total += float(errors[counted].sum())
        count += int(counted.sum())
    return total / count if count else None
