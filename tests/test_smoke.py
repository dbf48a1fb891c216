"""The smoke task: its YAML parses with SkyPilot, and its `run` runs here on the CPU against the
local S3 server, proving each step it promises; `make smoke` (README) runs the same program here."""

from __future__ import annotations

import os
import subprocess

import yaml

from infra.s3server import LOCAL_CREDENTIALS
from tests.conftest import BUCKET, PYTHON, REPO

PROMISED = ["PROVED store write", "PROVED preprocessing on cpu", "PROVED preemption", "PROVED resume", "PROVED pull",
            "PROVED spend in dollars"]


def proved(stdout: str) -> list[str]:
    return [line.split(":")[0] for line in stdout.splitlines() if line.startswith("PROVED")]


def quiet_env(tmp_path, cache_dir) -> dict[str, str]:
    """A user's shell on a CPU machine, with W&B off and the test session's model cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUARA_", "WANDB_"))}
    env.update({"PATH": f"{os.path.dirname(PYTHON)}:/usr/bin:/bin", "HOME": str(tmp_path),
                "SUARA_CACHE_DIR": str(cache_dir), "SUARA_LOGGING__WANDB_MODE": "disabled",
                "SUARA_LOGGING__VAL_EVERY": "0", "SUARA_PREPROCESS__WORKERS": "1"})
    return env


def test_the_smoke_task_runs_locally_and_says_what_it_proved(s3_endpoint, tmp_path, cache_dir):
    import sky

    spec = yaml.safe_load((REPO / "sky" / "smoke.yaml").read_text())
    task = sky.Task.from_yaml_config({**spec, "envs": {**spec["envs"], "SUARA_STORE": "s3://b/p", "SUARA_RUN_ID": "r"}})
    assert task.name == "suara-smoke" and spec["envs"]["SUARA_MODEL"] == "tiny"
    env = quiet_env(tmp_path, cache_dir)
    env.update({k: str(v) for k, v in spec["envs"].items() if v is not None})
    env.update({
        **LOCAL_CREDENTIALS, "SUARA_STORE": f"s3://{BUCKET}/smoke-{tmp_path.name}", "SUARA_RUN_ID": "smoke1",
        "SUARA_S3_ENDPOINT_URL": s3_endpoint, "SUARA_DEVICE": "cpu",  # no GPU here: the same run on the CPU
        "SMOKE_STEPS": "6", "SUARA_LOGGING__WANDB_MODE": "disabled",
    })
    out = subprocess.run(["bash", "-c", spec["run"]], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=1800)  # a hang guard
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert proved(out.stdout) == PROMISED
    assert "preflight passed" in out.stdout and "smoke run passed" in out.stdout


def test_make_smoke_runs_the_same_program_here_against_its_own_local_s3(tmp_path, cache_dir):
    env = {**quiet_env(tmp_path, cache_dir), "SUARA_DEVICE": "cpu"}
    out = subprocess.run(["make", "-o", ".venv/.suara-setup", "smoke"], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=1800)  # a hang guard
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert proved(out.stdout) == PROMISED and "smoke run passed" in out.stdout
