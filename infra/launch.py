"""Launch the SkyPilot pipeline as managed jobs, after checking what can be checked offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from infra.settings import Settings

# Environment passed to every task of the pipeline (the YAMLs hold placeholders for these).
FORWARDED = ("SUARA_STORE", "SUARA_RUN_ID", "SUARA_MODEL", "SUARA_CODEC", "SUARA_S3_ENDPOINT_URL")
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY", "HF_TOKEN")


class LaunchError(RuntimeError):
    """The pipeline cannot be launched; the message says what to fix."""


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


def launch_command(pipeline: Path, settings: Settings, raw_input: str | None,
                   present_secrets: list[str]) -> list[str]:
    values = {
        "SUARA_STORE": settings.store,
        "SUARA_RUN_ID": settings.run_id,
        "SUARA_MODEL": settings.model,
        "SUARA_CODEC": settings.codec,
        "SUARA_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
    }
    cmd = [sky_executable() or "sky", "jobs", "launch", "--yes", "--name", f"suara-{settings.run_id}", str(pipeline)]
    for key in FORWARDED:
        cmd += ["--env", f"{key}={values[key]}"]
    if raw_input:
        cmd += ["--env", f"RAW_INPUT={raw_input}"]
    for name in present_secrets:
        cmd += ["--secret", name]  # value taken from this environment by the sky CLI
    return cmd


def check_launchable(settings: Settings, clouds: list[str]) -> None:
    problems = []
    if not settings.store.startswith("s3://"):
        problems.append(f"SUARA_STORE is {settings.store}: cloud jobs need an s3://bucket/prefix store")
    if settings.model == "tiny":
        problems.append("SUARA_MODEL is 'tiny': set SUARA_MODEL=sesame/csm-1b and SUARA_CODEC=kyutai/mimi")
    if sky_executable() is None:
        problems.append("the `sky` command is not installed (make setup installs skypilot)")
    if not clouds:
        problems.append(
            "SkyPilot has no cloud enabled: set credentials for AWS, RunPod, Vast or Lambda and run "
            "`sky check` (README.md, 'Cloud')"
        )
    if problems:
        raise LaunchError("cannot launch the cloud pipeline:\n" + "\n".join(f"  - {p}" for p in problems))


def launch(pipeline: Path, settings: Settings, raw_input: str | None, environ: dict[str, str],
           audio_hours: float = 20.0, speakers: int = 2) -> int:
    from infra.cost import check_cap, estimate, load_prices, render

    check_launchable(settings, enabled_clouds())
    max_hourly = pipeline_max_hourly_cost(pipeline)
    prices = load_prices()
    estimates = estimate(settings, audio_hours, speakers, prices, max_hourly)
    print(render(estimates, prices))
    check_cap(estimates, settings.budget.max_cost_usd)
    # SkyPilot does not tell the job what its instance costs: count spend at the dearest price the
    # task may be placed at, so the caps hold whichever option the optimizer picks.
    hourly = settings.budget.hourly_price_usd or max(e.option.hourly_usd for e in estimates)
    present = [name for name in SECRETS if environ.get(name)]
    cmd = launch_command(pipeline, settings, raw_input, present)
    cmd += ["--env", f"SUARA_BUDGET__HOURLY_PRICE_USD={hourly}"]
    if settings.budget.max_cost_usd is not None:
        cmd += ["--env", f"SUARA_BUDGET__MAX_COST_USD={settings.budget.max_cost_usd}"]
    return subprocess.call(cmd)


def pipeline_max_hourly_cost(pipeline: Path) -> float | None:
    """The lowest `resources.max_hourly_cost` of the pipeline's tasks (None if none sets one)."""
    import yaml

    limits = [doc["resources"]["max_hourly_cost"] for doc in yaml.safe_load_all(pipeline.read_text())
              if doc and "resources" in doc and "max_hourly_cost" in doc["resources"]]
    return min(limits) if limits else None
