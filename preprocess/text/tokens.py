"""Words of an utterance as the frontend splits them: whitespace tokens, edge punctuation stripped,
with what the punctuation around them says (clause end, question, sentence start)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from preprocess.text.normalize import clean_unicode

_CLAUSE_END = re.compile(r"[.,!?;:…)\]]+$")
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*$")
_PUNCT_EDGES = re.compile(r"^[^\w]+|[^\w]+$", re.UNICODE)


@dataclass(frozen=True)
class Token:
    text: str
    clause_end: bool  # followed by punctuation that ends a clause, or the last word
    question: bool  # followed by "?"
    sentence_start: bool  # first word, or after . ! ?


def tokenize(text: str) -> list[Token]:
    """Whitespace tokens with edge punctuation stripped; punctuation-only tokens are left out."""
    raw = clean_unicode(text).split(" ") if text.strip() else []
    out: list[Token] = []
    start = True
    for position, token in enumerate(raw):
        word = _PUNCT_EDGES.sub("", token)
        if word:
            last = position == len(raw) - 1
            out.append(Token(word, bool(_CLAUSE_END.search(token)) or last, "?" in token[len(word):], start))
            start = False
        if _SENTENCE_END.search(token):
            start = True
    return out
