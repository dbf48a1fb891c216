"""CSM base model + LoRA adapters (transformers + peft).

The base is `sesame/csm-1b`, a local path, or the offline tiny bundle; the codec inside CSM is
never trained and LoRA never touches it (Mimi's attention layers share the q/k/v/o names).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from infra.models import model_source, resolve_device
from infra.settings import LoraSettings, Settings

log = logging.getLogger(__name__)
CODEC_MODULES = r".*codec_model.*"


def base_model_source(settings: Settings) -> str:
    return model_source(settings.model, settings.cache_dir)


def load_base(settings: Settings, weights: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) with every weight frozen, on the configured device. `weights`: a saved
    full fine-tune to load instead of the base weights (the tokenizer is always the base's)."""
    from transformers import AutoTokenizer, CsmForConditionalGeneration

    source = base_model_source(settings)
    device = resolve_device(settings.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = CsmForConditionalGeneration.from_pretrained(str(weights or source), dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.requires_grad_(False)
    return model, tokenizer


def backend(settings: Settings) -> str:
    """"unsloth" or "peft". Unsloth needs CUDA: asking for it elsewhere is an error, not a fallback."""
    import importlib.util

    wanted = settings.train.backend
    cuda = resolve_device(settings.device).type == "cuda"
    available = cuda and importlib.util.find_spec("unsloth") is not None
    if wanted == "unsloth" and not available:
        raise ValueError("train.backend=unsloth needs a CUDA device and the unsloth package (the GPU image's "
                         "requirements/gpu.txt); use SUARA_TRAIN__BACKEND=peft or auto elsewhere")
    if wanted == "auto":
        return "unsloth" if available and settings.train.mode == "lora" else "peft"
    return wanted


def _load_unsloth_base(settings: Settings) -> tuple[Any, Any]:
    """CSM through Unsloth's loader (its patched kernels; optionally a 4-bit base), frozen."""
    from unsloth import FastModel  # noqa: I001 - Unsloth patches transformers when imported
    from transformers import CsmForConditionalGeneration

    model, processor = FastModel.from_pretrained(
        model_name=base_model_source(settings), max_seq_length=2048, dtype=None,
        auto_model=CsmForConditionalGeneration, load_in_4bit=settings.train.load_in_4bit,
    )
    model.requires_grad_(False)
    return model, getattr(processor, "tokenizer", processor)


def load_trainable(settings: Settings, weights: Path | None) -> tuple[Any, Any]:
    """The model to train and its tokenizer. LoRA mode: the frozen base plus the adapter in
    `weights` (a fresh one, initialised from the torch RNG, when None), with the same LoRA
    configuration on either backend. Full mode: every weight but the codec trainable, starting from
    the full model in `weights` or the base."""
    if backend(settings) == "unsloth":
        base, tokenizer = _load_unsloth_base(settings)
        model = with_new_adapter(base, settings) if weights is None else with_adapter(base, weights, trainable=True)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        return model, tokenizer
    if settings.train.mode == "full":
        model, tokenizer = load_base(settings, weights)
        for name, param in model.named_parameters():
            param.requires_grad_(not name.startswith("codec_model."))
        return model, tokenizer
    base, tokenizer = load_base(settings)
    model = with_new_adapter(base, settings) if weights is None else with_adapter(base, weights, trainable=True)
    return model, tokenizer


def load_for_inference(settings: Settings, weights: Path, mode: str) -> tuple[Any, Any]:
    """A published phase (LoRA adapter merged into the base, or a full fine-tune), in eval mode."""
    if mode == "full":
        model, tokenizer = load_base(settings, weights)
        return model.eval(), tokenizer
    base, tokenizer = load_base(settings)
    return with_adapter(base, weights, trainable=False).merge_and_unload().eval(), tokenizer


def lora_config(lora: LoraSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), exclude_modules=CODEC_MODULES, bias="none",
    )


def with_new_adapter(model: Any, settings: Settings) -> Any:
    """A fresh LoRA adapter (initialised from the torch RNG, so seed first)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(settings.train.lora))


def with_adapter(model: Any, adapter_dir: Path, trainable: bool) -> Any:
    """The base with a saved adapter loaded (to continue training it, or for inference)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def make_optimizer(settings: Settings, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """AdamW; 8-bit AdamW (bitsandbytes) on the Unsloth backend, as the seed's 24 GB plan assumes."""
    if backend(settings) == "unsloth":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=settings.train.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=settings.train.weight_decay)


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the model has no trainable parameters; is the LoRA adapter loaded as trainable?")
    return params


def check_codec_fits(model: Any, codec_info: dict) -> None:
    """The shards' codes must come from this model's codec (same codebook count)."""
    expected = model.config.num_codebooks
    got = codec_info.get("num_codebooks")
    if got is None or got < expected:
        raise ValueError(
            f"the data was encoded with codec {codec_info.get('name')!r} ({got} codebooks) but the model "
            f"needs {expected}; preprocess again with the model's codec (SUARA_CODEC)"
        )
