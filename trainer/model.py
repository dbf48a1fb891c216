"""CSM base model + LoRA adapters or a full fine-tune, on one of two backends.

The base is `sesame/csm-1b`, a local path, or a generated bundle (infra/models.py); the codec inside
CSM is never trained and LoRA never touches it (Mimi's attention layers share the q/k/v/o names).

Precision: on CUDA the frozen base is held in bf16 and the step runs under bf16 autocast. What is
trained is always fp32: peft creates LoRA weights in fp32 even on a bf16 base, and a full fine-tune
upcasts every trainable weight to fp32 (master weights) before the optimizer sees it, because a
bf16 weight near 1.0 moves in steps of 2^-7 and an update of lr x gradient ~ 1e-5 rounds to nothing.

Backends:
- peft: transformers + peft; activation checkpointing when `train.gradient_checkpointing`;
- unsloth (CUDA, LoRA only): Unsloth's loader and kernels, its own LoRA (`FastModel.get_peft_model`)
  and its gradient checkpointing ("unsloth": recomputed layers, activations offloaded to the host).
"""

from __future__ import annotations

import importlib.util
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


def weights_dtype(device: torch.device) -> torch.dtype:
    """The dtype the frozen base is held in: bf16 on CUDA, fp32 on CPU (no fast bf16 matmul there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_base(settings: Settings, weights: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) with every weight frozen, on the configured device. `weights`: a saved
    full fine-tune to load instead of the base weights (the tokenizer is always the base's)."""
    from transformers import AutoTokenizer, CsmForConditionalGeneration

    source = base_model_source(settings)
    device = resolve_device(settings.device)
    model = CsmForConditionalGeneration.from_pretrained(str(weights or source), dtype=weights_dtype(device))
    model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.requires_grad_(False)
    return model, tokenizer


def _cuda_with(settings: Settings, package: str) -> bool:
    """Whether this run is on CUDA and `package` (a GPU-only extra of the image) is installed."""
    return resolve_device(settings.device).type == "cuda" and importlib.util.find_spec(package) is not None


def backend(settings: Settings) -> str:
    """"unsloth" or "peft". Unsloth needs CUDA: asking for it elsewhere is an error, not a fallback."""
    wanted = settings.train.backend
    available = _cuda_with(settings, "unsloth")
    if wanted == "unsloth" and not available:
        raise ValueError("train.backend=unsloth needs a CUDA device and the unsloth package (the GPU image's "
                         "requirements/gpu.txt); use SUARA_TRAIN__BACKEND=peft or auto elsewhere")
    if wanted == "auto":
        return "unsloth" if available and settings.train.mode == "lora" else "peft"
    return wanted


def load_trainable(settings: Settings, weights: Path | None) -> tuple[Any, Any]:
    """The model to train and its tokenizer. LoRA mode: the frozen base plus the adapter in
    `weights` (a fresh one, initialised from the torch RNG, when None), with the same LoRA
    configuration on either backend. Full mode: every weight but the codec trainable, in fp32,
    starting from the full model in `weights` or the base."""
    if backend(settings) == "unsloth":
        return _load_unsloth(settings, weights)
    if settings.train.mode == "full":
        model, tokenizer = load_base(settings, weights)
        for name, param in model.named_parameters():
            param.requires_grad_(not name.startswith("codec_model."))
        master_weights_fp32(model)
    else:
        base, tokenizer = load_base(settings)
        model = with_new_adapter(base, settings) if weights is None else with_adapter(base, weights, trainable=True)
    if settings.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, tokenizer


def master_weights_fp32(model: Any) -> None:
    """Every trainable parameter in fp32 (frozen ones keep their dtype): the optimizer then updates
    fp32 masters and bf16 autocast casts them for each matmul."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each decoder layer (backbone and depth decoder) in the backward pass. Non-reentrant
    checkpointing: no input needs `requires_grad`, and dropout masks are replayed exactly."""
    from trainer.loss import csm_parts

    csm_parts(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _load_unsloth(settings: Settings, weights: Path | None) -> tuple[Any, Any]:
    """CSM through Unsloth (CUDA only): its loader (optionally a 4-bit base), its LoRA and its
    gradient checkpointing. A saved adapter is loaded into the same Unsloth LoRA structure, so a
    resumed run is built exactly like a fresh one."""
    from unsloth import FastModel  # noqa: I001 - Unsloth patches transformers when imported
    from transformers import CsmForConditionalGeneration

    model, processor = FastModel.from_pretrained(
        model_name=base_model_source(settings), max_seq_length=2048, dtype=None,
        auto_model=CsmForConditionalGeneration, load_in_4bit=settings.train.load_in_4bit,
        full_finetuning=False, use_gradient_checkpointing="unsloth",
    )
    lora = settings.train.lora
    model = FastModel.get_peft_model(
        model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
        target_modules=lora_target_regex(lora), use_gradient_checkpointing="unsloth",
        # Unsloth reseeds every RNG with this; the trainer seeded them with the same value just before.
        random_state=torch.initial_seed() % 2**32, use_rslora=False, loftq_config=None,
    )
    if weights is not None:
        load_adapter_weights(model, weights)
    master_weights_fp32(model)  # a no-op where Unsloth already keeps LoRA weights in fp32
    return model, getattr(processor, "tokenizer", processor)


def load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    """Saved LoRA weights into a model that already has the same LoRA structure."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(Path(adapter_dir) / "adapter_model.safetensors"))
    if result.unexpected_keys:
        raise ValueError(f"the adapter in {adapter_dir} does not fit this LoRA configuration: unexpected "
                         f"{result.unexpected_keys[:3]}...; were train.lora settings changed mid-run?")


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


def lora_target_regex(lora: LoraSettings) -> str:
    """The target modules as one pattern that also excludes the codec: Unsloth's get_peft_model takes
    target names or a pattern but no exclusion list (peft matches a string pattern on the full name)."""
    names = "|".join(sorted(lora.target_modules))
    return rf"^(?!.*codec_model).*\.({names})$"


def with_new_adapter(model: Any, settings: Settings) -> Any:
    """A fresh LoRA adapter (initialised from the torch RNG, so seed first)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(settings.train.lora))


def with_adapter(model: Any, adapter_dir: Path, trainable: bool) -> Any:
    """The base with a saved adapter loaded (to continue training it, or for inference)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def optimizer_kind(settings: Settings) -> str:
    """"adamw" or "adamw_8bit" (bitsandbytes, CUDA only)."""
    wanted = settings.train.optimizer
    available = _cuda_with(settings, "bitsandbytes")
    if wanted == "adamw_8bit" and not available:
        raise ValueError("train.optimizer=adamw_8bit needs a CUDA device and the bitsandbytes package (the GPU "
                         "image's requirements/gpu.txt); use SUARA_TRAIN__OPTIMIZER=adamw or auto elsewhere")
    if wanted == "auto":
        return "adamw_8bit" if available else "adamw"
    return wanted


def make_optimizer(settings: Settings, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """AdamW over fp32 parameters, with fp32 moments or bitsandbytes' 8-bit ones (`optimizer_kind`)."""
    not_fp32 = {p.dtype for p in params if p.dtype != torch.float32}
    if not_fp32:
        raise ValueError(f"trainable parameters in {sorted(map(str, not_fp32))}: AdamW updates would round away; "
                         "upcast them first (trainer.model.master_weights_fp32)")
    if optimizer_kind(settings) == "adamw_8bit":
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
