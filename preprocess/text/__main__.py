"""`python -m preprocess.text`: analyze (JSON lines), eval (scores on labelled sets), eval-lexicon
(Malay pronunciations against a labelled word list), lexicon (MFA)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

DEV_SET = Path("data/text/dev.tsv")
LEXICON_SET = Path("data/text/lexicon.tsv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess.text", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("analyze", help="tag each line of stdin; write JSON lines to stdout")
    ev = sub.add_parser("eval", help="score ours and a lingua baseline on labelled sets")
    ev.add_argument("files", nargs="*", type=Path, default=[DEV_SET], help=f"labelled sets (default {DEV_SET})")
    ev.add_argument("--errors", action="store_true", help="list every utterance we tag wrongly")
    ev.add_argument("--no-baseline", action="store_true", help="skip the lingua baseline")
    el = sub.add_parser("eval-lexicon", help="score Malay pronunciations against labelled word lists")
    el.add_argument("files", nargs="*", type=Path, default=[LEXICON_SET],
                    help=f"word<TAB>IPA lists (default {LEXICON_SET})")
    el.add_argument("--errors", action="store_true", help="list every word we pronounce wrongly")
    lx = sub.add_parser("lexicon", help="write an MFA pronunciation dictionary for a corpus's words")
    lx.add_argument("files", nargs="*", type=Path,
                    help="manifests (.jsonl/.csv, their `text`) or text files (a line an utterance); default stdin")
    lx.add_argument("-o", "--output", type=Path, help="the dictionary file (default stdout)")
    args = parser.parse_args(argv)

    if args.command == "lexicon":
        return _lexicon(args.files, args.output)

    if args.command in ("eval", "eval-lexicon"):
        from preprocess.text import evaluate, lexicon_eval

        for path in args.files:
            try:
                if args.command == "eval":
                    print(evaluate.report(path, show_errors=args.errors, baseline=not args.no_baseline))
                else:
                    print(lexicon_eval.report(path, show_errors=args.errors))
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


def _lexicon(files: list[Path], output: Path | None) -> int:
    from preprocess.text import analyze
    from preprocess.text.pronounce import dictionary, mfa_lines

    try:
        texts = [t for path in files for t in _texts(path)] if files else list(_stdin_lines())
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = mfa_lines(dictionary(analyze(text).words for text in texts))
    body = "\n".join(lines) + ("\n" if lines else "")
    if output:
        output.write_text(body, encoding="utf-8")
        print(f"{len(lines)} pronunciations of {len({ln.split(chr(9))[0] for ln in lines})} words "
              f"from {len(texts)} utterances -> {output}", file=sys.stderr)
    else:
        sys.stdout.write(body)
    return 0


def _texts(path: Path) -> list[str]:
    """The transcripts of a manifest (JSONL or CSV, column `text`) or the lines of a text file."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix == ".jsonl":
        texts = []
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                texts.append(str(json.loads(line)["text"]))
            except (ValueError, KeyError, TypeError):
                print(f"warning: {path}:{lineno}: no JSON object with a text field; skipped", file=sys.stderr)
        return texts
    if path.suffix == ".csv":
        rows = csv.DictReader(io.StringIO(raw))
        if "text" not in (rows.fieldnames or []):
            raise ValueError(f"{path}: no `text` column")
        return [row["text"] or "" for row in rows]
    return raw.splitlines()


def _stdin_lines():
    for line in io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n"):
        yield line.rstrip("\n").rstrip("\r")


if __name__ == "__main__":
    sys.exit(main())
