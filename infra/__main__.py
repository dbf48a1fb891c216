"""`python -m infra`: settings and the local S3 endpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("settings", help="print the resolved settings as JSON")
    show.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    launch = sub.add_parser("launch", help="launch a SkyPilot pipeline YAML as managed jobs")
    launch.add_argument("pipeline", type=Path, help="e.g. sky/pipeline.yaml")
    launch.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    launch.add_argument("--raw-input", help="s3:// prefix of the raw corpus for the preprocess task")
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

    if args.command == "launch":
        from infra.launch import LaunchError, launch
        from infra.settings import SettingsError, load_settings

        try:
            return launch(args.pipeline, load_settings(args.config), args.raw_input, dict(os.environ))
        except (SettingsError, LaunchError) as exc:
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
