"""The Mimi codec (24 kHz, 12.5 frames/s): audio -> codes once, in preprocessing.

Training reads those codes and never runs the codec. The codec must be the CSM's own: for a real
model `kyutai/mimi` (or a local copy), for the embedded default the tiny bundle's Mimi
(infra/models.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from infra.models import codec_source, resolve_device


@dataclass
class Codec:
    """A Mimi model and the facts the rest of the pipeline relies on."""

    model: torch.nn.Module
    name: str
    device: torch.device
    num_codebooks: int
    sample_rate_hz: int
    frame_rate_hz: float

    @classmethod
    def load(cls, name: str, cache_dir: Path, device: str = "auto") -> Codec:
        from transformers import MimiModel

        dev = resolve_device(device)
        model = MimiModel.from_pretrained(codec_source(name, cache_dir)).to(dev).eval()
        cfg = model.config
        return cls(model, name, dev, cfg.num_quantizers, cfg.sampling_rate, float(cfg.frame_rate))

    def describe(self) -> dict:
        return {"name": self.name, "num_codebooks": self.num_codebooks,
                "sample_rate_hz": self.sample_rate_hz, "frame_rate_hz": self.frame_rate_hz}

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate_hz / self.frame_rate_hz))  # 1920 samples per frame

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """Mono float samples at the codec's rate -> codes (frames, codebooks) int16."""
        return self.encode_batch([samples])[0]

    @torch.inference_mode()
    def encode_batch(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Several clips in one forward pass. Each is zero-padded to whole frames first, which makes
        the codes independent of the batch: Mimi's encoder is causal, so what follows a clip's last
        frame (more zeros, in a batch) cannot change them."""
        if not clips:
            return []
        frames = [-(-len(c) // self.hop) for c in clips]
        batch = np.zeros((len(clips), 1, max(frames) * self.hop), dtype=np.float32)
        for i, clip in enumerate(clips):
            batch[i, 0, : len(clip)] = clip
        codes = self.model.encode(torch.from_numpy(batch).to(self.device), num_quantizers=self.num_codebooks)
        out = codes.audio_codes.to(torch.int16).cpu().numpy()  # (B, K, F)
        return [out[i, :, :n].T.copy() for i, n in enumerate(frames)]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes (frames, codebooks) -> mono float32 samples at the codec's rate."""
        c = torch.from_numpy(np.asarray(codes, dtype=np.int64).T[None]).to(self.device)
        return self.model.decode(c).audio_values[0, 0].float().cpu().numpy()
