"""Written abbreviations read out in full where the next word shows what they are (`data/abbreviations.tsv`).

"Dr. Ahmad" is "Doktor Ahmad", but "dr" in a chat message is "dari"; "No. 5" is "nombor lima", but
"no" is a word. So each abbreviation has a kind that says what must follow it: a capitalised name
(titles, place words), a digit (numbers), or another word of a firm's name (Sdn. Bhd.). The full
stop after an expanded abbreviation goes with it, so that it neither ends a sentence nor is read.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from preprocess.text.tables import data_lines

_TABLE = "data/abbreviations.tsv"
_KINDS = ("title", "place", "number", "company")


@functools.cache
def _table() -> dict[str, tuple[str, str, str]]:
    """Spelling -> (kind, Malay reading, English reading)."""
    text = resources.files("preprocess.text").joinpath(_TABLE).read_text(encoding="utf-8")
    table: dict[str, tuple[str, str, str]] = {}
    for _, line in data_lines(text):
        spellings, kind, ms, en = line.split("\t")
        if kind not in _KINDS:
            raise ValueError(f"{_TABLE}: unknown kind {kind!r} for {spellings!r}")
        for spelling in spellings.split("|"):
            table[spelling] = (kind, ms, en)
    return table


@functools.cache
def _pattern() -> re.Pattern[str]:
    words = "|".join(map(re.escape, sorted(_table(), key=len, reverse=True)))
    # The abbreviation as a whole word, its full stop if any, the blanks after it.
    return re.compile(rf"(?<![\w.'])({words})(\.?)(\s*)")


def expand_abbreviations(text: str, lang: str) -> str:
    """`text` with each abbreviation that is followed by what it needs read out in `lang` ("ms"/"en")."""
    return _pattern().sub(lambda m: _reading(m, lang), text)


def _reading(match: re.Match[str], lang: str) -> str:
    word, stop, blanks = match.groups()
    kind, ms, en = _table()[word]
    rest = match.string[match.end():]
    if not stop and not blanks and rest[:1].isalnum():
        return match.group(0)  # part of a longer word after all
    if kind in ("title", "place"):
        fits = bool(blanks) and rest[:1].isupper()
    elif kind == "number":
        fits = bool(stop or blanks) and rest[:1].isdigit()
    else:  # company: after the firm's name, not opening a sentence
        fits = match.start() > 0 and (not rest or not rest[:1].isalnum() or bool(blanks))
        if fits and stop and not _pattern().match(rest):
            blanks = stop + blanks  # "... Sdn. Bhd." : the last full stop still ends the sentence
    if not fits:
        return match.group(0)
    return (ms if lang == "ms" else en) + (blanks or " ")
