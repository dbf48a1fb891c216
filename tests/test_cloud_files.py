"""SkyPilot task files (parsed by SkyPilot itself), the Dockerfile (hadolint), the launch checks."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.launch import LaunchError, check_launchable, launch_command, tasks_of
from infra.settings import load_settings
from tests.conftest import PYTHON, REPO
from trainer import exit_codes

SKY = REPO / "sky"
TASKS = ["preprocess", "phase1", "phase2", "phase3", "phase4"]
GPUS_24GB = {"RTX4090", "RTX3090", "RTXA5000", "L4", "A10G", "A10", "RTXA6000", "A6000"}


@pytest.mark.parametrize("name", TASKS)
def test_task_yaml_is_valid_for_skypilot(name):
    import sky

    required = [("SUARA_STORE", "s3://b/p"), ("SUARA_RUN_ID", "r"), ("RAW_INPUT", "s3://b/raw/")]
    task = sky.Task.from_yaml_config(yaml.safe_load((SKY / f"{name}.yaml").read_text()), env_overrides=required)
    assert task.name == f"suara-{name}"
    for resources in task.resources:
        assert set(resources.accelerators) <= GPUS_24GB
        assert resources.use_spot == (str(resources.cloud) != "Lambda")
        assert resources.job_recovery["recover_on_exit_codes"] == list(exit_codes.RETRYABLE)
        assert resources.job_recovery["max_restarts_on_errors"] == exit_codes.MAX_RESTARTS_ON_ERRORS


def test_pipeline_runs_preprocess_then_the_four_phases_in_order():
    from sky.utils import dag_utils

    dag = dag_utils.load_chain_dag_from_yaml(str(SKY / "pipeline.yaml"), env_overrides=[
        ("SUARA_STORE", "s3://b/p"), ("SUARA_RUN_ID", "r"), ("RAW_INPUT", "s3://b/raw/")])
    assert [t.name for t in dag.tasks] == [f"suara-{n}" for n in TASKS]
    assert [t.run.strip().splitlines()[-1] for t in dag.tasks] == [
        yaml.safe_load((SKY / f"{n}.yaml").read_text())["run"].strip().splitlines()[-1] for n in TASKS
    ]


@pytest.mark.parametrize("name", TASKS)
def test_secrets_are_never_envs_and_headers_say_how_to_launch(name):
    text = (SKY / f"{name}.yaml").read_text()
    spec = yaml.safe_load(text)
    secret_names = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY", "HF_TOKEN"}
    assert secret_names <= set(spec["secrets"])
    assert not secret_names & set(spec["envs"])
    header = text.split("\nname:")[0]
    assert f"sky jobs launch sky/{name}.yaml" in header and "Override example" in header


@pytest.mark.parametrize("name", TASKS)
def test_each_run_command_exists_in_the_cli(name):
    run = yaml.safe_load((SKY / f"{name}.yaml").read_text())["run"].strip().splitlines()[-1]
    argv = shlex.split(run)
    assert argv[:2] == ["python", "-m"]
    # The subcommand's --help parses and exits 0: the module, the command and its flags exist.
    sub = argv[:4]
    out = subprocess.run([PYTHON, *sub[1:], "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    for flag in (a for a in argv if a.startswith("--")):
        assert flag in out.stdout, f"{flag} not accepted by {' '.join(sub)}"


def test_exit_codes_are_distinct_and_only_preemption_and_stalls_always_recover():
    assert len(set(exit_codes.FINAL + exit_codes.RETRYABLE)) == len(exit_codes.FINAL) + len(exit_codes.RETRYABLE)
    assert exit_codes.RETRYABLE == (exit_codes.PREEMPTED, exit_codes.STALLED)


def test_dockerfile_passes_hadolint():
    out = subprocess.run([str(Path(PYTHON).parent / "hadolint"), str(REPO / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_installs_the_lock_the_makefile_uses():
    docker = (REPO / "Dockerfile").read_text()
    make = (REPO / "Makefile").read_text()
    assert "-c requirements/lock.txt" in docker
    assert "-r requirements/lock.txt" in make
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\S+$", docker, re.M), "base pinned to an exact tag"
    assert re.search(r"^USER \d+", docker, re.M), "runs as a non-root user"


def test_cloud_launch_is_refused_with_every_reason_when_nothing_is_configured():
    with pytest.raises(LaunchError) as err:  # a tiny model left in the shell would replace csm-1b
        check_launchable(load_settings(), clouds=[], tasks=tasks_of(SKY / "pipeline.yaml"),
                         environ={"SUARA_MODEL": "tiny"})
    text = str(err.value)
    assert "s3://bucket/prefix" in text and "SUARA_MODEL" in text and "sky check" in text


def test_launch_passes_settings_as_envs_and_credentials_as_secrets():
    settings = load_settings(store="s3://bkt/suara", run_id="r7", model="sesame/csm-1b", codec="kyutai/mimi")
    cmd = launch_command(SKY / "pipeline.yaml", settings, "s3://bkt/raw/", {}, tasks_of(SKY / "pipeline.yaml"))
    assert cmd[1:3] == ["jobs", "launch"]
    assert "SUARA_STORE=s3://bkt/suara" in cmd and "SUARA_RUN_ID=r7" in cmd and "RAW_INPUT=s3://bkt/raw/" in cmd
    assert cmd[cmd.index("--secret") + 1] == "AWS_ACCESS_KEY_ID"
    assert not any("=" in a and a.startswith("AWS_") for a in cmd)


def test_make_train_all_cloud_fails_clearly_without_cloud_access():
    out = subprocess.run([PYTHON, "-m", "infra", "launch", "sky/pipeline.yaml"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 2 and "cannot launch the cloud pipeline" in out.stderr


def test_preprocessing_can_spread_over_nodes():
    import sky

    task = sky.Task.from_yaml_config(yaml.safe_load((SKY / "preprocess.yaml").read_text()), env_overrides=[
        ("SUARA_STORE", "s3://b/p"), ("SUARA_RUN_ID", "r"), ("RAW_INPUT", "s3://b/raw/")])
    assert task.num_nodes == 1
    task.num_nodes = 4  # what --num-nodes 4 does; each node's rank comes from SKYPILOT_NODE_RANK
    out = subprocess.run([PYTHON, "-m", "preprocess", "run", "--help"], capture_output=True, text=True, cwd=REPO)
    assert "SKYPILOT_NODE_RANK" in out.stdout and "SKYPILOT_NUM_NODES" in out.stdout
