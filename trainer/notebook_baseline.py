"""The public recipe Suara's trainer is measured against (Unsloth's CSM notebook, transformers' CSM
training example), as one optimizer step:

- the processor runs on raw 24 kHz audio every step (text tokenised, audio tokens expanded,
  feature extraction), each clip padded to 10 s (240001 samples) and each sequence to 256 tokens;
- the model's forward re-encodes that audio with Mimi, one clip at a time;
- transformers' own CSM loss trains the depth decoder on every frame (`depth_decoder_labels_ratio=1`).

Used by `make bench` and `make bench-gpu` on the same model and clips as the trainer; never in training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NOTEBOOK_AUDIO_SAMPLES = 240_001  # 10 s at 24 kHz, as the notebook pads (clips longer than that fail there)
NOTEBOOK_TEXT_TOKENS = 256


@dataclass(frozen=True)
class Clip:
    speaker: int
    text: str
    audio: np.ndarray  # mono float32 at 24 kHz


def processor_for(tokenizer: Any) -> Any:
    """CSM's processor around a tokenizer (the hub's processor config is not available offline)."""
    from transformers import CsmProcessor, EncodecFeatureExtractor

    return CsmProcessor(EncodecFeatureExtractor(feature_size=1, sampling_rate=24_000, padding_value=0.0), tokenizer)


class NotebookStep:
    """One optimizer step of the notebook recipe on a model being trained (LoRA layers in place)."""

    def __init__(self, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                 grad_clip: float, device: torch.device):
        self.model, self.optimizer, self.params = model, optimizer, params
        self.processor = processor_for(tokenizer)
        self.grad_clip, self.device = grad_clip, device

    def inputs(self, clips: list[Clip]) -> Any:
        texts = [f"<|begin_of_text|>[{c.speaker}]{c.text}<|end_of_text|><|AUDIO|><|audio_eos|>" for c in clips]
        return self.processor(
            text=texts, audio=[c.audio[: NOTEBOOK_AUDIO_SAMPLES - 1] for c in clips], output_labels=True,
            depth_decoder_labels_ratio=1.0,
            text_kwargs={"padding": "max_length", "max_length": NOTEBOOK_TEXT_TOKENS, "padding_side": "right"},
            audio_kwargs={"sampling_rate": 24_000, "max_length": NOTEBOOK_AUDIO_SAMPLES, "padding": "max_length"},
            common_kwargs={"return_tensors": "pt"},
        )

    def __call__(self, clips: list[Clip]) -> torch.Tensor:
        """The step; returns the loss (on the device, not read back)."""
        inputs = self.inputs(clips).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def samples_per_second(step: Any, batches: list[Any], warmup: int = 1) -> float:
    """Samples/s of `step` over `batches` (each a list), after `warmup` untimed batches; synchronises
    the GPU so queued work is counted."""
    for batch in batches[:warmup]:
        step(batch)
    _sync()
    started = time.perf_counter()
    count = 0
    for batch in batches[warmup:]:
        step(batch)
        count += len(batch)
    _sync()
    return count / (time.perf_counter() - started)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
