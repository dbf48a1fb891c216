"""`python -m preprocess run`: audio + manifest in, Mimi-coded training shards out."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess", description=__doc__)
    parser.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="preprocess a corpus into the run's shards")
    run_p.add_argument("--input", help="folder or s3:// prefix with manifest.jsonl/.csv (default: sample corpus)")
    run_p.add_argument("--run-id", help="override SUARA_RUN_ID")
    run_p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from infra.settings import SettingsError, load_settings
    from preprocess.manifest import ManifestError
    from preprocess.pipeline import input_store, run

    try:
        settings = load_settings(args.config, run_id=args.run_id)
        source = input_store(args.input, settings)
        report = run(settings, source, progress=not args.no_progress)
    except (SettingsError, ManifestError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"preprocessed {report.samples} utterances ({report.seconds / 60:.1f} min of audio), "
          f"quarantined {report.quarantined}")
    print(f"  data manifest: {report.manifest_uri}")
    print(f"  quarantine:    {report.quarantine_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
