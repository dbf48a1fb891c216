"""The whole pipeline on both stores: preprocess, phases 1-4, pull with verification, synthesis."""

from __future__ import annotations

import json
import subprocess

import pytest
import soundfile as sf

from infra.storage import Store
from preprocess.pipeline import input_store, run
from tests.conftest import BUCKET, PYTHON, copy_store, small_corpus, subprocess_env, train_every_phase
from trainer.train import PhaseTrainer

# Two rows per phase and speaker whose ids hash to the train split, so every phase has data.
CORPUS_IDS = ["ms_001_01", "ms_004_02", "en_001_01", "en_004_02", "cs_001_01", "cs_003_01", "cs_002_02",
              "cs_004_02", "pa_001_01", "pa_005_01", "pa_002_02", "pa_004_02"]


@pytest.fixture(params=["file", "s3"])
def pipeline_settings(request, tmp_path, make_settings):
    if request.param == "file":
        return make_settings(steps=4)
    endpoint = request.getfixturevalue("s3_endpoint")
    return make_settings(store=f"s3://{BUCKET}/e2e-{tmp_path.name}", s3_endpoint_url=endpoint, steps=4)


def test_pipeline_end_to_end(pipeline_settings, tmp_path):
    settings = pipeline_settings
    corpus = small_corpus(tmp_path / "corpus", CORPUS_IDS)
    report = run(settings, input_store(str(corpus), settings), progress=False)
    assert report.samples == len(CORPUS_IDS) and report.quarantined == 0
    run_store = Store.for_run(settings)

    train_every_phase(settings)
    published = sorted(k for k in run_store.list("adapters") if k.endswith("manifest.json"))
    assert published == ["adapters/phase1/manifest.json", "adapters/phase2/manifest.json",
                         "adapters/phase3/manifest.json", "adapters/phase4/speaker_01/manifest.json",
                         "adapters/phase4/speaker_02/manifest.json"]

    env = subprocess_env(settings)
    pulled = tmp_path / "pulled"
    out = subprocess.run([PYTHON, "-m", "trainer", "pull", "--phase", "3", "--to", str(pulled)],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (pulled / "adapter_model.safetensors").is_file() and "verified" in out.stdout

    wav = tmp_path / "hello.wav"
    out = subprocess.run([PYTHON, "-m", "trainer", "synth", "--phase", "4", "--speaker", "speaker_02",
                          "--text", "Okay lah, saya pergi dulu.", "--out", str(wav), "--max-seconds", "2"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    audio, rate = sf.read(wav)
    assert rate == 24_000 and 0 < len(audio) <= 2 * 24_000 + 1920 and abs(audio).max() > 0

    # A tampered adapter object is caught by pull, and nothing of it lands in the folder.
    key = "adapters/phase3/adapter_model.safetensors"
    data = bytearray(run_store.get_bytes(key))
    data[-1] ^= 0xFF
    run_store.put_bytes(key, bytes(data))
    out = subprocess.run([PYTHON, "-m", "trainer", "pull", "--phase", "3", "--to", str(tmp_path / "bad")],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "sha256" in out.stderr
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.pull-*"))


def test_adapter_manifest_records_what_synthesis_needs(preprocessed_store, tmp_path, make_settings):

    settings = make_settings(store=copy_store(preprocessed_store, tmp_path / "s"), run_id="shared", steps=2)
    trainer = PhaseTrainer(settings, 1, progress=False)
    try:
        trainer.setup()
        trainer.train()
    finally:
        trainer.cleanup()
    manifest = json.loads((tmp_path / "s/runs/shared/adapters/phase1/manifest.json").read_text())
    assert manifest["speakers"] == {"speaker_01": 0, "speaker_02": 1}
    assert manifest["steps"] == 2 and manifest["base_model"] == "tiny"
    assert set(manifest["objects"]) >= {"adapter_model.safetensors", "adapter_config.json"}
