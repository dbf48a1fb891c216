"""W&B in the cloud: without a key the run is offline, written under WANDB_DIR, and uploaded to the
store when the logger closes, so it outlives the instance."""

from __future__ import annotations

from infra.storage import Store
from trainer.logger import RunLogger


def test_an_offline_run_lands_in_wandb_dir_and_is_uploaded_to_the_store(make_settings, tmp_path):
    settings = make_settings(logging={"wandb_mode": "online"})
    store = Store.for_run(settings).child("wandb")
    logger = RunLogger(settings, "phase4/spk1", None, upload_to=store,
                       environ={"WANDB_DIR": str(tmp_path / "wdir"), "WANDB_MODE": "offline"})
    assert logger.mode == "offline"  # asked for online, but no WANDB_API_KEY
    logger.log(1, {"loss": 1.0})
    logger.close()
    local = list((tmp_path / "wdir" / "wandb").glob(f"offline-run-*-{logger.run_id}"))
    assert len(local) == 1
    uploaded = store.list(f"phase4__spk1/{local[0].name}")
    assert any(key.endswith(f"run-{logger.run_id}.wandb") for key in uploaded)
