"""Text (and a speaker) to a WAV with the base CSM plus a published adapter."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from infra.settings import Settings
from infra.storage import Store
from preprocess.text import analyze
from trainer.checkpoint import fetch_adapter
from trainer.model import load_base, with_adapter


def synthesize(settings: Settings, phase: int, text: str, out: Path, speaker: str | None = None,
               max_seconds: float = 10.0) -> Path:
    run = Store.from_settings(settings).child(settings.run_prefix)
    with tempfile.TemporaryDirectory(prefix="suara-synth-") as tmp:
        adapter_dir = Path(tmp) / "adapter"
        manifest = fetch_adapter(run, phase, speaker if phase == 4 else None, adapter_dir)
        speakers: dict[str, int] = manifest.get("speakers", {})
        if speaker is None:
            speaker = manifest.get("speaker") or (sorted(speakers)[0] if speakers else None)
        if speaker not in speakers:
            raise ValueError(f"unknown speaker {speaker!r}; this adapter knows {sorted(speakers)}")
        base, tokenizer = load_base(settings)
        model = with_adapter(base, adapter_dir, trainable=False).merge_and_unload().eval()

    normalized = analyze(text).normalized
    if not normalized:
        raise ValueError("nothing to say: the text is empty")
    cfg = model.config
    text_ids = tokenizer(f"[{speakers[speaker]}]{normalized}", add_special_tokens=False)["input_ids"]
    prompt = [cfg.bos_token_id, *text_ids, tokenizer.convert_tokens_to_ids(tokenizer.eos_token)]
    input_ids = torch.tensor([prompt], device=model.device)
    frame_rate = model.codec_model.config.frame_rate
    # Ids past the codec's codebook are CSM specials; sampled as codes they would crash Mimi.
    outside = list(range(model.codec_model.config.codebook_size, cfg.vocab_size))
    torch.manual_seed(settings.seed)
    with torch.inference_mode():
        audio = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                               output_audio=True, max_new_tokens=int(max_seconds * frame_rate), do_sample=True,
                               suppress_tokens=outside, depth_decoder_suppress_tokens=outside)
    samples = audio[0].float().cpu().numpy() if len(audio) else np.zeros(0, np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, samples, model.codec_model.config.sampling_rate, subtype="PCM_16")
    return out
