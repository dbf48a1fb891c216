"""`python -m trainer`: train a phase, list/pull/export adapters, synthesise and serve speech.

    python -m trainer train --phase 1 [--max-steps S] [--checkpoint-every K]
    python -m trainer adapters
    python -m trainer pull --phase 3 --to ./adapters/phase3
    python -m trainer pull-logs --to ./tb && tensorboard --logdir ./tb    # every phase's curves
    python -m trainer synth --phase 3 --text "Okay lah, I go now." --out hello.wav
    python -m trainer synth --phase 3 --batch lines.jsonl --out ./speech/
    python -m trainer export --phase 3 --to ./suara-phase3
    python -m trainer serve --phase 3 [--host 127.0.0.1 --port 8000]
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
    train.add_argument("--allow-incomplete", action="store_true",
                       help="start from the previous phase's adapter even if its run stopped early")

    sub.add_parser("adapters", help="list the run's published adapters")

    pull = sub.add_parser("pull", help="download a phase's adapter, verify every checksum, then move it into place")
    pull.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    pull.add_argument("--speaker", help="phase 4: the speaker's adapter")
    pull.add_argument("--to", type=Path, required=True, help="local folder to write the adapter to")
    pull.add_argument("--best", type=int, nargs="?", const=1, metavar="RANK",
                      help="the best checkpoint by train.best_metric (or the RANK-th best), not the final adapter")

    logs = sub.add_parser("pull-logs", help="download the run's TensorBoard events (every phase) for "
                                            "`tensorboard --logdir`")
    logs.add_argument("--to", type=Path, required=True, help="local folder to write them to")

    smoke = sub.add_parser("smoke", help="prove a setup end to end: upload, preprocess, train, preempt, resume, "
                                         "pull (trainer/smoke.py)")
    smoke.add_argument("--steps", type=int, default=8)
    smoke.add_argument("--local-s3", action="store_true", help="run against a local S3 endpoint on 127.0.0.1")

    synth = sub.add_parser("synth", help="text to speech (wav/flac) with the base model + a phase's adapter")
    synth.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    what = synth.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="the text; long text is said sentence by sentence")
    what.add_argument("--text-file", type=Path, help="a UTF-8 file with the text (paragraphs on their own lines)")
    what.add_argument("--batch", type=Path, help="a .jsonl (text, id, speaker, prompt_audio, prompt_text) or .tsv "
                                                 "(id<TAB>text) file: one audio file per row")
    synth.add_argument("--speaker", help="the voice (phase 4: picks the speaker's adapter)")
    synth.add_argument("--out", type=Path, required=True, help="a .wav/.flac file; with --batch, a folder")
    synth.add_argument("--format", choices=["wav", "flac"], default="wav", help="--batch: the files' format")
    synth.add_argument("--prompt-audio", type=Path, help="a clip of the voice to imitate (with --prompt-text)")
    synth.add_argument("--prompt-text", help="what is said in --prompt-audio")
    _sampling_flags(synth)
    synth.add_argument("--speed", type=float, default=1.0, help="time-stretch the result (0.25-4.0)")
    synth.add_argument("--no-progress", action="store_true")

    export = sub.add_parser("export", help="merge a phase's adapter into the base: a plain transformers checkpoint")
    export.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    export.add_argument("--speaker", help="phase 4: the speaker's adapter")
    export.add_argument("--to", type=Path, required=True, help="a new or empty folder")

    serve = sub.add_parser("serve", help="an OpenAI-compatible speech server (POST /v1/audio/speech)")
    serve.add_argument("--phase", type=int, required=True, choices=[1, 2, 3, 4])
    serve.add_argument("--speaker", help="serve only this voice (phase 4: only this speaker's adapter)")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (a cloud replica)")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--max-queue", type=int, default=8, help="requests waiting beyond this get 429")
    serve.add_argument("--max-input-chars", type=int, default=4096)
    _sampling_flags(serve)

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


def _sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="sampling seed (default: the settings' seed)")
    parser.add_argument("--temperature", type=float, default=0.9, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filter")
    parser.add_argument("--max-chars", type=int, default=160, help="the longest piece said in one go")
    parser.add_argument("--max-seconds", type=float,
                        help="cap each piece's budget (default: from its length; a piece that uses it all is reported)")


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
        return _COMMANDS[args.command](settings, args)
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

    from infra.ledger import paid_since
    from infra.price import hourly_price
    from trainer.preemption import imds_url_for
    from trainer.train import PhaseTrainer, speakers_of

    if settings.preemption.imds_url is None:
        settings.preemption.imds_url = imds_url_for(dict(os.environ))
    price = hourly_price(settings.budget.hourly_price_usd, dict(os.environ), settings.preemption.imds_url)
    settings.budget.hourly_price_usd = price.usd
    logging.getLogger("trainer").info("counting $%.4f/h (%s)", price.usd, price.source)

    if args.phase == 4:
        speakers = [args.speaker] if args.speaker else speakers_of(settings)
    elif args.speaker:
        raise ValueError("--speaker is for phase 4 only")
    else:
        speakers = [None]
    started_at: float | None = paid_since(settings.budget, PROCESS_START)
    for speaker in speakers:
        trainer = PhaseTrainer(settings, args.phase, speaker, max_steps=args.max_steps,
                               checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                               started_at=started_at, allow_incomplete=args.allow_incomplete)
        started_at = None  # later speakers pay from their own start; the attempt's start-up was paid once
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
    from trainer.checkpoint import is_incomplete, list_adapters

    run = Store.for_run(settings)
    adapters = list_adapters(run)
    if not adapters:
        print(f"no adapters yet under {run.uri('adapters')}")
        return 0
    print(f"adapters of run {settings.run_id!r}:")
    for m in adapters:
        label = "  INCOMPLETE: its run stopped early (budget cap); later phases refuse it without --allow-incomplete" \
            if is_incomplete(m) else ""
        print(f"  phase {m['phase']}{' ' + m['speaker'] if m.get('speaker') else ''}: "
              f"{run.uri(m['prefix'])}  ({m.get('steps', '?')} steps){label}")
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
    from trainer.checkpoint import is_incomplete, pull_adapter, pull_best

    run = Store.for_run(settings)
    if args.best:
        scope = f"phase{args.phase}" + (f"/{args.speaker}" if args.speaker else "")
        got = pull_best(run, scope, settings.train.best_metric, args.to, args.best)
        print(f"best checkpoint #{got['rank']} of {scope} by {got['metric']}: step {got['step']} "
              f"({got['metric']} {got['value']:.4g}), verified, in {args.to}")
        return 0
    manifest = pull_adapter(run, args.phase, args.speaker, args.to)
    if is_incomplete(manifest):
        print(f"warning: this adapter is incomplete: its run stopped early at step {manifest.get('steps')} "
              "(e.g. at a budget cap)", file=sys.stderr)
    print(f"adapter phase {args.phase} ({manifest['steps']} steps, {len(manifest['objects'])} files verified) "
          f"in {args.to}")
    return 0


def _pull_logs(settings, args) -> int:
    from infra.storage import Store
    from trainer.tensorboard import pull_events

    scopes = pull_events(Store.for_run(settings), args.to)
    print(f"TensorBoard events of {', '.join(scopes)} in {args.to}; view: tensorboard --logdir {args.to}")
    return 0


def _smoke(settings, args) -> int:
    import os

    from trainer.smoke import SmokeFailed, run_smoke

    try:
        if not args.local_s3:
            return run_smoke(settings, args.steps)
        from infra.s3server import local_s3

        with local_s3("suara-smoke") as url:
            os.environ.update({"SUARA_STORE": "s3://suara-smoke/suara", "SUARA_S3_ENDPOINT_URL": url})
            local = settings.model_copy(update={"store": "s3://suara-smoke/suara", "s3_endpoint_url": url})
            return run_smoke(local, args.steps)
    except SmokeFailed as exc:
        print(f"smoke run FAILED: {exc}", file=sys.stderr)
        return 1


def _synth_options(settings, args, speed: float = 1.0):
    from trainer.synth import SynthOptions

    return SynthOptions(seed=settings.seed if args.seed is None else args.seed, temperature=args.temperature,
                        top_k=args.top_k, max_chars=args.max_chars, max_seconds=args.max_seconds, speed=speed)


def _synth(settings, args) -> int:
    from trainer.synth import synthesize, synthesize_batch

    options = _synth_options(settings, args, args.speed)
    if args.batch is not None:
        if args.prompt_audio or args.prompt_text:
            raise ValueError("with --batch, give voice prompts per row (prompt_audio, prompt_text)")
        report = synthesize_batch(settings, args.phase, args.batch, args.out, args.speaker, options, args.format,
                                  progress=not args.no_progress)
        print(f"{report.written} written, {report.skipped} already there, {report.failed} failed, "
              f"{report.hit_budget} with a piece that may be cut short; manifest {report.manifest}")
        return 0 if report.failed == 0 else 1
    text = args.text if args.text is not None else args.text_file.read_text(encoding="utf-8")
    speech = synthesize(settings, args.phase, text, args.out, args.speaker, options, args.prompt_audio,
                        args.prompt_text)
    print(f"wrote {args.out}: {speech.seconds:.2f} s at {speech.sample_rate} Hz, {len(speech.pieces)} pieces")
    for i, piece in enumerate(speech.pieces, 1):
        flag = "  <- used its whole budget: may be cut short" if piece.hit_budget else ""
        print(f"  {i:3d}. {piece.frames:4d}/{piece.budget_frames} frames  {piece.text[:60]!r}{flag}")
    return 0


def _export(settings, args) -> int:
    from trainer.export import export

    out = export(settings, args.phase, args.speaker, args.to)
    print(f"exported phase {args.phase}{' ' + args.speaker if args.speaker else ''} to {out} "
          f"(load with CsmForConditionalGeneration.from_pretrained; model card in README.md)")
    return 0


def _serve(settings, args) -> int:
    from trainer.serve import ServeOptions, serve
    from trainer.synth import Synthesizer

    model_id = f"suara-phase{args.phase}" + (f"-{args.speaker}" if args.speaker else "")
    options = ServeOptions(model_id=model_id, max_queue=args.max_queue, max_input_chars=args.max_input_chars,
                           synth=_synth_options(settings, args))
    return serve(lambda: Synthesizer.from_store(settings, args.phase, args.speaker), options, args.host, args.port)


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


_COMMANDS = {
    "train": _train, "adapters": lambda settings, _: _adapters(settings), "pull": _pull, "pull-logs": _pull_logs,
    "smoke": _smoke, "synth": _synth, "export": _export, "serve": _serve, "evaluate": _evaluate,
    "listen": _listen, "listen-summary": _listen_summary,
}


if __name__ == "__main__":
    sys.exit(main())
