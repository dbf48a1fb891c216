"""Text (and a speaker) to a WAV with the base CSM plus a published adapter."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from infra.settings import Settings
from infra.storage import Store
from preprocess.text import analyze
from trainer.checkpoint import fetch_adapter
from trainer.loss import turn_ids
from trainer.model import load_for_inference


def generate(csm: Any, tokenizer: Any, text: str, speaker: int, max_seconds: float, seed: int) -> np.ndarray:
    """Sample speech for `text` from a CsmForConditionalGeneration (LoRA layers, if any, in place)."""
    normalized = analyze(text).normalized
    if not normalized:
        raise ValueError("nothing to say: the text is empty")
    cfg = csm.config
    input_ids = torch.tensor([turn_ids(tokenizer, cfg, speaker, normalized)], device=csm.device)
    # Ids past the codec's codebook are CSM specials; sampled as codes they would crash Mimi.
    outside = list(range(csm.codec_model.config.codebook_size, cfg.vocab_size))
    torch.manual_seed(seed)
    with torch.inference_mode():
        audio = csm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_audio=True,
                             max_new_tokens=int(max_seconds * csm.codec_model.config.frame_rate),
                             do_sample=True, suppress_tokens=outside, depth_decoder_suppress_tokens=outside)
    return audio[0].float().cpu().numpy() if len(audio) else np.zeros(0, np.float32)


def synthesize(settings: Settings, phase: int, text: str, out: Path, speaker: str | None = None,
               max_seconds: float = 10.0) -> Path:
    run = Store.for_run(settings)
    with tempfile.TemporaryDirectory(prefix="suara-synth-") as tmp:
        adapter_dir = Path(tmp) / "adapter"
        manifest = fetch_adapter(run, phase, speaker if phase == 4 else None, adapter_dir)
        speakers: dict[str, int] = manifest.get("speakers", {})
        if speaker is None:
            speaker = manifest.get("speaker") or (sorted(speakers)[0] if speakers else None)
        if speaker not in speakers:
            raise ValueError(f"unknown speaker {speaker!r}; this adapter knows {sorted(speakers)}")
        model, tokenizer = load_for_inference(settings, adapter_dir, manifest.get("mode", "lora"))
    samples = generate(model, tokenizer, text, speakers[speaker], max_seconds, settings.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, samples, model.codec_model.config.sampling_rate, subtype="PCM_16")
    return out
