"""How much accelerator memory a training step needs, from the model's config alone.

    python -m trainer.memory_plan            # the table for CSM-1B (CsmConfig() defaults), markdown

The formulas (docs/memory-plan.md derives them) count bytes in four groups:

- weights: every parameter at the base's dtype (bf16, or NF4 for the quantisable linear layers);
  in full mode the trainable ones are fp32 master weights, plus the bf16 copies autocast caches;
- training state: fp32 LoRA weights (or the masters), their fp32 gradients, and the optimizer's
  moments: AdamW 8 bytes per parameter plus a 4-byte step per tensor, 8-bit AdamW 2 bytes per
  parameter plus fp32 block maxima (one per 256) and two 256-entry code books per tensor;
- activations: what autograd keeps for the backward pass, per sequence position of the backbone
  and per depth-decoder frame (K positions), listed tensor by tensor below for one decoder layer;
  with gradient checkpointing only each layer's input is kept, plus one layer's full set while it
  is recomputed;
- transient: the fp32 log-softmax gradients of the two losses, alive at the start of backward.

`measure_saved_bytes` measures the activation term on any device (the bytes of the distinct
tensors autograd saves, parameters excluded), which is how tests check the formula on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

FRAME_RATE_HZ = 12.5
TEXT_TOKENS_PER_SECOND = 4.0  # Llama 3 BPE on read speech: ~15 characters/s, ~4 characters a token
PROMPT_OVERHEAD_TOKENS = 5  # <|begin_of_text|>, "[0]" (2-3 tokens), <|end_of_text|>
AUDIO_EOS_POSITIONS = 1
GiB = 2**30


@dataclass(frozen=True)
class Stack:
    """One Llama-style decoder stack."""

    hidden: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # kv heads x head_dim
    intermediate: int
    heads: int
    layers: int

    @classmethod
    def of(cls, config: Any) -> Stack:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(config.hidden_size, config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim,
                   config.intermediate_size, config.num_attention_heads, config.num_hidden_layers)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer, by module name."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_parameters(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden  # + two RMSNorms

    def lora_parameters(self, r: int, targets: tuple[str, ...]) -> int:
        return self.layers * sum(r * (a + b) for name, (a, b) in self.linear_shapes().items() if name in targets)


@dataclass(frozen=True)
class CsmShape:
    backbone: Stack
    depth: Stack
    codebooks: int  # K
    audio_vocab: int  # V (codebook size + 3 specials)
    text_vocab: int
    tie_codebooks: bool
    codec_parameters: int  # the frozen Mimi inside, counted from its module tree

    @classmethod
    def of(cls, config: Any) -> CsmShape:
        return cls(Stack.of(config), Stack.of(config.depth_decoder_config), config.num_codebooks, config.vocab_size,
                   config.text_vocab_size, bool(config.tie_codebooks_embeddings), _codec_parameters(config))

    def parameters(self) -> dict[str, int]:
        """Parameter count of each part of CsmForConditionalGeneration."""
        b, d, K, V = self.backbone, self.depth, self.codebooks, self.audio_vocab
        audio_embed = K * V * b.hidden
        return {
            "text_embedding": self.text_vocab * b.hidden,
            "audio_embedding": audio_embed,
            "backbone_layers": b.layers * b.layer_parameters() + b.hidden,  # + final norm
            "lm_head": b.hidden * V,
            "depth_embedding": 0 if self.tie_codebooks else audio_embed,  # tied to the backbone's by default
            "depth_projector": b.hidden * d.hidden,
            "depth_layers": d.layers * d.layer_parameters() + d.hidden,
            "codebooks_head": (K - 1) * d.hidden * V,
            "codec": self.codec_parameters,
        }

    def quantisable(self) -> int:
        """Parameters in the decoder layers' linear weights: what a 4-bit base quantises (Unsloth keeps
        embeddings, heads, norms and the codec in 16 bit)."""
        return sum(s.layers * sum(a * b for a, b in s.linear_shapes().values()) for s in (self.backbone, self.depth))

    def lora_parameters(self, r: int, targets: tuple[str, ...]) -> int:
        return self.backbone.lora_parameters(r, targets) + self.depth.lora_parameters(r, targets)


def _codec_parameters(config: Any) -> int:
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        codec = AutoModel.from_config(config.codec_config)
    return sum(p.numel() for p in codec.parameters())


# -- activations -----------------------------------------------------------------------------------
@dataclass
class Saved:
    """Values autograd keeps, split by the dtype they are kept in: `act` in the compute dtype (bf16
    under autocast, fp32 on CPU), `fp32` always fp32, `mask` one byte each (dropout masks)."""

    act: float = 0.0
    fp32: float = 0.0
    mask: float = 0.0

    def __add__(self, other: Saved) -> Saved:
        return Saved(self.act + other.act, self.fp32 + other.fp32, self.mask + other.mask)

    def __mul__(self, k: float) -> Saved:
        return Saved(self.act * k, self.fp32 * k, self.mask * k)

    def bytes(self, act_bytes: int) -> float:
        return self.act * act_bytes + self.fp32 * 4 + self.mask


def layer_saved(s: Stack, mode: str, r: int, targets: tuple[str, ...], dropout: bool) -> Saved:
    """What one decoder layer keeps per position (LoRA or full mode, no checkpointing):
    the residual stream entering each RMSNorm (h, twice) and the norm's 1/rms (fp32, twice); each
    norm's output, the input of the projections after it (h, twice); q, k, v after RoPE and the
    attention output, plus its fp32 log-sum-exp per head (scaled-dot-product attention keeps
    these, not the scores); o_proj's input (q_dim); gate and up outputs, SiLU(gate) and their
    product, down_proj's input (4 x intermediate). LoRA adds per adapted layer its rank-r hidden
    value and, with dropout, the dropped copy of the layer's input and its mask. Full mode keeps
    each norm's pre-weight output too (the norm weight is trained)."""
    h, q, kv, i = s.hidden, s.q_dim, s.kv_dim, s.intermediate
    saved = Saved(act=2 * h + 2 * h + (q + 2 * kv) + q + q + 4 * i, fp32=2 + s.heads)
    if mode == "full":
        saved += Saved(act=2 * h)
        return saved
    for name, (fan_in, _) in s.linear_shapes().items():
        if name in targets:
            saved += Saved(act=r + (fan_in if dropout else 0), mask=fan_in if dropout else 0)
    return saved


@dataclass(frozen=True)
class Workload:
    batch: int
    seconds: float  # audio per sample
    depth_ratio: float = 1.0  # share of frames the depth decoder trains on

    @property
    def frames(self) -> int:
        return math.ceil(self.seconds * FRAME_RATE_HZ)

    @property
    def positions(self) -> int:
        """Backbone sequence positions per sample: prompt tokens, frames, the audio EOS frame."""
        text = math.ceil(self.seconds * TEXT_TOKENS_PER_SECOND) + PROMPT_OVERHEAD_TOKENS
        return text + self.frames + AUDIO_EOS_POSITIONS

    @property
    def depth_frames(self) -> int:
        return max(1, round(self.batch * (self.frames + AUDIO_EOS_POSITIONS) * self.depth_ratio))


def activation_bytes(shape: CsmShape, tokens: int, frames: int, mode: str = "lora", r: int = 16,
                     targets: tuple[str, ...] = (), dropout: bool = True, checkpointing: bool = False,
                     act_bytes: int = 2) -> dict[str, float]:
    """Saved activations of one step over `tokens` backbone positions (rows x padded length) and
    `frames` depth-decoder frames, and the transient peak on top of them, in bytes."""
    b, d, K, V = shape.backbone, shape.depth, shape.codebooks, shape.audio_vocab
    b_layer = layer_saved(b, mode, r, targets, dropout)
    d_layer = layer_saved(d, mode, r, targets, dropout)
    # Outside the layers: the backbone's final norm (input, 1/rms, output) and the codebook-0
    # log-softmax (fp32, V per position); per depth frame, the embedded codes entering the projector
    # (K x backbone width), the final norm, and the codebook log-softmax (fp32, (K-1) x V). The
    # codebook head gathers its (K-1) weight matrices into one new tensor each step, kept for the
    # input gradient. Full mode also keeps what the trained norm weights and lm_head need: each final
    # norm's pre-weight output and lm_head's input (copied: it is the hidden state without its last
    # position), and the gathered head weight is an fp32 master cast for autocast.
    outside_b = Saved(act=2 * b.hidden, fp32=1 + V)
    outside_d = Saved(act=K * b.hidden + K * 2 * d.hidden, fp32=K + (K - 1) * V)
    head = (K - 1) * d.hidden * V * act_bytes
    if mode == "full":
        outside_b += Saved(act=2 * b.hidden)
        outside_d += Saved(act=2 * K * d.hidden)
        head += (K - 1) * d.hidden * V * 4 if act_bytes != 4 else 0
    if checkpointing:  # each layer keeps only its input; one layer's set lives again while recomputed
        inputs = (b.layers * b.hidden * tokens + d.layers * d.hidden * K * frames) * act_bytes
        layers = Saved()
        recompute = max((b_layer * tokens).bytes(act_bytes), (d_layer * (K * frames)).bytes(act_bytes))
    else:
        inputs = 0
        layers = b_layer * (b.layers * tokens) + d_layer * (d.layers * K * frames)
        recompute = 0.0
    saved = layers + outside_b * tokens + outside_d * frames
    # Backward starts with the fp32 gradients of both log-softmaxes (and their bf16 logits).
    transient = (V * tokens + (K - 1) * V * frames) * (4 + act_bytes)
    return {"activations": saved.bytes(act_bytes) + head, "checkpoint_inputs": inputs,
            "transient": transient + recompute}


# -- the whole step --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    mode: str = "lora"  # lora | full
    base: str = "bf16"  # bf16 | nf4 (4-bit, LoRA only)
    r: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    dropout: bool = True
    optimizer: str = "adamw"  # adamw | adamw_8bit
    checkpointing: bool = False
    act_bytes: int = 2  # bf16 autocast


@dataclass
class Estimate:
    setup: Setup
    work: Workload
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def trainable_tensors(shape: CsmShape, setup: Setup) -> list[int]:
    """Sizes of the trainable tensors (the optimizer keeps per-tensor state)."""
    b, d, K, V = shape.backbone, shape.depth, shape.codebooks, shape.audio_vocab
    if setup.mode == "lora":
        return [n for s in (b, d) for _ in range(s.layers)
                for name, (fan_in, fan_out) in s.linear_shapes().items() if name in setup.targets
                for n in (setup.r * fan_in, setup.r * fan_out)]
    sizes = [shape.text_vocab * b.hidden, K * V * b.hidden, b.hidden * V, b.hidden * d.hidden, (K - 1) * d.hidden * V,
             b.hidden, d.hidden]
    if not shape.tie_codebooks:
        sizes.append(K * V * b.hidden)
    for s in (b, d):
        sizes += [a * c for _ in range(s.layers) for a, c in s.linear_shapes().values()]
        sizes += [s.hidden] * (2 * s.layers)
    return sizes


def optimizer_bytes(tensors: list[int], kind: str) -> int:
    """AdamW: two fp32 moments per parameter and a 4-byte step per tensor. 8-bit AdamW
    (bitsandbytes): one byte per moment for tensors of >= 4096 values, with an fp32 maximum per
    block of 256 and two 256-entry fp32 code books per moment; smaller tensors keep fp32 moments."""
    if kind == "adamw":
        return sum(8 * n + 4 for n in tensors)
    total = 0
    for n in tensors:
        if n >= 4096:
            total += 2 * n + 2 * 4 * math.ceil(n / 256) + 2 * 256 * 4 + 4
        else:
            total += 8 * n + 4
    return total


def estimate(shape: CsmShape, setup: Setup, work: Workload) -> Estimate:
    params = shape.parameters()
    total = sum(params.values())
    tensors = trainable_tensors(shape, setup)
    trainable = sum(tensors)
    parts: dict[str, float] = {}
    if setup.mode == "full":
        frozen = params["codec"]
        parts["weights"] = 4 * trainable + 2 * frozen  # fp32 masters, the codec in bf16
        # Autocast keeps a bf16 copy of each fp32 weight it casts for a matmul, for the whole forward.
        parts["autocast_copies"] = 2 * (shape.quantisable() + params["lm_head"] + params["depth_projector"]
                                        + params["codebooks_head"]) if setup.act_bytes == 2 else 0
    elif setup.base == "nf4":
        q = shape.quantisable()
        parts["weights"] = q * (0.5 + 0.127 / 8) + 2 * (total - q)  # NF4 + double-quantised block maxima
        parts["lora_weights"] = 4 * trainable
    else:
        parts["weights"] = 2 * total
        parts["lora_weights"] = 4 * trainable
    parts["gradients"] = 4 * trainable
    parts["optimizer"] = optimizer_bytes(tensors, setup.optimizer)
    parts.update(activation_bytes(shape, work.batch * work.positions, work.depth_frames, setup.mode, setup.r,
                                  setup.targets, setup.dropout, setup.checkpointing, setup.act_bytes))
    return Estimate(setup, work, parts)


# -- measurement -----------------------------------------------------------------------------------
@contextmanager
def measure_saved_bytes(model: Any) -> Iterator[Callable[[], int]]:
    """Within the block, the bytes of the distinct tensors autograd saves for backward (storages
    counted once; the model's parameters excluded): the activation memory of a forward pass."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield lambda: sum(seen.values())


# -- the table ---------------------------------------------------------------------------------------
BATCHES = (1, 2, 4, 8)
SECONDS = (10.0, 20.0)


def real_shape() -> CsmShape:
    from transformers import CsmConfig

    return CsmShape.of(CsmConfig())


def markdown_table(shape: CsmShape, setups: dict[str, Setup], depth_ratio: float) -> str:
    head = "| setup | " + " | ".join(f"b{b} {s:.0f} s" for s in SECONDS for b in BATCHES) + " |"
    lines = [head, "|" + "---|" * (1 + len(SECONDS) * len(BATCHES))]
    for name, setup in setups.items():
        cells = [f"{estimate(shape, setup, Workload(b, s, depth_ratio)).total / GiB:.1f}"
                 for s in SECONDS for b in BATCHES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SETUPS = {
    "LoRA r16, bf16 base, AdamW": Setup(),
    "LoRA r16, bf16 base, AdamW, checkpointing": Setup(checkpointing=True),
    "LoRA r16, 4-bit base, 8-bit AdamW, checkpointing": Setup(base="nf4", optimizer="adamw_8bit", checkpointing=True),
    "full, fp32 masters, 8-bit AdamW, checkpointing": Setup(mode="full", optimizer="adamw_8bit", checkpointing=True),
    "full, fp32 masters, AdamW, checkpointing": Setup(mode="full", checkpointing=True),
}


def main() -> None:
    shape = real_shape()
    params = shape.parameters()
    print(f"CSM-1B: {sum(params.values()):,} parameters "
          + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in params.items()))
    print(f"LoRA r16 on q/k/v/o/gate/up/down: {shape.lora_parameters(16, Setup().targets):,} parameters")
    for ratio in (1.0, 1 / 16):
        print(f"\nGiB per step, depth decoder on {'every frame' if ratio == 1 else '1/16 of frames'}:\n")
        print(markdown_table(shape, SETUPS, ratio))


if __name__ == "__main__":
    main()
