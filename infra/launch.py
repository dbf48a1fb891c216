"""Launch a SkyPilot task file after checking, offline and before anything is created, everything
it needs: secrets, the image, the raw input, the run id, an enabled cloud, the cost cap.

    python -m infra launch sky/pipeline.yaml --raw-input s3://my-bucket/raw/   # make train-all CLOUD=1
    python -m infra launch sky/smoke.yaml                                      # make smoke CLOUD=1

Every problem is reported in one message. The image is set in one place, SUARA_IMAGE (what `make
push` prints); the launcher writes it into each task of a copy of the file (SkyPilot ignores
`--image-id` for a file of several tasks), so the placeholder in sky/*.yaml never reaches a cloud.
Secrets the file declares without a value are required and passed with `--secret NAME`; optional
ones (a declared default) and a private registry's login are passed when set in the shell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from infra.settings import Settings

# A private registry's login, read by SkyPilot from these names (all three, all secrets).
DOCKER_LOGIN = ("SKYPILOT_DOCKER_USERNAME", "SKYPILOT_DOCKER_PASSWORD", "SKYPILOT_DOCKER_SERVER")
# name[:tag] with lower-case repository path components, as Docker requires; a registry host first.
IMAGE_REF = re.compile(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
                       r"|@sha256:[0-9a-f]{64})$")
# What this project's own docs print in place of an image (the task files' image_id, README's
# `ghcr.io/you/...`, an older default): copied as is, they would reach a cloud unbuilt.
PLACEHOLDER_WORDS = ("set-suara_image", "see-readme", "/you/", "/your-", "suara-tts/suara:0.1.0")


class LaunchError(RuntimeError):
    """The task file cannot be launched; the message says what to fix."""


def enabled_clouds() -> list[str]:
    """Clouds `sky check` enabled on this machine (read from SkyPilot's local state, no network)."""
    import sky
    from sky import global_user_state

    try:
        clouds = global_user_state.get_cached_enabled_clouds(
            sky.clouds.cloud.CloudCapability.COMPUTE, workspace="default"
        )
    except Exception:  # noqa: BLE001 - any failure here means "nothing usable is configured"
        return []
    return [str(c) for c in clouds]


def sky_executable() -> str | None:
    """The `sky` CLI on PATH, or the one installed beside this Python (a venv not on PATH)."""
    beside = Path(sys.executable).parent / "sky"
    return shutil.which("sky") or (str(beside) if beside.is_file() else None)


def tasks_of(path: Path) -> list[dict[str, Any]]:
    """The task documents of a task file (a pipeline's first document holds only its name)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if set(d) != {"name"}] or docs


def secret_names(tasks: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(required, optional) secrets: declared without a value, or with a default."""
    required: dict[str, None] = {}
    optional: dict[str, None] = {}
    for task in tasks:
        for name, value in (task.get("secrets") or {}).items():
            (required if value is None else optional)[name] = None
    return list(required), [n for n in optional if n not in required]


def required_envs(tasks: list[dict[str, Any]]) -> list[str]:
    """Envs declared null: SkyPilot refuses the launch without them."""
    return list(dict.fromkeys(k for t in tasks for k, v in (t.get("envs") or {}).items() if v is None))


def image_problem(image: str | None) -> str | None:
    if not image:
        return ("SUARA_IMAGE is not set: push the image (`make push REGISTRY=ghcr.io/you` prints the "
                "export line) and set SUARA_IMAGE=REGISTRY/suara:TAG")
    if any(word in image.lower() for word in PLACEHOLDER_WORDS):
        return f"SUARA_IMAGE={image} is a placeholder: set it to the image `make push` pushed"
    if not IMAGE_REF.match(image.removeprefix("docker:")):
        return (f"SUARA_IMAGE={image} is not an image reference like ghcr.io/you/suara:1a2b3c4 "
                "(registry/repository:tag, lower-case repository)")
    return None


def check_launchable(settings: Settings, clouds: list[str], tasks: list[dict[str, Any]] | None = None,
                     environ: dict[str, str] | None = None, raw_input: str | None = None) -> None:
    """Raise LaunchError listing every reason the task file cannot be launched as configured."""
    environ = environ or {}
    tasks = tasks or []
    problems = []
    if not settings.store.startswith("s3://"):
        problems.append(f"SUARA_STORE is {settings.store}: cloud jobs need an s3://bucket/prefix store")
    if not environ.get("SUARA_RUN_ID"):
        problems.append("SUARA_RUN_ID is not set: name this campaign (e.g. SUARA_RUN_ID=run1); every stage and "
                        "every resume finds its data and checkpoints under runs/<run_id>/")
    if environ.get("SUARA_MODEL") == "tiny" and all(t.get("envs", {}).get("SUARA_MODEL") != "tiny" for t in tasks):
        problems.append("SUARA_MODEL is 'tiny': unset it (the task files use sesame/csm-1b with kyutai/mimi)")
    problem = image_problem(settings.image)
    if problem:
        problems.append(problem)
    if "RAW_INPUT" in required_envs(tasks) and not (raw_input or "").startswith("s3://"):
        problems.append(f"the raw input is {raw_input or 'not set'}: give --raw-input s3://bucket/raw/ "
                        "(make train-all CLOUD=1 RAW_INPUT=s3://...) with manifest.jsonl and the audio")
    required, _ = secret_names(tasks)
    missing = [name for name in required if not environ.get(name)]
    if missing:
        problems.append(f"secrets not set in this shell: {', '.join(missing)} (export them; they travel as "
                        "SkyPilot secrets, never in files)")
    login = [name for name in DOCKER_LOGIN if environ.get(name)]
    if login and len(login) != len(DOCKER_LOGIN):
        problems.append(f"a private registry needs all of {', '.join(DOCKER_LOGIN)}; only {', '.join(login)} set")
    if sky_executable() is None:
        problems.append("the `sky` command is not installed (make setup installs skypilot)")
    if not clouds:
        problems.append("SkyPilot has no cloud enabled: set credentials for AWS, RunPod, Vast or Lambda and run "
                        "`sky check` (README.md, 'Cloud')")
    if problems:
        raise LaunchError("cannot launch the cloud pipeline:\n" + "\n".join(f"  - {p}" for p in problems))


def with_image(path: Path, image: str, out_dir: Path) -> Path:
    """A copy of the task file whose every task runs `image` (comments dropped; same tasks)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if "resources" in doc:
            doc["resources"]["image_id"] = f"docker:{image.removeprefix('docker:')}"
    target = out_dir / path.name
    target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return target


def launch_command(task_file: Path, settings: Settings, raw_input: str | None, environ: dict[str, str],
                   tasks: list[dict[str, Any]], managed: bool = True) -> list[str]:
    """The sky command line: settings as --env, credentials as --secret NAME (values stay in the
    environment the sky CLI reads them from)."""
    name = f"suara-{settings.run_id}" if managed else f"suara-smoke-{settings.run_id}"
    sky = sky_executable() or "sky"
    cmd = ([sky, "jobs", "launch", "--yes", "--name", name] if managed
           else [sky, "launch", "--yes", "-i", "30", "--down", "--cluster", name])
    cmd.append(str(task_file))
    values = {"SUARA_STORE": settings.store, "SUARA_RUN_ID": settings.run_id,
              "SUARA_S3_ENDPOINT_URL": settings.s3_endpoint_url or ""}
    declared = {k for t in tasks for k in (t.get("envs") or {})}
    for key, value in values.items():
        if key in declared:
            cmd += ["--env", f"{key}={value}"]
    for key in ("SUARA_MODEL", "SUARA_CODEC"):  # only an explicit choice overrides the task file's model
        if environ.get(key) and key in declared:
            cmd += ["--env", f"{key}={environ[key]}"]
    if raw_input and "RAW_INPUT" in declared:
        cmd += ["--env", f"RAW_INPUT={raw_input}"]
    if settings.budget.max_cost_usd is not None:
        cmd += ["--env", f"SUARA_BUDGET__MAX_COST_USD={settings.budget.max_cost_usd}"]
    required, optional = secret_names(tasks)
    passed = required + [n for n in optional if environ.get(n)]
    if all(environ.get(n) for n in DOCKER_LOGIN):
        passed += list(DOCKER_LOGIN)
    for secret in passed:
        cmd += ["--secret", secret]
    return cmd


def declared_price(tasks: list[dict[str, Any]]) -> float | None:
    """The hourly price the tasks count where the cloud does not tell them (their declared maximum)."""
    prices = [float(t["envs"]["SUARA_BUDGET__HOURLY_PRICE_USD"]) for t in tasks
              if "SUARA_BUDGET__HOURLY_PRICE_USD" in (t.get("envs") or {})]
    return max(prices) if prices else None


def requested_pairs(tasks: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(cloud, accelerator) pairs the tasks ask for, from their `any_of` blocks."""
    pairs = set()
    for task in tasks:
        res = task.get("resources") or {}
        base = set(res.get("accelerators") or {})
        for alt in res.get("any_of") or [{}]:
            wanted = alt.get("accelerators") or {}
            gpus = {wanted.split(":")[0]} if isinstance(wanted, str) else set(wanted)
            for gpu in gpus or base:
                pairs.add((str(alt.get("cloud", res.get("cloud", ""))).lower(), gpu))
    return pairs


def launch(task_file: Path, settings: Settings, raw_input: str | None, environ: dict[str, str],
           audio_hours: float = 20.0, speakers: int = 2, all_clouds: bool = False) -> int:
    from infra.cost import check_cap, estimate, load_prices, render

    tasks = tasks_of(task_file)
    clouds = enabled_clouds()
    check_launchable(settings, clouds, tasks, environ, raw_input)
    # Task files with job_recovery run as managed jobs (a campaign: estimate it first); the smoke
    # task has none and runs on a cluster of its own that tears itself down.
    managed = any("job_recovery" in (t.get("resources") or {}) for t in tasks)
    if managed:
        prices = load_prices()
        estimates = estimate(settings, audio_hours, speakers, prices, pipeline_max_hourly_cost(task_file),
                             declared_usd=declared_price(tasks), pairs=requested_pairs(tasks),
                             clouds=None if all_clouds else clouds, with_controller=True)
        print(render(estimates, prices))
        check_cap(estimates, settings.budget.max_cost_usd)
    with tempfile.TemporaryDirectory(prefix="suara-launch-") as tmp:
        rendered = with_image(task_file, settings.image or "", Path(tmp))
        cmd = launch_command(rendered, settings, raw_input, environ, tasks, managed)
        print("running: " + " ".join(cmd), flush=True)
        return subprocess.call(cmd)


def pipeline_max_hourly_cost(pipeline: Path) -> float | None:
    """The lowest `resources.max_hourly_cost` of the pipeline's tasks (None if none sets one)."""
    limits = [doc["resources"]["max_hourly_cost"] for doc in yaml.safe_load_all(pipeline.read_text())
              if doc and "resources" in doc and "max_hourly_cost" in doc["resources"]]
    return min(limits) if limits else None
