"""A `sky` command for tests: SkyPilot's own CLI (its argument parsing, task loader, env and secret
overrides, docker-login and RunPod wiring) up to the point where it would contact its API server.
There, instead of launching, it resolves the secrets as SkyPilot's executor does (a null secret
without a value fails with "No value available for secret(s)") and records what would have been
launched as JSON in $SKY_SHIM_RECORD. Nothing leaves the machine.

Install it by putting a `sky` file on PATH that runs `python -m tests.sky_shim` (tests/test_launch.py).
"""

from __future__ import annotations

import json
import os
import sys


def _summary(dag) -> dict:
    from sky import skypilot_config

    tasks = []
    for task in dag.tasks:
        resources = []
        for r in task.resources:
            vast = skypilot_config.get_effective_region_config(
                cloud="vast", region=None, keys=("create_instance_kwargs",), default_value={},
                override_configs=r.cluster_config_overrides)
            login = r.docker_login_config
            resources.append({
                "cloud": str(r.cloud) if r.cloud else None,
                "accelerators": sorted(r.accelerators or {}),
                "use_spot": r.use_spot,
                "image": r.extract_docker_image(),
                "runpod_user": r.docker_username_for_runpod,
                "vast_create_instance_kwargs": vast,
                "docker_login_server": login.server if login else None,
                "job_recovery": r.job_recovery,
                "max_hourly_cost": r.max_hourly_cost,
            })
        tasks.append({"name": task.name, "envs": dict(task.envs), "secrets": sorted(task.secrets),
                      "num_nodes": task.num_nodes, "run": task.run, "resources": resources})
    return {"name": dag.name, "tasks": tasks}


def _capture(kind: str):
    def launch(entry, *args, **kwargs):
        from sky import dag as dag_lib
        from sky import execution

        dag = entry
        if not isinstance(entry, dag_lib.Dag):
            with dag_lib.Dag() as dag:
                dag.add(entry)
        execution._resolve_managed_secrets(dag)  # what the executor does first
        record = {"kind": kind, "args": sys.argv[1:], **_summary(dag)}
        with open(os.environ["SKY_SHIM_RECORD"], "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        raise SystemExit(0)

    return launch


def main() -> int:
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    from sky.client.cli import command

    command.managed_jobs.launch = _capture("jobs launch")
    command.sdk.launch = _capture("launch")
    try:
        command.cli.main(args=sys.argv[1:], prog_name="sky", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - shown like the sky CLI shows it, exit 1
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
