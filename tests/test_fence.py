"""Fencing: a stale instance that wakes up cannot overwrite a newer instance's checkpoints."""

from __future__ import annotations

import pytest

from infra.storage import Store
from tests.conftest import BUCKET, copy_store
from trainer import exit_codes
from trainer.checkpoint import Checkpoints
from trainer.fence import Fence, Fenced
from trainer.train import PhaseTrainer


@pytest.fixture(params=["file", "s3"])
def run_store(request, tmp_path):
    if request.param == "file":
        return Store(f"file://{tmp_path}/fence")
    return Store(f"s3://{BUCKET}/fence-{tmp_path.name}", request.getfixturevalue("s3_endpoint"))


def test_conditional_create_succeeds_once(run_store):
    assert run_store.put_if_absent("k", b"first")
    assert not run_store.put_if_absent("k", b"second")
    assert run_store.get_bytes("k") == b"first"


def test_a_newer_claim_fences_the_older_instance(run_store):
    old, new = Fence(run_store, "phase1"), Fence(run_store, "phase1")
    assert old.claim() == 1 and new.claim() == 2
    new.check()
    with pytest.raises(Fenced, match="superseded by generation 2"):
        old.check()
    Fence(run_store, "phase2").claim()  # other scopes are independent
    new.check()


def test_a_superseded_trainer_stops_without_writing(preprocessed_store, tmp_path, make_settings):
    settings = make_settings(store=copy_store(preprocessed_store, tmp_path / "store"), run_id="shared", steps=8)
    stale = PhaseTrainer(settings, 1, progress=False)
    try:
        stale.setup()
        Fence(stale.run, "phase1").claim()  # the replacement instance starts meanwhile
        assert stale.train() == exit_codes.FENCED
    finally:
        stale.cleanup()
    run = Store.for_run(settings)
    assert Checkpoints(run, "phase1", 3).steps() == []
    assert not run.exists("adapters/phase1/manifest.json")
