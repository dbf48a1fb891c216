"""The launch commands users type, run as typed through SkyPilot's own CLI (tests/sky_shim.py stops
it where it would contact a server), and `python -m infra launch`'s checks before anything exists."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.launch import LaunchError, check_launchable, secret_names, tasks_of
from infra.settings import load_settings
from tests.conftest import PYTHON, REPO

SKY = REPO / "sky"
IMAGE = "ghcr.io/acme/suara:1a2b3c4"
SHELL = {  # what the README asks a user to export
    "SUARA_STORE": "s3://my-bucket/suara", "SUARA_RUN_ID": "run1", "SUARA_IMAGE": IMAGE,
    "AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "secret-test", "HF_TOKEN": "hf-test",
}


def launch_lines() -> list[tuple[str, str]]:
    """(source, command) for every `sky launch` / `sky jobs launch` shown in README.md and sky/*.yaml,
    continuation lines joined, as a reader would copy them."""
    found = []
    for src in [REPO / "README.md", *sorted(SKY.glob("*.yaml"))]:
        joined = re.sub(r"\\\n\s*#?\s*", " ", src.read_text())
        for line in joined.splitlines():
            match = re.search(r"\bsky (?:jobs )?launch\b.*", line.lstrip("# "))
            if match and ".yaml" in match.group(0):
                found.append((src.name, match.group(0).split(" #")[0].strip().rstrip("`)")))
    return found


@pytest.fixture
def sky_on_path(tmp_path):
    """A `sky` on PATH that is SkyPilot's CLI stopped before any network, and the env to call it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "sky"
    shim.write_text(f"#!/bin/sh\nexec {PYTHON} -m tests.sky_shim \"$@\"\n")
    shim.chmod(0o755)
    record = tmp_path / "record.jsonl"
    env = {"PATH": f"{bin_dir}:{Path(PYTHON).parent}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO), "SKY_SHIM_RECORD": str(record), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}

    def launched() -> list[dict]:
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    return env, launched


def run_as_typed(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_the_readme_and_the_task_files_show_launch_commands():
    sources = {src for src, _ in launch_lines()}
    assert "README.md" in sources and {f"{n}.yaml" for n in ("preprocess", "phase1", "smoke")} <= sources


@pytest.mark.parametrize("source, command", launch_lines())
def test_each_printed_launch_command_is_accepted_by_skypilot_as_typed(sky_on_path, source, command):
    env, launched = sky_on_path
    out = run_as_typed(command, {**env, **SHELL, "RAW_INPUT": "s3://my-bucket/raw/"})
    assert out.returncode == 0, f"{source}: {command}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    (record,) = launched()
    for task in record["tasks"]:
        assert task["envs"]["SUARA_STORE"] == SHELL["SUARA_STORE"] and task["envs"]["SUARA_RUN_ID"] == "run1"
        assert all(r["image"] == IMAGE for r in task["resources"]), "the real image reaches SkyPilot"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(task["secrets"])


def test_a_command_without_a_required_secret_is_refused_before_anything_is_created(sky_on_path):
    env, launched = sky_on_path
    command = next(c for s, c in launch_lines() if s == "phase1.yaml" and "jobs launch" in c)
    out = run_as_typed(command.replace("--secret HF_TOKEN", ""), {**env, **SHELL})
    assert out.returncode != 0 and "No value available for secret(s): HF_TOKEN" in out.stderr
    assert launched() == []


def test_a_command_without_the_store_or_run_id_is_refused_by_skypilots_parser(sky_on_path):
    env, launched = sky_on_path
    command = next(c for s, c in launch_lines() if s == "phase1.yaml" and "jobs launch" in c)
    out = run_as_typed(command.replace("--env SUARA_RUN_ID", ""), {**env, **SHELL})
    assert out.returncode != 0 and "SUARA_RUN_ID" in out.stderr
    assert launched() == []


def test_wandb_is_optional_and_passed_when_given(sky_on_path):
    env, launched = sky_on_path
    command = next(c for s, c in launch_lines() if s == "phase1.yaml" and "jobs launch" in c)
    assert run_as_typed(command + " --secret WANDB_API_KEY", {**env, **SHELL, "WANDB_API_KEY": "w"}).returncode == 0
    assert "WANDB_API_KEY" in launched()[0]["tasks"][0]["secrets"]


@pytest.mark.parametrize("name", ["preprocess", "phase1", "phase2", "phase3", "phase4", "smoke", "pipeline"])
def test_secrets_a_task_needs_are_required_and_the_rest_have_defaults(name):
    required, optional = secret_names(tasks_of(SKY / f"{name}.yaml"))
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(required)
    assert "WANDB_API_KEY" in optional
    uses_real_model = any(t["envs"]["SUARA_MODEL"] != "tiny" and "trainer train" in t["run"]
                          for t in tasks_of(SKY / f"{name}.yaml"))
    assert ("HF_TOKEN" in required) == uses_real_model  # csm-1b is gated; the codec and the tiny model are not


def test_runpod_logs_in_as_the_images_user_and_vast_runs_the_container_as_root(sky_on_path):
    env, launched = sky_on_path
    command = next(c for s, c in launch_lines() if s == "phase1.yaml" and "jobs launch" in c)
    assert run_as_typed(command, {**env, **SHELL}).returncode == 0
    docker = (REPO / "Dockerfile").read_text()
    uid, user = re.search(r"useradd .*--uid (\d+) (\w+)", docker).groups()
    assert re.search(rf"^USER {uid}\b", docker, re.M)  # the image's login user
    by_cloud = {r["cloud"]: r for r in launched()[0]["tasks"][0]["resources"]}
    assert by_cloud["RunPod"]["runpod_user"] == user == "suara"
    assert by_cloud["Vast"]["vast_create_instance_kwargs"] == {"user": "root"}


def test_infra_launch_lists_everything_missing_in_one_message():
    tasks = tasks_of(SKY / "pipeline.yaml")
    with pytest.raises(LaunchError) as err:
        check_launchable(load_settings(), clouds=[], tasks=tasks, environ={}, raw_input=None)
    text = str(err.value)
    for needed in ("s3://bucket/prefix", "SUARA_RUN_ID", "SUARA_IMAGE is not set", "--raw-input",
                   "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, HF_TOKEN", "sky check"):
        assert needed in text, needed


@pytest.mark.parametrize("image", ["ghcr.io/suara-tts/suara:0.1.0", "SET-SUARA_IMAGE/suara:see-README",
                                   "ghcr.io/you/suara:1a2b3c4", "ghcr.io/You/suara:abc", "suara"])
def test_placeholder_or_malformed_images_are_refused(image):
    settings = load_settings(store="s3://b/p", image=image)
    with pytest.raises(LaunchError, match="SUARA_IMAGE"):
        check_launchable(settings, ["AWS"], tasks_of(SKY / "phase1.yaml"), {**SHELL, "SUARA_IMAGE": image})


def enable_clouds(home: Path, clouds: list[str]) -> None:
    """What `sky check` leaves behind: SkyPilot's own record of the enabled clouds."""
    code = ("from sky import global_user_state as g; from sky.clouds.cloud import CloudCapability as C;"
            f"g.set_enabled_clouds({clouds!r}, C.COMPUTE, 'default')")
    subprocess.run([PYTHON, "-c", code], check=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                                                          "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"})


def test_make_train_all_cloud_launches_every_task_with_the_real_image_and_the_counted_price(sky_on_path, tmp_path):
    env, launched = sky_on_path
    enable_clouds(Path(env["HOME"]), ["AWS", "RunPod"])
    out = subprocess.run(["make", "-o", ".venv/.suara-setup", "train-all", "CLOUD=1", "RAW_INPUT=s3://my-bucket/raw/"],
                         capture_output=True, text=True, cwd=REPO, env={**env, **SHELL}, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "jobs controller" in out.stdout and "vast" not in out.stdout.lower().split("jobs controller")[0]
    (record,) = launched()
    assert [t["name"] for t in record["tasks"]] == ["suara-preprocess"] + [f"suara-phase{p}" for p in (1, 2, 3, 4)]
    declared = {yaml.safe_load((SKY / "phase1.yaml").read_text())["envs"]["SUARA_BUDGET__HOURLY_PRICE_USD"]}
    for task in record["tasks"]:
        assert {r["image"] for r in task["resources"]} == {IMAGE}
        assert {task["envs"]["SUARA_BUDGET__HOURLY_PRICE_USD"]} == declared  # the YAML's price, not another
    assert record["tasks"][0]["envs"]["RAW_INPUT"] == "s3://my-bucket/raw/"


def test_make_smoke_cloud_runs_an_unmanaged_cluster_that_tears_itself_down(sky_on_path):
    env, launched = sky_on_path
    enable_clouds(Path(env["HOME"]), ["AWS"])
    shell = {k: v for k, v in SHELL.items() if k != "HF_TOKEN"}  # the tiny model needs no Hub token
    out = subprocess.run(["make", "-o", ".venv/.suara-setup", "smoke", "CLOUD=1"], capture_output=True, text=True,
                         cwd=REPO, env={**env, **shell}, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (record,) = launched()
    assert record["kind"] == "launch" and {"-i", "30", "--down"} <= set(record["args"])
    (task,) = record["tasks"]
    assert task["envs"]["SUARA_MODEL"] == "tiny" and {r["image"] for r in task["resources"]} == {IMAGE}
    assert all(r["max_hourly_cost"] == 0.60 for r in task["resources"])


def test_a_private_registry_login_travels_as_secrets(sky_on_path):
    env, launched = sky_on_path
    enable_clouds(Path(env["HOME"]), ["AWS"])
    login = {"SKYPILOT_DOCKER_USERNAME": "me", "SKYPILOT_DOCKER_PASSWORD": "ghp-test",
             "SKYPILOT_DOCKER_SERVER": "ghcr.io"}
    out = subprocess.run([PYTHON, "-m", "infra", "launch", "sky/phase1.yaml"], capture_output=True, text=True,
                         cwd=REPO, env={**env, **SHELL, **login}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    resources = launched()[0]["tasks"][0]["resources"]
    assert {r["docker_login_server"] for r in resources} == {"ghcr.io"}
    assert "ghp-test" not in out.stdout + out.stderr


def test_task_files_ask_only_for_pairs_in_skypilots_catalog():
    import csv

    import sky

    snapshot = REPO / "tests" / "data" / "skypilot-catalog" / "v8" / "common" / "accelerators.csv"
    offered = {(cloud.lower(), row["AcceleratorName"]) for row in csv.DictReader(snapshot.open())
               for cloud in yaml.safe_load(row["Clouds"].replace("'", '"'))}
    for path in sorted(SKY.glob("*.yaml")):
        if path.name == "serve.yaml":
            continue
        for doc in [d for d in yaml.safe_load_all(path.read_text()) if d and "resources" in d]:
            env_doc = {**doc, "envs": {k: v if v is not None else "x" for k, v in doc["envs"].items()}}
            task = sky.Task.from_yaml_config(env_doc)
            for r in task.resources:
                for gpu in r.accelerators or {}:
                    assert (str(r.cloud).lower(), gpu) in offered, f"{path.name}: {r.cloud} has no {gpu}"


def test_exit_codes_yamls_and_readme_agree():
    from infra import exit_codes

    readme = (REPO / "README.md").read_text()
    for path in sorted(SKY.glob("*.yaml")):
        if path.name == "serve.yaml":
            continue
        for doc in [d for d in yaml.safe_load_all(path.read_text()) if d and "resources" in d]:
            if path.name == "smoke.yaml":  # launched unmanaged: job_recovery would be ignored
                assert "job_recovery" not in doc["resources"]
                continue
            recovery = doc["resources"]["job_recovery"]
            assert recovery["recover_on_exit_codes"] == list(exit_codes.RETRYABLE), path.name
            assert recovery["max_restarts_on_errors"] == exit_codes.MAX_RESTARTS_ON_ERRORS, path.name
    for code in (exit_codes.PREEMPTED, exit_codes.BUDGET_EXHAUSTED, exit_codes.FENCED, exit_codes.STALLED,
                 exit_codes.PREFLIGHT_FAILED):
        assert re.search(rf"\b{code}\b", readme), f"README does not explain exit {code}"
    assert f"max_restarts_on_errors: {exit_codes.MAX_RESTARTS_ON_ERRORS}" in readme


def test_shlex_can_read_every_printed_command():
    for _, command in launch_lines():
        shlex.split(command)
    assert os.path.exists(SKY / "smoke.yaml")
