"""CSM's training loss from pre-computed Mimi codes, weighted per audio frame.

CSM = a Llama-style backbone over [text tokens, audio frames] that predicts codebook 0 of frame t
from the hidden state at t-1, plus a small depth decoder that predicts codebooks 1..K-1 of a frame
from that same hidden state and the frame's earlier codebooks. transformers' forward re-encodes
raw audio with Mimi on every step; here the codes come from the shards, the embeddings are built
directly, and each frame's cross-entropy is multiplied by its weight (the seam for particle and
code-switch emphasis). With all weights 1 the result equals transformers' own CSM loss.

Normalisation: each term is the weighted sum over target frames divided by the number of target
frames (not by the sum of weights), so a weight of 2 doubles a frame's contribution exactly and a
weight of 0 removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from preprocess.shards import ShardSample

IGNORE = -100


@dataclass
class Batch:
    """A right-padded batch: sequence = prompt tokens, one position per audio frame, audio EOS."""

    input_ids: torch.Tensor  # (B, T) text ids; audio positions hold the <|AUDIO|> / <|audio_eos|> ids
    audio_codes: torch.Tensor  # (B, T, K) codes at audio positions (EOS frame = codebook_eos id), else 0
    audio_mask: torch.Tensor  # (B, T) bool, positions that are audio frames (incl. the EOS frame)
    labels: torch.Tensor  # (B, T, K) target codes at trained audio positions, IGNORE elsewhere
    frame_weights: torch.Tensor  # (B, T) float loss weight per position (0 where not a target)
    attention_mask: torch.Tensor  # (B, T)
    num_frames: int  # audio frames in the batch (for throughput)

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        """On `device`; `non_blocking` from pinned memory: the copy overlaps the work queued before it."""
        moved = {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
                 for k, v in self.__dict__.items()}
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """In page-locked host memory, so a copy to the GPU can run asynchronously."""
        return Batch(**{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in self.__dict__.items()})


def frame_weights(sample: ShardSample, particle_weight: float = 1.0, switch_weight: float = 1.0) -> np.ndarray:
    """Loss weight per frame: 1, times the emphasis of masked frames (`particle_mask`: frames inside
    a particle word; `switch_mask`: frames near a language switch)."""
    weights = np.ones(sample.frames, dtype=np.float32)
    for mask, factor in ((sample.particle_mask, particle_weight), (sample.switch_mask, switch_weight)):
        if factor != 1.0:
            weights *= 1.0 + (factor - 1.0) * np.asarray(mask, dtype=np.float32)
    return weights


def turn_ids(tokenizer: Any, config: Any, speaker: int, text: str) -> list[int]:
    text_ids = tokenizer(f"[{speaker}]{text}", add_special_tokens=False)["input_ids"]
    return [config.bos_token_id, *text_ids, tokenizer.convert_tokens_to_ids(tokenizer.eos_token)]


def _codes(sample: ShardSample, K: int) -> torch.Tensor:
    codes = torch.tensor(np.asarray(sample.codes), dtype=torch.long)
    if codes.ndim != 2 or codes.shape[1] < K:
        raise ValueError(f"sample {sample.id}: codes shape {tuple(codes.shape)} has fewer than {K} codebooks")
    return codes[:, :K]


def build_batch(samples: list[ShardSample], tokenizer: Any, config: Any, speaker_index: dict[str, int],
                particle_weight: float = 1.0, switch_weight: float = 1.0,
                contexts: list[ShardSample | None] | None = None,
                weights: list[np.ndarray] | None = None) -> Batch:
    """Samples from the shards -> model inputs. Each row is CSM's conversation format:
    an optional context turn (a reference clip of the same speaker: its text and audio, never
    trained on), then the target turn `<|begin_of_text|>[speaker]text<|end_of_text|>`, its audio
    frames and `<|audio_eos|>`. Only the target turn's frames (and its EOS frame) are targets.
    `weights`: per-frame loss weights to use instead of the emphasis from the masks."""
    K = config.num_codebooks
    contexts = contexts or [None] * len(samples)
    rows = []
    for i, (sample, context) in enumerate(zip(samples, contexts, strict=True)):
        speaker = speaker_index[sample.speaker_id]
        segments = []  # (prompt ids, codes, weights or None for context)
        if context is not None:
            segments.append((turn_ids(tokenizer, config, speaker, context.normalized), _codes(context, K), None))
        own = frame_weights(sample, particle_weight, switch_weight) if weights is None else weights[i]
        segments.append((turn_ids(tokenizer, config, speaker, sample.normalized), _codes(sample, K),
                         torch.from_numpy(np.asarray(own, dtype=np.float32))))
        rows.append(segments)

    T = max(sum(len(p) + c.shape[0] + 1 for p, c, _ in segs) for segs in rows)
    B = len(rows)
    input_ids = torch.full((B, T), config.pad_token_id, dtype=torch.long)
    audio_codes = torch.zeros((B, T, K), dtype=torch.long)
    audio_mask = torch.zeros((B, T), dtype=torch.bool)
    labels = torch.full((B, T, K), IGNORE, dtype=torch.long)
    weights_bt = torch.zeros((B, T), dtype=torch.float32)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    target_frames = 0
    for b, segments in enumerate(rows):
        pos = 0
        for prompt, codes, weights in segments:
            L, Fr = len(prompt), codes.shape[0]
            input_ids[b, pos : pos + L] = torch.tensor(prompt)
            start = pos + L
            input_ids[b, start : start + Fr] = config.audio_token_id
            input_ids[b, start + Fr] = config.audio_eos_token_id
            audio_codes[b, start : start + Fr] = codes
            audio_codes[b, start + Fr] = config.codebook_eos_token_id
            audio_mask[b, start : start + Fr + 1] = True
            if weights is not None:  # a target turn; context turns stay IGNORE with weight 0
                labels[b, start : start + Fr + 1] = audio_codes[b, start : start + Fr + 1]
                weights_bt[b, start : start + Fr] = weights
                weights_bt[b, start + Fr] = 1.0  # learning to stop
                target_frames += Fr
            pos = start + Fr + 1
        attention_mask[b, :pos] = 1
    return Batch(input_ids, audio_codes, audio_mask, labels, weights_bt, attention_mask, num_frames=target_frames)


def csm_parts(model: Any) -> Any:
    """The CsmForConditionalGeneration inside a peft wrapper (LoRA layers stay in place)."""
    inner = model
    while not hasattr(inner, "backbone_model"):
        inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner.model
    return inner


def embed(model: Any, batch: Batch) -> torch.Tensor:
    """inputs_embeds: text embeddings at text positions, summed codebook embeddings at audio ones."""
    csm = csm_parts(model)
    embeds = csm.embed_text_tokens(batch.input_ids.masked_fill(batch.audio_mask, 0))
    audio = csm.backbone_model.embed_tokens(batch.audio_codes)  # (B, T, H): sum over codebooks
    return torch.where(batch.audio_mask[..., None], audio.to(embeds.dtype), embeds)


@dataclass
class LossParts:
    loss: torch.Tensor  # what is optimised: backbone + depth, weighted
    backbone: torch.Tensor  # codebook-0 term (weighted), detached
    depth: torch.Tensor  # codebooks 1..K-1 term (weighted), detached
    backbone_unweighted: torch.Tensor  # the same terms with every target frame at weight 1
    depth_unweighted: torch.Tensor
    frames: int


def weighted_csm_loss(model: Any, batch: Batch, depth_frame_ratio: float = 1.0,
                      generator: torch.Generator | None = None) -> LossParts:
    csm = csm_parts(model)
    inputs = embed(model, batch)
    if csm.backbone_model.gradient_checkpointing and torch.is_grad_enabled() and not inputs.requires_grad:
        # Reentrant activation checkpointing (Unsloth's) only back-propagates into a checkpointed
        # layer whose input requires grad; the embeddings are frozen, so mark their output.
        inputs.requires_grad_(True)
    hidden = csm.backbone_model(inputs_embeds=inputs, attention_mask=batch.attention_mask).last_hidden_state
    # Backbone: position t-1 predicts codebook 0 of frame t.
    targets0 = batch.labels[:, 1:, 0]
    weights = batch.frame_weights[:, 1:]
    is_target = targets0 != IGNORE
    frames = int(is_target.sum())
    logits0 = csm.lm_head(hidden[:, :-1])
    ce0 = F.cross_entropy(logits0.float().transpose(1, 2), targets0, ignore_index=IGNORE, reduction="none")
    backbone = (ce0 * weights).sum() / max(frames, 1)
    backbone_unweighted = ce0.detach().sum() / max(frames, 1)

    # Depth decoder on all target frames, or a random share of them (Sesame: 1/16).
    b_idx, t_idx = is_target.nonzero(as_tuple=True)
    t_idx = t_idx + 1  # position in the sequence of the target frame
    if depth_frame_ratio < 1.0:
        keep = max(1, round(len(b_idx) * depth_frame_ratio))
        chosen = torch.randperm(len(b_idx), generator=generator)[:keep].sort().values.to(b_idx.device)
        b_idx, t_idx = b_idx[chosen], t_idx[chosen]
    frame_codes = batch.labels[b_idx, t_idx]  # (N, K)
    depth_inputs = F.pad(frame_codes[:, :-1], (1, 0), value=0)  # slot 0 takes the backbone state
    depth_logits = csm.depth_decoder(
        input_ids=depth_inputs, backbone_last_hidden_state=hidden[b_idx, t_idx - 1]
    ).logits  # (N, K-1, V)
    ce = F.cross_entropy(depth_logits.float().transpose(1, 2), frame_codes[:, 1:], reduction="none")
    per_frame = ce.mean(dim=1)
    depth = (per_frame * batch.frame_weights[b_idx, t_idx]).sum() / max(len(b_idx), 1)
    depth_unweighted = per_frame.detach().sum() / max(len(b_idx), 1)
    return LossParts(backbone + depth, backbone.detach(), depth.detach(), backbone_unweighted,
                     depth_unweighted, frames)
