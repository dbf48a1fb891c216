"""`python -m infra`: settings and the local S3 endpoint."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from infra.exit_codes import PREFLIGHT_FAILED, USAGE_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("settings", help="print the resolved settings as JSON")
    show.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    cost = sub.add_parser("cost", help="estimate the campaign's cost per GPU option, cheapest first")
    cost.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    cost.add_argument("--audio-hours", type=float, default=20.0, help="hours of audio to preprocess")
    cost.add_argument("--speakers", type=int, default=2, help="phase 4 trains one adapter per speaker")
    cost.add_argument("--prices", type=Path, help="a price file overriding infra/prices.yaml")
    cost.add_argument("--max-hourly", type=float, help="leave out options above this $/h (default: the task file's)")
    cost.add_argument("--task", type=Path, default=Path("sky/pipeline.yaml"),
                      help="the task file whose GPUs, hourly limit and declared price apply")
    cost.add_argument("--all-clouds", action="store_true", help="every cloud, not only those `sky check` enabled")
    iam = sub.add_parser("iam-policy", help="print a least-privilege IAM policy for the store prefix")
    iam.add_argument("--store", required=True, help="s3://bucket/prefix")
    iam.add_argument("--raw-input", help="s3:// prefix of the raw corpus (read-only)")
    life = sub.add_parser("lifecycle", help="print S3 lifecycle rules expiring old checkpoints")
    life.add_argument("--store", required=True, help="s3://bucket/prefix")
    life.add_argument("--run-id", action="append", default=[], help="a run whose checkpoints expire")
    life.add_argument("--days", type=int, default=30)
    launch = sub.add_parser("launch", help="launch a SkyPilot pipeline YAML as managed jobs")
    launch.add_argument("pipeline", type=Path, help="e.g. sky/pipeline.yaml")
    launch.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    launch.add_argument("--raw-input", help="s3:// prefix of the raw corpus for the preprocess task")
    launch.add_argument("--audio-hours", type=float, default=20.0, help="for the cost estimate")
    launch.add_argument("--speakers", type=int, default=2, help="for the cost estimate")
    launch.add_argument("--all-clouds", action="store_true", help="estimate over every cloud, not only enabled ones")
    pre = sub.add_parser("preflight", help="check CUDA, the store and model access before a cloud task "
                                           f"(exit {PREFLIGHT_FAILED} with every problem listed)")
    pre.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    pre.add_argument("--stage", choices=["preprocess", "train"], required=True)
    gl = sub.add_parser("gpu-lock", help="print requirements/gpu-lock.txt from a `pip install --dry-run --report`")
    gl.add_argument("report", type=Path)
    s3 = sub.add_parser("s3-server", help="run a local S3-compatible endpoint on 127.0.0.1 until Ctrl-C")
    s3.add_argument("--port", type=int, default=9000)
    s3.add_argument("--bucket", default="suara")
    args = parser.parse_args(argv)

    if args.command == "settings":
        from infra.settings import SettingsError, load_settings

        try:
            settings = load_settings(args.config)
        except SettingsError as exc:
            raise SystemExit(str(exc)) from None
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
        return 0

    if args.command in ("iam-policy", "lifecycle"):
        from infra.iam import iam_policy, lifecycle_rules

        try:
            doc = (iam_policy(args.store, args.raw_input) if args.command == "iam-policy"
                   else lifecycle_rules(args.store, args.run_id, args.days))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(doc, indent=2))
        return 0

    if args.command == "cost":
        from infra.cost import CostError, check_cap, estimate, load_prices, render
        from infra.launch import (
            declared_price,
            enabled_clouds,
            pipeline_max_hourly_cost,
            requested_pairs,
            tasks_of,
        )
        from infra.settings import SettingsError, load_settings

        try:
            settings = load_settings(args.config)
            prices = load_prices(args.prices)
            tasks = tasks_of(args.task)
            clouds = None if args.all_clouds else enabled_clouds() or None
            if clouds is None and not args.all_clouds:
                print("no cloud enabled yet (`sky check`): showing every cloud")
            estimates = estimate(settings, args.audio_hours, args.speakers, prices,
                                 args.max_hourly or pipeline_max_hourly_cost(args.task),
                                 declared_usd=declared_price(tasks), pairs=requested_pairs(tasks), clouds=clouds,
                                 with_controller=True)
            print(render(estimates, prices))
            check_cap(estimates, settings.budget.max_cost_usd)
        except (SettingsError, CostError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    if args.command == "gpu-lock":
        report = json.loads(args.report.read_text())
        pins = sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"]
                      if i["metadata"]["name"].lower() != "suara")
        print("# The GPU image's Python packages, pinned: the runtime dependencies of pyproject.toml plus")
        print("# requirements/gpu.txt, resolved with lock.txt as constraints (`make gpu-lock`); no dev tools.")
        print("\n".join(f"{name}=={version}" for name, version in pins))
        return 0

    if args.command == "preflight":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        from infra.preflight import run_preflight
        from infra.settings import SettingsError, load_settings

        try:
            settings = load_settings(args.config)
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USAGE_ERROR
        problems = run_preflight(settings, args.stage)
        if problems:
            print(f"preflight failed ({len(problems)} problem{'s' * (len(problems) > 1)}):\n"
                  + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
            return PREFLIGHT_FAILED
        print(f"preflight passed: {args.stage} on {settings.device}, store {settings.store}, model "
              f"{settings.model if args.stage == 'train' else settings.codec}")
        return 0

    if args.command == "launch":
        from infra.cost import CostError
        from infra.launch import LaunchError, launch
        from infra.settings import SettingsError, load_settings

        try:
            return launch(args.pipeline, load_settings(args.config), args.raw_input, dict(os.environ),
                          args.audio_hours, args.speakers, args.all_clouds)
        except (SettingsError, LaunchError, CostError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    from infra.s3server import LOCAL_CREDENTIALS, LocalS3

    server = LocalS3(port=args.port)
    url = server.start()
    server.create_bucket(args.bucket)
    print(f"local S3 endpoint {url} with bucket {args.bucket!r}; use:")
    print(f"  export SUARA_S3_ENDPOINT_URL={url} SUARA_STORE=s3://{args.bucket}/suara")
    for key, value in LOCAL_CREDENTIALS.items():
        print(f"  export {key}={value}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
