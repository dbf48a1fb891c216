"""Model FLOPs of a training step, and model FLOPs utilisation (MFU), from the config.

Counted: every matrix multiplication the step needs (linear layers, LoRA, attention's two batched
products, the output heads); not counted: elementwise work, norms, softmax, and recomputation
under activation checkpointing (MFU counts what the model needs, not what a memory saving adds).
docs/perf/README.md writes the formula out. With B rows of padded length S, N depth frames, K
codebooks and a stack's linear weights P (in x out summed):

    forward   backbone: 2 P_b B S + 4 S^2 q_b L_b B  +  lm_head 2 H V B (S - 1)
              depth:    N K (2 H Hd + 2 P_d) + 4 K^2 q_d L_d N  +  head 2 Hd V (K - 1) N
              LoRA:     2 r (in + out) per adapted layer and position
    backward  the gradient of every matmul input that needs one (2x its forward), and of every
              trained weight (2x its forward); attention's backward is 2x its forward.

LoRA thus costs about 4 P per position and a full fine-tune about 6 P: the frozen weights get no
gradient, and q/k/v of the first backbone layer read frozen embeddings, whose gradient is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.memory_plan import CsmShape, Stack

# Dense bf16 peak of common training GPUs, FLOP/s (vendor datasheets, no sparsity).
PEAK_BF16 = {
    "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H200": 989e12, "A100": 312e12,
    "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12,
    "T4": 65e12,
}


@dataclass(frozen=True)
class StepFlops:
    forward: float
    backward: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


def _stack(s: Stack, positions: float, attention_rows: float, seq: int, mode: str, r: int,
           targets: tuple[str, ...], first_input_needs_grad: bool) -> tuple[float, float]:
    """(forward, backward) FLOPs of a decoder stack over `positions` positions in rows of `seq`."""
    fwd = bwd = 0.0
    attention = 4 * seq * seq * s.q_dim * attention_rows
    for layer in range(s.layers):
        fwd += attention
        bwd += 2 * attention
        for name, (fan_in, fan_out) in s.linear_shapes().items():
            base = 2 * fan_in * fan_out * positions
            # Only q/k/v of the first layer read the stack's input directly; everything after the
            # first residual add depends on trained weights.
            input_needs_grad = layer > 0 or first_input_needs_grad or name not in ("q_proj", "k_proj", "v_proj")
            fwd += base
            bwd += base * (int(input_needs_grad) + int(mode == "full"))
            if mode == "lora" and name in targets:
                a, b = 2 * fan_in * r * positions, 2 * r * fan_out * positions
                fwd += a + b
                bwd += (a + b) + b + (a if input_needs_grad else 0)  # weight grads, B's input, A's input
    return fwd, bwd


def step_flops(shape: CsmShape, rows: int, seq: int, depth_frames: int, mode: str = "lora", r: int = 16,
               targets: tuple[str, ...] = (), checkpointing: bool = False) -> StepFlops:
    """Model FLOPs of one step: `rows` sequences padded to `seq` positions, `depth_frames` frames
    through the depth decoder. `checkpointing` matters only for whether the first backbone layer's
    input needs a gradient (the loss marks it so for reentrant checkpointing)."""
    b, d, K, V = shape.backbone, shape.depth, shape.codebooks, shape.audio_vocab
    full = mode == "full"
    fwd, bwd = _stack(b, rows * seq, rows, seq, mode, r, targets, first_input_needs_grad=full or checkpointing)
    head = 2 * b.hidden * V * rows * (seq - 1)
    fwd, bwd = fwd + head, bwd + head * (1 + int(full))
    projector = 2 * b.hidden * d.hidden * depth_frames * K
    fwd, bwd = fwd + projector, bwd + projector * (1 + int(full))
    dfwd, dbwd = _stack(d, depth_frames * K, depth_frames, K, mode, r, targets, first_input_needs_grad=True)
    codebooks = 2 * d.hidden * V * (K - 1) * depth_frames
    return StepFlops(fwd + dfwd + codebooks, bwd + dbwd + codebooks * (1 + int(full)))


def batch_flops(model_config: Any, input_ids_shape: tuple[int, int], depth_frames: int, mode: str, r: int,
                targets: tuple[str, ...], checkpointing: bool = False) -> StepFlops:
    rows, seq = input_ids_shape
    return step_flops(CsmShape.of(model_config), rows, seq, depth_frames, mode, r, targets, checkpointing)


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, or None when unknown (no MFU is reported then)."""
    name = device_name.upper()
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        parts = key.upper().split()
        if all(p in name for p in parts):
            return PEAK_BF16[key]
    if "H100" in name:
        return PEAK_BF16["H100 SXM"]
    return None


def mfu(flops_per_step: float, seconds_per_step: float, peak: float | None) -> float | None:
    if peak is None or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / peak
