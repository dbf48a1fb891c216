"""The smoke task: its YAML parses with SkyPilot, and its `run` runs here on the CPU against the
local S3 server, proving each step it promises."""

from __future__ import annotations

import os
import subprocess

import yaml

from infra.s3server import LOCAL_CREDENTIALS
from tests.conftest import BUCKET, PYTHON, REPO


def test_the_smoke_task_runs_locally_and_says_what_it_proved(s3_endpoint, tmp_path, cache_dir):
    import sky

    spec = yaml.safe_load((REPO / "sky" / "smoke.yaml").read_text())
    task = sky.Task.from_yaml_config({**spec, "envs": {**spec["envs"], "SUARA_STORE": "s3://b/p", "SUARA_RUN_ID": "r"}})
    assert task.name == "suara-smoke" and spec["envs"]["SUARA_MODEL"] == "tiny"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUARA_", "WANDB_"))}
    env.update({k: str(v) for k, v in spec["envs"].items() if v is not None})
    env.update({
        **LOCAL_CREDENTIALS, "PATH": f"{os.path.dirname(PYTHON)}:/usr/bin:/bin",
        "SUARA_STORE": f"s3://{BUCKET}/smoke-{tmp_path.name}", "SUARA_RUN_ID": "smoke1",
        "SUARA_S3_ENDPOINT_URL": s3_endpoint, "SUARA_DEVICE": "cpu",  # no GPU here: the same run on the CPU
        "SUARA_CACHE_DIR": str(cache_dir), "SMOKE_STEPS": "6", "SUARA_LOGGING__WANDB_MODE": "disabled",
        "SUARA_LOGGING__VAL_EVERY": "0", "SUARA_PREPROCESS__WORKERS": "1", "HOME": str(tmp_path),
    })
    out = subprocess.run(["bash", "-c", spec["run"]], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    proved = [line for line in out.stdout.splitlines() if line.startswith("PROVED")]
    assert [p.split(":")[0] for p in proved] == [
        "PROVED store write", "PROVED preprocessing on cpu", "PROVED preemption", "PROVED resume", "PROVED pull",
        "PROVED spend in dollars"]
    assert "preflight passed" in out.stdout and "smoke run passed" in out.stdout
