"""`python -m trainer`: train a phase, list/pull adapters, synthesise speech.

    python -m trainer train --phase 1 [--max-steps S] [--checkpoint-every K]
    python -m trainer adapters
    python -m trainer pull --phase 3 --to ./adapters/phase3
    python -m trainer pull-logs --to ./tb && tensorboard --logdir ./tb    # every phase's curves
    python -m trainer synth --phase 3 --text "Okay lah, I go now." --out hello.wav
    python -m trainer evaluate --phase 3 [--speaker S]       # metrics, particle check, HTML report
    python -m trainer listen --phases 2,3 [--systems reference]   # blind MOS + A/B test in a browser
    python -m trainer listen-summary                         # MOS with 95 % CIs, A/B significance

Exit codes of `train` are in trainer/exit_codes.py (75 = preempted, run again to resume).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

# Spend counts from here: an instance is paid for while Python imports torch and loads the model.
PROCESS_START = time.monotonic()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML settings file (default: $SUARA_CONFIG)")
    parser.add_argument("--run-id", help="override SUARA_RUN_ID")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) one phase")
    train.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    train.add_argument("--speaker", help="phase 4: train only this speaker (default: every speaker)")
    train.add_argument("--max-steps", type=int, help="override the phase plan's step count")
    train.add_argument("--checkpoint-every", type=int, help="override train.checkpoint_every")
    train.add_argument("--no-progress", action="store_true")

    sub.add_parser("adapters", help="list the run's published adapters")

    pull = sub.add_parser("pull", help="download a phase's adapter and verify its checksums")
    pull.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    pull.add_argument("--speaker", help="phase 4: the speaker's adapter")
    pull.add_argument("--to", type=Path, required=True, help="local folder to write the adapter to")
    pull.add_argument("--best", type=int, nargs="?", const=1, metavar="RANK",
                      help="the best checkpoint by train.best_metric (or the RANK-th best), not the final adapter")

    logs = sub.add_parser("pull-logs", help="download the run's TensorBoard events (every phase) for "
                                            "`tensorboard --logdir`")
    logs.add_argument("--to", type=Path, required=True, help="local folder to write them to")

    synth = sub.add_parser("synth", help="text to WAV with the base model + a phase's adapter")
    synth.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    synth.add_argument("--text", required=True)
    synth.add_argument("--speaker", help="speaker id (phase 4: picks the speaker's adapter)")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--max-seconds", type=float, default=10.0)

    evaluate = sub.add_parser("evaluate", help="metrics per category, particle prosody check and an HTML report "
                                               "for a phase's adapter (eval/phase<N>/ in the store)")
    evaluate.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    evaluate.add_argument("--speaker", help="the voice (phase 4: the speaker's adapter); default: the first speaker")
    evaluate.add_argument("--no-progress", action="store_true")

    listen = sub.add_parser("listen", help="serve a blind listening test (MOS 1-5 and A/B) on 127.0.0.1")
    listen.add_argument("--phases", required=True, help="comma-separated phases whose evaluation audio to compare")
    listen.add_argument("--systems", default="", help="more systems: `reference` (the decoded test references)")
    listen.add_argument("--speaker", help="phase 4: the speaker whose adapters to compare")
    listen.add_argument("--db", type=Path, help="SQLite file of ratings (default: listening-<run_id>.sqlite)")
    listen.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")

    summary = sub.add_parser("listen-summary", help="MOS with 95 %% confidence intervals and A/B preferences")
    summary.add_argument("--db", type=Path, help="SQLite file of ratings (default: listening-<run_id>.sqlite)")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from infra.settings import SettingsError, load_settings
    from trainer import exit_codes

    try:
        settings = load_settings(args.config, run_id=args.run_id)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.USAGE_ERROR

    from trainer.checkpoint import CheckpointError

    try:
        if args.command == "train":
            return _train(settings, args)
        if args.command == "adapters":
            return _adapters(settings)
        if args.command == "pull":
            return _pull(settings, args)
        if args.command == "pull-logs":
            return _pull_logs(settings, args)
        if args.command == "evaluate":
            return _evaluate(settings, args)
        if args.command == "listen":
            return _listen(settings, args)
        if args.command == "listen-summary":
            return _listen_summary(settings, args)
        return _synth(settings, args)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.USAGE_ERROR


def _train(settings, args) -> int:
    import os

    from trainer import exit_codes
    from trainer.budget import precheck

    if args.phase != 4 or args.speaker:
        scope = f"phase{args.phase}" + (f"/{args.speaker}" if args.speaker else "")
        refusal = precheck(settings, scope, settings.train.phases[args.phase].max_cost_usd,
                           args.checkpoint_every or settings.train.checkpoint_every)
        if refusal:
            print(f"error: budget: {refusal}; not starting", file=sys.stderr)
            return exit_codes.BUDGET_EXHAUSTED

    from trainer.preemption import imds_url_for
    from trainer.train import PhaseTrainer, speakers_of

    if settings.preemption.imds_url is None:
        settings.preemption.imds_url = imds_url_for(dict(os.environ))

    if args.phase == 4:
        speakers = [args.speaker] if args.speaker else speakers_of(settings)
    elif args.speaker:
        raise ValueError("--speaker is for phase 4 only")
    else:
        speakers = [None]
    started_at: float | None = PROCESS_START
    for speaker in speakers:
        trainer = PhaseTrainer(settings, args.phase, speaker, max_steps=args.max_steps,
                               checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                               started_at=started_at)
        started_at = None  # later speakers pay from their own start
        try:
            trainer.setup()
            code = trainer.train()
        finally:
            trainer.cleanup()
        if code != 0:
            return code
        print(f"phase {args.phase}{' speaker ' + speaker if speaker else ''}: adapter at {trainer.adapter_uri}")
        if settings.evaluation.after_phase:
            from trainer.evaluate import evaluate

            summary = evaluate(settings, args.phase, speaker, progress=not args.no_progress)
            print(f"phase {args.phase}: evaluation of {len(summary['utterances'])} utterances in the store's "
                  f"eval/phase{args.phase}{'/' + speaker if speaker else ''}/report.html")
    return 0


def _adapters(settings) -> int:
    from infra.storage import Store

    run = Store.for_run(settings)
    manifests = [k for k in run.list("adapters") if k.endswith("/manifest.json")]
    if not manifests:
        print(f"no adapters yet under {run.uri('adapters')}")
        return 0
    print(f"adapters of run {settings.run_id!r}:")
    for key in manifests:
        m = run.get_json(key)
        print(f"  phase {m['phase']}{' ' + m['speaker'] if m.get('speaker') else ''}: "
              f"{run.uri(key.rsplit('/', 1)[0])}  ({m['steps']} steps)")
    _best_checkpoints(run)
    return 0


def _best_checkpoints(run) -> None:
    """Each scope's best checkpoints (never pruned; `pull --best [RANK]` fetches one)."""
    from trainer.checkpoint import BEST

    for key in [k for k in run.list("checkpoints") if k.endswith(f"/{BEST}")]:
        record = run.get_json(key)
        scope = key.removeprefix("checkpoints/").removesuffix(f"/{BEST}")
        final = run.get_json(f"checkpoints/{scope}/final.json")["step"] \
            if run.exists(f"checkpoints/{scope}/final.json") else None
        ranked = ", ".join(f"#{i} step {e['step']} ({e['value']:.4g})" + (" = final" if e["step"] == final else "")
                           for i, e in enumerate(record["checkpoints"], 1))
        print(f"  {scope} best by {record['metric']}: {ranked}")


def _pull(settings, args) -> int:
    from infra.storage import Store
    from trainer.checkpoint import fetch_adapter

    run = Store.for_run(settings)
    if args.best:
        from trainer.checkpoint import fetch_best

        scope = f"phase{args.phase}" + (f"/{args.speaker}" if args.speaker else "")
        got = fetch_best(run, scope, settings.train.best_metric, args.to, args.best)
        print(f"best checkpoint #{got['rank']} of {scope} by {got['metric']}: step {got['step']} "
              f"({got['metric']} {got['value']:.4g}), verified, in {args.to}")
        return 0
    manifest = fetch_adapter(run, args.phase, args.speaker, args.to)
    print(f"adapter phase {args.phase} ({manifest['steps']} steps, {len(manifest['objects'])} files verified) "
          f"in {args.to}")
    return 0


def _pull_logs(settings, args) -> int:
    from infra.storage import Store
    from trainer.tensorboard import pull_events

    scopes = pull_events(Store.for_run(settings), args.to)
    print(f"TensorBoard events of {', '.join(scopes)} in {args.to}; view: tensorboard --logdir {args.to}")
    return 0


def _synth(settings, args) -> int:
    from trainer.synth import synthesize

    out = synthesize(settings, args.phase, args.text, args.out, args.speaker, args.max_seconds)
    print(f"wrote {out}")
    return 0


def _evaluate(settings, args) -> int:
    from trainer.evaluate import eval_prefix, evaluate

    summary = evaluate(settings, args.phase, args.speaker, progress=not args.no_progress)
    from infra.storage import Store

    prefix = Store.for_run(settings).uri(eval_prefix(args.phase, args.speaker if args.phase == 4 else None))
    print(f"phase {args.phase}: {len(summary['utterances'])} utterances evaluated")
    for category, entry in summary["categories"].items():
        figures = ", ".join(f"{k} {v:.3g}" for k, v in entry.items() if isinstance(v, float))
        print(f"  {category}: {entry['utterances']} utterances{'; ' + figures if figures else ''}")
    for particle, entry in summary["particles"].items():
        agree = "—" if entry["shape_agreement"] is None else f"{entry['shape_agreement']:.0%}"
        print(f"  particle {particle}: shape agrees {agree} (measured {entry['shapes']})")
    print(f"report: {prefix}/report.html\nsummary: {prefix}/summary.json")
    return 0


def _listen_db(settings, path):
    return path or Path(f"listening-{settings.run_id}.sqlite")


def _listen(settings, args) -> int:
    from trainer.listen import serve

    phases = [int(p) for p in args.phases.split(",") if p.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    serve(settings, phases, systems, _listen_db(settings, args.db), args.port, args.speaker)
    return 0


def _listen_summary(settings, args) -> int:
    import json

    from trainer.listen import format_summary, summarize

    summary = summarize(_listen_db(settings, args.db))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
