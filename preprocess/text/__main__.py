"""`python -m preprocess.text analyze`: one JSON object per input line (UTF-8 on stdin)."""

from __future__ import annotations

import argparse
import io
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocess.text", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("analyze", help="tag each line of stdin; write JSON lines to stdout")
    parser.parse_args(argv)

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
