"""`python -m preprocess run`: audio + manifest in, Mimi-coded training shards out."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess", description=__doc__)
    parser.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="preprocess a corpus into the run's shards")
    run_p.add_argument("--input", help="folder or s3:// prefix with manifest.jsonl/.csv (default: sample corpus)")
    run_p.add_argument("--run-id", help="override SUARA_RUN_ID")
    run_p.add_argument("--no-progress", action="store_true")
    # On a SkyPilot multi-node task every node runs this command; each takes its share.
    run_p.add_argument("--rank", type=int, default=int(os.environ.get("SKYPILOT_NODE_RANK", "0")),
                       help="this machine's share (default: $SKYPILOT_NODE_RANK or 0)")
    run_p.add_argument("--world-size", type=int, default=int(os.environ.get("SKYPILOT_NUM_NODES", "1")),
                       help="number of machines (default: $SKYPILOT_NUM_NODES or 1)")
    report_p = sub.add_parser("report", help="write the run's HTML data report (plots) and link it")
    report_p.add_argument("--run-id", help="override SUARA_RUN_ID")
    eval_p = sub.add_parser("align-eval", help="word-boundary error of the espeak-ng+DTW aligner on a corpus "
                                                "with true timings, after stretching, pitch-shifting, noise")
    eval_p.add_argument("--corpus", help="folder with manifest.jsonl and word_timings (default: sample corpus)")
    eval_p.add_argument("--every", type=int, default=1, help="use every N-th utterance")
    merge_p = sub.add_parser("merge", help="join the ranks' shards into one dataset (run() does it itself)")
    merge_p.add_argument("--run-id", help="override SUARA_RUN_ID")
    merge_p.add_argument("--world-size", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "align-eval":
        from preprocess import align
        from preprocess.pipeline import SAMPLE_CORPUS

        if not align.available():
            raise SystemExit("error: espeak-ng is not available; run `make setup` (it installs espeakng-loader)")
        result = align.evaluate(args.corpus or str(SAMPLE_CORPUS), every=args.every)
        print(f"{result['boundaries']} word boundaries in {result['utterances']} utterances: "
              f"median error {result['median_ms']:.0f} ms, 90th percentile {result['p90_ms']:.0f} ms")
        return 0

    from infra.settings import SettingsError, load_settings
    from infra.storage import Store, StoreError
    from preprocess.manifest import ManifestError
    from preprocess.pipeline import input_store, merge, run
    from preprocess.quarantine import RunError

    try:
        settings = load_settings(args.config, run_id=args.run_id)
        if args.command == "report":
            from preprocess.report import build_report

            uri = build_report(Store.for_run(settings), settings.cache_dir, settings.evaluation.particle_shapes)
            print(f"data report: {uri}")
            return 0
        if args.command == "merge":
            report = merge(Store.for_run(settings), args.world_size)
        else:
            source = input_store(args.input, settings)
            report = run(settings, source, progress=not args.no_progress, rank=args.rank,
                         world_size=args.world_size)
    except (SettingsError, ManifestError, FileNotFoundError, ValueError, RunError, StoreError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if not report.merged:
        print(f"rank {args.rank} of {args.world_size}: preprocessed {report.samples} utterances, quarantined "
              f"{report.quarantined}; the last rank to finish merges")
        return 0
    print(f"preprocessed {report.samples} utterances ({report.seconds / 60:.1f} min of audio), "
          f"quarantined {report.quarantined}")
    print(f"  data manifest: {report.manifest_uri}")
    print(f"  quarantine:    {report.quarantine_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
