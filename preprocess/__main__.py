"""`python -m preprocess run`: audio + manifest in, Mimi-coded training shards out."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from infra.exit_codes import BUDGET_EXHAUSTED, USAGE_ERROR

# Spend counts from here when the task file does not say when the task started paying.
PROCESS_START = time.monotonic()


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
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    try:
        if args.command == "report":
            from preprocess.report import build_report

            uri = build_report(Store.for_run(settings), settings.cache_dir, settings.evaluation.particle_shapes)
            print(f"data report: {uri}")
            return 0
        if args.command == "merge":
            report = merge(Store.for_run(settings), args.world_size)
        else:
            refusal = _over_budget(settings)
            if refusal:
                print(f"error: budget: {refusal}; not starting", file=sys.stderr)
                return BUDGET_EXHAUSTED
            source = input_store(args.input, settings)
            with _metered(settings, args.rank) as meter:
                report = run(settings, source, progress=not args.no_progress, rank=args.rank,
                             world_size=args.world_size)
            print(f"rank {args.rank}: ${meter.spent():.4f} spent on preprocessing (ledger {meter.scope})")
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


def _over_budget(settings) -> str | None:
    """Why preprocessing must not start: the campaign's ledger already reached its cap."""
    from infra.ledger import read_ledger
    from infra.storage import Store

    cap = settings.budget.max_cost_usd
    spent = sum(read_ledger(Store.for_run(settings)).values())
    return f"the campaign spent ${spent:.2f} of its ${cap:.2f} cap" if cap is not None and spent >= cap else None


def _metered(settings, rank: int):
    """This rank's ledger entry, kept current while it runs (preprocessing holds a GPU too): what
    earlier attempts of the rank spent plus this attempt's time since it started paying
    (provisioning included), at the price this instance counts (infra/price.py)."""
    from infra.ledger import Heartbeat, ledger_key, paid_since
    from infra.price import hourly_price
    from infra.storage import Store

    price = hourly_price(settings.budget.hourly_price_usd, dict(os.environ))
    logging.getLogger("preprocess").info("counting $%.4f/h (%s)", price.usd, price.source)
    run_store, scope = Store.for_run(settings), f"preprocess/rank_{rank:03d}"
    before = float(run_store.get_json(ledger_key(scope))["usd"]) if run_store.exists(ledger_key(scope)) else 0.0
    since = paid_since(settings.budget, PROCESS_START)

    def spent() -> float:
        return before + (time.monotonic() - since) / 3600 * price.usd

    return Heartbeat(run_store, scope, spent, price.usd, settings.budget.heartbeat_s, price_source=price.source)


if __name__ == "__main__":
    sys.exit(main())
