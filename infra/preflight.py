"""Preflight: the checks every cloud task runs first, before it pays for a model download.

    python -m infra preflight --stage train     # or preprocess

A GPU billed while the job runs on the CPU, a driver too old for torch's CUDA, a card without
bf16 or with too little free memory, a store the credentials cannot write, a gated model whose
licence the token's account has not accepted: each of these would otherwise surface minutes (and
dollars) later, or never. Every check runs; all failures are reported in one message, and the
exit code is PREFLIGHT_FAILED (infra/exit_codes.py).

What torch reports about CUDA is gathered in `CudaFacts`, so the rules are tested on machines
without a GPU by passing the facts in.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from infra.settings import Settings
from infra.storage import Store, StoreError, with_retries

log = logging.getLogger(__name__)
GIB = 1 << 30
Stage = Literal["preprocess", "train"]
# Free GPU memory a stage needs at start, by model size: the 16-bit CSM-1B base with LoRA at batch
# 4 peaks near 17 GiB; Mimi encoding batches of clips need a few; the tiny model needs almost none.
MIN_FREE_GIB = {("train", "full"): 18.0, ("train", "4bit"): 9.0, ("preprocess", "full"): 3.0}
TINY_MIN_FREE_GIB = 0.5
HUB = "https://huggingface.co"


@dataclass(frozen=True)
class CudaFacts:
    """What this machine's CUDA stack reports (torch, and the driver's own version)."""

    available: bool
    torch_cuda: str | None  # the CUDA version torch was built for, e.g. "13.0"
    driver_cuda: str | None  # the newest CUDA version the installed driver supports, e.g. "12.4"
    device_name: str | None = None
    free_bytes: int = 0
    total_bytes: int = 0
    bf16: bool = False


def cuda_facts() -> CudaFacts:
    import torch

    driver = _driver_cuda_version()
    if not torch.cuda.is_available():
        return CudaFacts(False, torch.version.cuda, driver)
    free, total = torch.cuda.mem_get_info()
    return CudaFacts(True, torch.version.cuda, driver, torch.cuda.get_device_name(0), free, total,
                     torch.cuda.is_bf16_supported())


def _driver_cuda_version() -> str | None:
    """The driver's CUDA version from libcuda itself (present on any host with an NVIDIA driver)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def check_cuda(facts: CudaFacts, stage: Stage, settings: Settings) -> list[str]:
    """Why this machine cannot run the stage on its GPU (empty: it can, or the stage is not asked
    to run on CUDA)."""
    if settings.device != "cuda":
        return []
    problems = []
    if facts.torch_cuda is None:
        return ["torch is a CPU-only build: the image must install the CUDA build from the lock"]
    if facts.driver_cuda is not None and _version(facts.driver_cuda) < _version(facts.torch_cuda):
        problems.append(
            f"the NVIDIA driver supports CUDA {facts.driver_cuda}, older than the CUDA {facts.torch_cuda} torch "
            f"was built for: this host needs a newer driver (CUDA 13 needs driver >= 580); the job restarts "
            "elsewhere, or pin the accelerators/regions to hosts with a current driver")
    if not facts.available:
        if not problems:
            problems.append("no CUDA device is visible (device=cuda): the instance has no usable GPU")
        return problems
    need = _needed_gib(stage, settings)
    if facts.free_bytes < need * GIB:
        problems.append(f"{facts.device_name} has {facts.free_bytes / GIB:.1f} GiB free of "
                        f"{facts.total_bytes / GIB:.1f}; the {stage} stage needs {need:.0f} GiB")
    if stage == "train" and not facts.bf16:
        problems.append(f"{facts.device_name} has no bf16 (the trainer's autocast): use an Ampere or newer GPU")
    return problems


def _needed_gib(stage: Stage, settings: Settings) -> float:
    if settings.model == "tiny":
        return TINY_MIN_FREE_GIB
    size = "4bit" if stage == "train" and settings.train.load_in_4bit else "full"
    return MIN_FREE_GIB.get((stage, size), MIN_FREE_GIB[("preprocess", "full")])


def check_store(settings: Settings) -> list[str]:
    """Write, read back and delete a small object under the run's prefix."""
    run = Store.for_run(settings)
    key = f"_preflight/{uuid.uuid4().hex}.txt"
    body = b"suara preflight"
    try:
        run.put_bytes(key, body)
        if run.get_bytes(key) != body:
            return [f"the store {run.uri(key)} returned different bytes than were written"]
        run.delete(key)
    except (StoreError, OSError) as exc:
        return [f"cannot write and read the store {run.url} ({exc}): check SUARA_STORE, the bucket, and that "
                "the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY secrets may read and write it "
                "(python -m infra iam-policy prints a policy that allows it)"]
    return []


def check_model_access(name: str, token: str | None, endpoint: str = HUB,
                       get: Callable[..., Any] | None = None, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """A hub model the token can download (a gated one needs its licence accepted); local paths and
    `tiny` need nothing."""
    if name == "tiny" or os.path.isdir(name):
        return []
    import requests
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        build_hf_headers,
        hf_raise_for_status,
    )

    get = get or requests.get
    url = f"{endpoint.rstrip('/')}/api/models/{name}/auth-check"
    headers = build_hf_headers(token=token or False)

    def ask() -> None:
        hf_raise_for_status(get(url, headers=headers, timeout=30))

    try:
        with_retries(ask, f"checking access to {name}", attempts=4,
                     transient=(requests.ConnectionError, requests.Timeout), sleep=sleep)
    except GatedRepoError:
        return [f"{name} is gated and this HF_TOKEN's account has not accepted its licence: accept it at "
                f"{HUB}/{name}, then relaunch"]
    except RepositoryNotFoundError:
        hint = "pass --secret HF_TOKEN (a read token)" if not token else "the HF_TOKEN was refused; make a new one"
        return [f"{name} cannot be read: {hint} ({HUB}/settings/tokens)"]
    except HfHubHTTPError as exc:
        return [f"the Hugging Face Hub refused access to {name}: {exc}"]
    except (requests.ConnectionError, requests.Timeout) as exc:
        return [f"the Hugging Face Hub ({endpoint}) did not answer after retries: {exc}"]
    return []


def run_preflight(settings: Settings, stage: Stage, facts: CudaFacts | None = None,
                  environ: dict[str, str] | None = None) -> list[str]:
    """Every check's findings, in one list (empty: all passed). The Hub is HF_ENDPOINT's, as for
    huggingface_hub itself."""
    environ = dict(os.environ) if environ is None else environ
    token = environ.get("HF_TOKEN") or None
    hub = environ.get("HF_ENDPOINT") or HUB
    problems = []
    if settings.device == "cuda":
        facts = facts or cuda_facts()
        log.info("CUDA: %s, torch CUDA %s, driver CUDA %s, %.1f GiB free", facts.device_name, facts.torch_cuda,
                 facts.driver_cuda, facts.free_bytes / GIB)
        problems += check_cuda(facts, stage, settings)
    problems += check_store(settings)
    # Training downloads the (gated) model; preprocessing only the codec.
    problems += check_model_access(settings.model if stage == "train" else settings.codec, token, hub)
    return problems
