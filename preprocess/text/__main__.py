"""`python -m preprocess.text`: analyze (JSON lines), eval (scores on a labelled set), lexicon (MFA)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

DEV_SET = Path("data/text/dev.tsv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess.text", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("analyze", help="tag each line of stdin; write JSON lines to stdout")
    ev = sub.add_parser("eval", help="score ours and a lingua baseline on labelled sets")
    ev.add_argument("files", nargs="*", type=Path, default=[DEV_SET], help=f"labelled sets (default {DEV_SET})")
    ev.add_argument("--errors", action="store_true", help="list every utterance we tag wrongly")
    ev.add_argument("--no-baseline", action="store_true", help="skip the lingua baseline")
    args = parser.parse_args(argv)

    if args.command == "eval":
        from preprocess.text.evaluate import report

        for path in args.files:
            try:
                print(report(path, show_errors=args.errors, baseline=not args.no_baseline))
            except (OSError, ValueError) as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
        return 0

    from preprocess.text import analyze

    raw = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    out = sys.stdout
    for lineno, line in enumerate(raw, start=1):
        line = line.rstrip("\n").rstrip("\r")
        if "\ufffd" in line:
            print(f"warning: line {lineno}: invalid UTF-8 replaced", file=sys.stderr)
        out.write(json.dumps(analyze(line).to_dict(), ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
