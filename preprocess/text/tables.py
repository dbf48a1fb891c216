"""The rows of the frontend's hand-kept tab-separated files: comments (#) and blank lines skipped."""

from __future__ import annotations

from collections.abc import Iterator


def data_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, line) for every line that holds data."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            yield number, line
