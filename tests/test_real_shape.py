"""The real CSM-1B shape without a download: `random:sesame/csm-1b` with `random:kyutai/mimi`.

The fast tests check the generated configuration and tokenizer against the real layout without
building weights. The slow one runs every stage at the full size on CPU, through the commands a
user types: preprocess a few clips (32 codebooks), train 2 steps at batch 2, checkpoint, resume,
pull, and 1 s of synthesis; it prints peak RSS and seconds per step and checks the memory plan.
The 1.6 B-parameter bundle is built once into the settings' default cache (~/.cache/suara) and
reused by every later run.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import threading
import time
from pathlib import Path

import pytest

from infra.models import AUDIO_EOS_ID, AUDIO_ID, BOS_ID, EOS_ID, PAD_ID, RANDOM_CSM, RANDOM_MIMI
from infra.settings import SettingsError, load_settings
from tests.conftest import PYTHON, REPO, small_corpus

REAL_CACHE = Path.home() / ".cache" / "suara"
CLIPS = ["ms_001_01", "ms_004_02", "en_001_01", "en_004_02", "ms_003_01", "en_005_01"]  # phase-1 training clips


def test_the_generated_pair_is_accepted_and_mismatches_are_named():
    assert load_settings(model=RANDOM_CSM, codec=RANDOM_MIMI).model == RANDOM_CSM
    with pytest.raises(SettingsError, match="do not fit together"):
        load_settings(model=RANDOM_CSM)  # with the tiny codec
    with pytest.raises(SettingsError, match="do not fit together"):
        load_settings(model=RANDOM_CSM, codec="kyutai/mimi")
    with pytest.raises(SettingsError, match="not a generated model"):
        load_settings(model="random:sesame/csm-8b", codec=RANDOM_MIMI)


def test_the_generated_config_is_csm_1b_and_mimi():
    from transformers import CsmConfig, MimiConfig

    from infra.models import random_csm_config

    config, real = random_csm_config(), CsmConfig()
    for field in ("num_codebooks", "vocab_size", "text_vocab_size", "hidden_size", "intermediate_size",
                  "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                  "bos_token_id", "audio_token_id", "audio_eos_token_id", "codebook_eos_token_id"):
        assert getattr(config, field) == getattr(real, field), field
    assert config.depth_decoder_config.to_dict() == real.depth_decoder_config.to_dict()
    codec = MimiConfig()
    assert (config.codec_config.num_quantizers, config.codec_config.codebook_size) == (32, 2048)
    assert config.codec_config.to_dict() == codec.to_dict()
    assert (config.num_codebooks, config.vocab_size, config.text_vocab_size) == (32, 2051, 128_256)
    assert (config.hidden_size, config.num_hidden_layers, config.depth_decoder_config.hidden_size,
            config.depth_decoder_config.num_hidden_layers) == (2048, 16, 1024, 4)
    assert real.pad_token_id == real.audio_token_id  # the default the generated bundle must not copy
    assert config.pad_token_id == PAD_ID != config.audio_token_id


def test_the_stand_in_tokenizer_has_the_real_special_ids_and_reads_any_text():
    from infra.models import real_layout_tokenizer

    tok = real_layout_tokenizer()
    assert len(tok) == 128_256
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)
    assert tok.convert_tokens_to_ids(["<|AUDIO|>", "<|audio_eos|>"]) == [AUDIO_ID, AUDIO_EOS_ID]
    text = "[1]Okay lah, jom makan 你好 café"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert max(ids) < 256 and tok.decode(ids) == text  # bytes only: no placeholder is ever produced
    assert tok("<|AUDIO|><|audio_eos|>", add_special_tokens=False)["input_ids"] == [AUDIO_ID, AUDIO_EOS_ID]


# -- every stage at the full size -----------------------------------------------------------------
def _cli(module: str, args: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """Run `python -m module args`; its stderr, the seconds between its first two logged steps (0 if
    fewer), and its peak RSS in bytes (from the kernel's accounting of that one child)."""
    proc = subprocess.Popen([PYTHON, "-m", module, *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    stamps: list[float] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if re.search(r"phase1 step \d+/", line):
                stamps.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    err = "".join(lines)
    assert proc.returncode == 0, err[-4000:]
    step_s = stamps[1] - stamps[0] if len(stamps) >= 2 else 0.0
    return out + err, step_s, usage.ru_maxrss * 1024


@pytest.mark.slow
def test_every_stage_runs_at_the_real_shape_on_cpu(tmp_path):
    import numpy as np
    import soundfile as sf

    from infra.storage import Store
    from preprocess.pipeline import input_store, run

    corpus = small_corpus(tmp_path / "corpus", CLIPS)
    store = f"file://{tmp_path / 'store'}"
    settings = load_settings(store=store, run_id="real", cache_dir=REAL_CACHE, model=RANDOM_CSM, codec=RANDOM_MIMI)

    started = time.monotonic()
    report = run(settings, input_store(str(corpus), settings), progress=False)
    preprocess_s = time.monotonic() - started
    manifest = Store.for_run(settings).get_json("data/manifest.json")
    assert report.samples == len(CLIPS) and manifest["codec"]["num_codebooks"] == 32
    from trainer.data import first_samples

    (tmp_path / "scratch").mkdir()
    coded = first_samples(Store.for_run(settings), "data/phase4/speaker_01/train", 1, tmp_path / "scratch")[0]
    assert coded.codes.shape[1] == 32 and len(np.unique(coded.codes)) > 32  # random codebooks, not all zero

    env = {k: v for k, v in os.environ.items() if not k.startswith("SUARA_")}
    env.update({"SUARA_STORE": store, "SUARA_RUN_ID": "real", "SUARA_CACHE_DIR": str(REAL_CACHE),
                "SUARA_MODEL": RANDOM_CSM, "SUARA_CODEC": RANDOM_MIMI, "SUARA_LOGGING__WANDB_MODE": "disabled",
                "SUARA_LOGGING__VAL_EVERY": "0", "SUARA_TRAIN__LOG_EVERY": "1", "SUARA_TRAIN__CHECKPOINT_EVERY": "2",
                "SUARA_TRAIN__PHASES__1__BATCH_SIZE": "2", "SUARA_TRAIN__PHASES__1__WARMUP_STEPS": "0",
                "PYTHONUNBUFFERED": "1"})
    # Built here, outside the timed training run, when the cache does not have it yet.
    from infra.models import random_csm_bundle

    random_csm_bundle(REAL_CACHE)

    log, step_s, rss = _cli("trainer", ["train", "--phase", "1", "--max-steps", "2", "--no-progress"], env)
    assert "13467648 trainable parameters" in log, log[-2000:]  # LoRA r16 on q/k/v/o/gate/up/down
    resumed, _, resume_rss = _cli("trainer", ["train", "--phase", "1", "--max-steps", "3", "--no-progress"], env)
    assert "resumed phase1 from step 2" in resumed and "phase1 step 3/3" in resumed
    pulled, _, _ = _cli("trainer", ["pull", "--phase", "1", "--to", str(tmp_path / "adapter")], env)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file(), pulled
    wav = tmp_path / "hello.wav"
    said, _, synth_rss = _cli("trainer", ["synth", "--phase", "1", "--text", "Selamat pagi, okay lah.",
                                          "--max-seconds", "1", "--out", str(wav)], env)
    audio, rate = sf.read(wav)
    assert rate == 24_000 and 0 < len(audio) <= 24_000 + 1920 and np.isfinite(audio).all(), said

    print(f"\nreal shape on CPU: preprocess {len(CLIPS)} clips {preprocess_s:.0f} s; training peak RSS "
          f"{rss / 2**30:.1f} GiB, {step_s:.0f} s/step at batch 2; resume peak RSS {resume_rss / 2**30:.1f} GiB; "
          f"synthesis peak RSS {synth_rss / 2**30:.1f} GiB; this process {_self_rss() / 2**30:.1f} GiB")


def _self_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.slow
def test_the_memory_plan_matches_the_real_shape_on_cpu(tmp_path):
    """Parameters, LoRA, gradients and optimizer state to the byte; activations within the stated
    factor, measured on a real batch of two clips through the trainer's loss."""
    import torch

    from infra.settings import LoraSettings
    from tests.conftest import shard_sample
    from trainer.loss import build_batch, weighted_csm_loss
    from trainer.memory_plan import CsmShape, Setup, activation_bytes, measure_saved_bytes, optimizer_bytes
    from trainer.memory_plan import trainable_tensors as planned_tensors
    from trainer.model import load_trainable, trainable_parameters

    settings = load_settings(cache_dir=REAL_CACHE, model=RANDOM_CSM, codec=RANDOM_MIMI)
    torch.manual_seed(0)
    model, tok = load_trainable(settings, None)
    model.train()
    shape = CsmShape.of(model.config)
    targets = tuple(LoraSettings().target_modules)
    assert sum(shape.parameters().values()) == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    params = trainable_parameters(model)
    assert sorted(planned_tensors(shape, Setup(targets=targets))) == sorted(p.numel() for p in params)

    samples = [shard_sample(i, n, codebooks=32) for i, n in enumerate((60, 45))]  # 4.8 s and 3.6 s
    batch = build_batch(samples, tok, model.config, {"s": 0})
    with measure_saved_bytes(model) as saved:
        parts = weighted_csm_loss(model, batch, depth_frame_ratio=1 / 16)
    frames = max(1, round(sum(s.frames + 1 for s in samples) / 16))
    predicted = activation_bytes(shape, batch.input_ids.numel(), frames, "lora", 16, targets, act_bytes=4)
    ratio = saved() / predicted["activations"]
    parts.loss.backward()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values())
    assert state == optimizer_bytes([p.numel() for p in params], "adamw")
    print(f"\nreal shape activations (fp32, batch 2, {batch.input_ids.shape[1]} positions, {frames} depth frames): "
          f"measured {saved() / 2**20:.0f} MiB, planned {predicted['activations'] / 2**20:.0f} MiB, ratio {ratio:.2f}")
    assert 1 / 1.5 < ratio < 1.5
