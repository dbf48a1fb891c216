"""From a published adapter to a deployment: atomic pulls, incomplete adapters, the merged export."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import numpy as np
import pytest
import torch

from infra.storage import Store, sha256_file
from tests.conftest import PYTHON, REPO, copy_store, subprocess_env
from trainer.checkpoint import (
    CheckpointError,
    Checkpoints,
    adapter_prefix,
    fetch_adapter,
    publish_adapter,
    pull_adapter,
    pull_best,
)
from trainer.export import model_card

KEY = "adapters/phase3/adapter_model.safetensors"


@pytest.fixture
def deploy(published_store, tmp_path, make_settings):
    """A private copy of the published store and settings that point at it."""
    settings = make_settings(store=copy_store(published_store, tmp_path / "store"), run_id="shared", steps=2)
    return settings, Store.for_run(settings)


def _cli(settings, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "trainer", *argv], env=subprocess_env(settings, OMP_NUM_THREADS="1", **env),
                          capture_output=True, text=True, cwd=REPO)


def _hashes(folder) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


# -- pulls -------------------------------------------------------------------------------------
def test_a_pull_that_fails_verification_leaves_the_folder_as_it_was_and_no_staging_behind(deploy, tmp_path):
    settings, run = deploy
    target = tmp_path / "adapters" / "phase3"
    ok = _cli(settings, "pull", "--phase", "3", "--to", str(target))
    assert ok.returncode == 0, ok.stderr[-2000:]
    good = _hashes(target)
    assert {"adapter_model.safetensors", "adapter_config.json", "manifest.json"} <= set(good)

    data = bytearray(run.get_bytes(KEY))
    data[-1] ^= 0xFF  # one flipped bit in the store
    run.put_bytes(KEY, bytes(data))
    bad = _cli(settings, "pull", "--phase", "3", "--to", str(target))
    assert bad.returncode == 2 and "sha256" in bad.stderr
    assert _hashes(target) == good  # still the verified adapter, not the corrupt one
    assert [p.name for p in target.parent.iterdir()] == ["phase3"]  # the staging folder is gone

    fresh = tmp_path / "fresh"
    with pytest.raises(CheckpointError, match="sha256"):
        pull_adapter(run, 3, None, fresh)
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["adapters", "store"]


def test_an_object_missing_from_the_store_fails_the_pull_without_touching_the_folder(deploy, tmp_path):
    settings, run = deploy
    target = tmp_path / "phase2"
    pull_adapter(run, 2, None, target)
    good = _hashes(target)
    run.delete("adapters/phase2/adapter_config.json")
    with pytest.raises(CheckpointError, match="listed but missing"):
        pull_adapter(run, 2, None, target)
    assert _hashes(target) == good and [p.name for p in tmp_path.iterdir() if p.name != "store"] == ["phase2"]


def test_a_pull_replaces_an_earlier_pull_whole(deploy, tmp_path):
    _, run = deploy
    target = tmp_path / "current"
    pull_adapter(run, 2, None, target)
    manifest = pull_adapter(run, 3, None, target)
    assert json.loads((target / "manifest.json").read_text())["phase"] == 3
    assert set(_hashes(target)) == set(manifest["objects"]) | {"manifest.json"}
    assert all(_hashes(target)[name] == digest for name, digest in manifest["objects"].items())


def test_a_pull_never_overwrites_a_folder_that_is_not_an_adapter(deploy, tmp_path):
    _, run = deploy
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my notes")
    with pytest.raises(CheckpointError, match="not an adapter pulled before"):
        pull_adapter(run, 3, None, target)
    assert (target / "notes.txt").read_text() == "my notes" and len(list(target.iterdir())) == 1


def test_a_best_checkpoint_is_pulled_all_or_nothing_as_well(tmp_path):
    run = Store(f"file://{tmp_path}/store")
    ranked = Checkpoints(run, "phase1", keep_last=1, keep_best=2, metric="val_loss")
    for step, score in [(1, 2.0), (2, 1.0)]:
        local = tmp_path / f"checkpoint{step}"
        (local / "weights").mkdir(parents=True)
        (local / "weights" / "adapter_model.safetensors").write_bytes(f"weights of step {step}".encode())
        (local / "state.json").write_text("{}")
        ranked.save(step, local, score=score)
    target = tmp_path / "pulled" / "best"
    assert pull_best(run, "phase1", "val_loss", target)["step"] == 2
    assert (target / "adapter_model.safetensors").read_bytes() == b"weights of step 2"
    assert json.loads((target / "pulled.json").read_text())["rank"] == 1
    good = _hashes(target)

    key = "checkpoints/phase1/step_000001/weights/adapter_model.safetensors"
    run.put_bytes(key, b"weights of step 1, tampered")
    with pytest.raises(CheckpointError, match="sha256"):
        pull_best(run, "phase1", "val_loss", target, rank=2)
    assert _hashes(target) == good and [p.name for p in target.parent.iterdir()] == ["best"]


# -- incomplete adapters --------------------------------------------------------------------------
def _republish_incomplete(run: Store, phase: int, tmp_path) -> None:
    """Publish phase `phase`'s adapter again as a budget-exhausted run does (`complete: false`)."""
    local = tmp_path / f"adapter{phase}"
    manifest = fetch_adapter(run, phase, None, local)
    info = {k: v for k, v in manifest.items() if k not in ("objects", "phase", "speaker")}
    publish_adapter(run, local, phase, None, {**info, "complete": False})


def test_an_incomplete_adapter_is_labelled_warned_about_and_refused_by_the_next_phase(deploy, tmp_path):
    settings, run = deploy
    _republish_incomplete(run, 2, tmp_path)
    run.delete("checkpoints/phase3")  # phase 3 starts afresh, from phase 2's adapter
    run.delete(adapter_prefix(3))

    listing = _cli(settings, "adapters")
    assert listing.returncode == 0, listing.stderr[-2000:]
    lines = {line.split(":")[0].strip(): line for line in listing.stdout.splitlines() if "phase" in line}
    assert "INCOMPLETE" in lines["phase 2"] and "INCOMPLETE" not in lines["phase 1"]

    pulled = _cli(settings, "pull", "--phase", "2", "--to", str(tmp_path / "p2"))
    assert pulled.returncode == 0 and "warning: this adapter is incomplete" in pulled.stderr

    refused = _cli(settings, "train", "--phase", "3", "--no-progress")
    assert refused.returncode == 2 and "phase 2's adapter is incomplete" in refused.stderr
    assert "--allow-incomplete" in refused.stderr and not run.exists("checkpoints/phase3")

    allowed = _cli(settings, "train", "--phase", "3", "--no-progress", "--allow-incomplete")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert run.get_json("adapters/phase3/manifest.json")["complete"] is True


# -- export -----------------------------------------------------------------------------------------
PLAIN_LOAD = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from transformers import AutoProcessor, CsmForConditionalGeneration

    model = CsmForConditionalGeneration.from_pretrained(sys.argv[1]).eval()
    processor = AutoProcessor.from_pretrained(sys.argv[1])
    conversation = [{"role": "0", "content": [{"type": "text", "text": "Okay lah, jom."}]}]
    inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
    outside = list(range(model.codec_model.config.codebook_size, model.config.vocab_size))
    audio = model.generate(**inputs, output_audio=True, max_new_tokens=4, do_sample=False,
                           depth_decoder_do_sample=False, suppress_tokens=outside,
                           depth_decoder_suppress_tokens=outside)
    np.save(sys.argv[2], audio[0].numpy())
    ours = sorted({m.split(".")[0] for m in sys.modules} & {"trainer", "preprocess", "infra", "peft"})
    print(json.dumps({"input_ids": inputs["input_ids"][0].tolist(), "imported": ours}))
""")


def test_export_is_a_merged_checkpoint_that_plain_transformers_loads_and_says_the_same(deploy, tmp_path,
                                                                                      cache_dir):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from infra.models import tiny_bundle
    from trainer.model import load_for_inference
    from trainer.synth import SynthOptions, generate_piece, prompt_ids

    settings, run = deploy
    out = tmp_path / "suara-phase3"
    result = _cli(settings, "export", "--phase", "3", "--to", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json", "README.md"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    exported = load_file(out / "model.safetensors")
    assert not any("lora" in key or "base_layer" in key for key in exported)
    base = load_file(tiny_bundle(cache_dir) / "model.safetensors")
    changed = [k for k in base if k in exported and not torch.equal(base[k], exported[k])]
    assert changed and all(k.startswith(("backbone_model.", "depth_decoder.")) for k in changed)  # merged LoRA

    # A fresh interpreter with transformers alone: loads it, builds CSM's prompt, generates.
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_LOAD)
    plain = subprocess.run([PYTHON, "-I", str(script), str(out), str(tmp_path / "plain.npy")], capture_output=True,
                           text=True, cwd=tmp_path, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert plain.returncode == 0, plain.stderr[-3000:]
    report = json.loads(plain.stdout.strip().splitlines()[-1])
    assert report["imported"] == []

    # Suara's own path (adapter merged in memory) says the same thing, from the same prompt.
    adapter = tmp_path / "adapter"
    manifest = fetch_adapter(run, 3, None, adapter)
    model, tokenizer = load_for_inference(settings, adapter, manifest["mode"])
    assert report["input_ids"] == prompt_ids(tokenizer, model.config, 0, "Okay lah, jom.")
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()
    ours, frames, _ = generate_piece(model, tokenizer, "Okay lah, jom.", 0, 4, SynthOptions(temperature=0))
    assert frames == 4 and np.allclose(np.load(tmp_path / "plain.npy"), ours, atol=1e-5)


def test_the_model_card_names_the_base_phases_data_hours_evaluation_and_licence(deploy, tmp_path):
    settings, run = deploy
    manifest = run.get_json("adapters/phase3/manifest.json")
    card = model_card(run, settings, 3, None, manifest, "unused")
    assert card.startswith("---\nlicense: other\nbase_model: tiny\n")
    assert "| 1 | one language, no particle | 2 | yes |" in card
    assert "| 3 | with discourse particles | 2 | yes |" in card
    data_rows = [line for line in card.splitlines() if re.match(r"\| phase\d", line)]
    assert [row.split("|")[1].strip() for row in data_rows] == ["phase1/train", "phase2/train", "phase3/train"]
    header = next(line for line in card.splitlines() if line.startswith("| data |"))
    assert {"en", "ms", "particle"} <= {c.strip() for c in header.split("|")}
    hours = [float(cell) for cell in data_rows[0].split("|")[3:-1]]
    assert hours[0] > 0 and 0 < sum(hours[1:]) <= hours[0]  # words' time within the clips' time
    assert "No evaluation figures in the store for phase3" in card
    assert "| speaker_01 | 0 |" in card and "| speaker_02 | 1 |" in card and "random weights" in card

    run.put_json("eval/phase3/summary.json", {"val": {"single_language": 3.2109, "particle": 4.5}, "mcd_db": 7})
    run.put_json("eval/phase2/summary.json", {"val": {"single_language": 9.9}})
    card = model_card(run, settings, 3, None, manifest, "unused")
    assert "From `eval/phase3/summary.json`" in card and "| val.single_language | 3.211 |" in card
    assert "| mcd_db | 7 |" in card and "9.9" not in card


def test_the_model_card_of_a_speaker_adapter_counts_that_speakers_data(deploy):
    settings, run = deploy
    manifest = run.get_json("adapters/phase4/speaker_02/manifest.json")
    card = model_card(run, settings, 4, "speaker_02", manifest, "unused")
    assert "phase4/speaker_02/train" in card and "| 4 speaker_02 | one speaker's utterances | 2 |" in card
    assert '"role": "1"' in card  # the snippet speaks as this speaker


def test_export_refuses_a_folder_with_files_and_a_phase_four_export_without_a_speaker(deploy, tmp_path):
    from trainer.export import export

    settings, _ = deploy
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        export(settings, 3, None, tmp_path / "full")
    with pytest.raises(ValueError, match="--speaker"):
        export(settings, 4, None, tmp_path / "new")
    assert not (tmp_path / "new").exists()
