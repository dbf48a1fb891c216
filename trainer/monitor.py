"""What the trainer reports around each step: the progress bar, log lines, W&B scalars, and the
measured seconds per step that the budget relies on.

A step's figures stay on the device as tensors; they are read back (`.item()`, which waits for
the device) only when a report is due, every `log_every` steps, so the loop never stalls on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from trainer.loss import LossParts

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one optimizer step produced."""

    parts: LossParts
    grad_norm: torch.Tensor
    lr: float
    samples: int
    frames: int  # target audio frames
    seconds: float  # host time of the step


class Monitor:
    def __init__(self, scope: str, step: int, max_steps: int, log_every: int, logger: Any, budget: Any,
                 frame_rate_hz: float, device: torch.device, seconds_per_step: float | None, progress: bool):
        self.scope, self.max_steps, self.log_every = scope, max_steps, log_every
        self.logger, self.budget, self.frame_rate_hz, self.device = logger, budget, frame_rate_hz, device
        self.seconds_per_step = seconds_per_step  # moving average, kept in checkpoints
        self.losses: list[torch.Tensor] = []  # the total loss of every step this process ran (detached)
        self._window = {"samples": 0, "frames": 0, "seconds": 0.0, "steps": 0}
        self.bar = tqdm(total=max_steps, initial=step, desc=f"train {scope}", unit="step", disable=not progress)

    def record(self, step: int, result: StepResult) -> None:
        self.losses.append(result.parts.loss.detach())
        for key in ("samples", "frames", "seconds"):
            self._window[key] += getattr(result, key)
        self._window["steps"] += 1
        self.bar.update(1)
        if step % self.log_every == 0 or step == self.max_steps:
            self._report(step, result)

    def _report(self, step: int, result: StepResult) -> None:
        parts, window = result.parts, self._window
        seconds = max(window["seconds"], 1e-9)
        per_step = seconds / window["steps"]
        self.seconds_per_step = per_step if self.seconds_per_step is None else (
            0.9 * self.seconds_per_step + 0.1 * per_step)
        metrics = {
            "loss": parts.loss.item(), "loss/backbone": parts.backbone.item(), "loss/depth": parts.depth.item(),
            "loss_unweighted/backbone": parts.backbone_unweighted.item(),
            "loss_unweighted/depth": parts.depth_unweighted.item(),
            "lr": result.lr, "grad_norm": float(result.grad_norm),
            "samples_per_s": window["samples"] / seconds,
            "audio_s_per_s": window["frames"] / self.frame_rate_hz / seconds,
            "spend_usd": self.budget.spent,
        }
        if self.device.type == "cuda":
            metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self.logger.log(step, metrics)
        log.info("%s step %d/%d loss %.4f lr %.2e grad_norm %.3f spend $%.2f", self.scope, step, self.max_steps,
                 metrics["loss"], metrics["lr"], metrics["grad_norm"], metrics["spend_usd"])
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.1e}",
                             gnorm=f"{metrics['grad_norm']:.2f}", sps=f"{metrics['samples_per_s']:.1f}",
                             usd=f"{metrics['spend_usd']:.2f}")
        self._window = {"samples": 0, "frames": 0, "seconds": 0.0, "steps": 0}

    def close(self) -> None:
        self.bar.close()
