"""Long text -> pieces CSM can say one at a time, each in its spoken form.

CSM was fine-tuned on clips of up to 20 s, so a paragraph is said piece by piece:

1. paragraphs (line breaks) are never joined;
2. each paragraph is cut into sentences at a terminator (. ! ? ... and their CJK forms) followed by
   a space, never after a digit (`3.5`, `RM5.` stay whole until they are words) or after a title
   (`Dr.`, `Jln.`) or a dotted abbreviation before a lower-case word (`e.g. this`);
3. each sentence goes through the text frontend on its own (numbers, RM, times, short forms in
   that sentence's matrix language), and its spoken form is cut again where terminators remain;
4. sentences are packed into pieces of at most `max_chars`; a longer sentence is cut at clause
   marks (, ; : dashes), and a clause still too long between words, never inside a run of number
   words, so a number's spoken form ("dua ribu tiga ratus lima puluh ringgit") stays in one piece.

Each piece records the boundary after it (paragraph, sentence, clause or word), which sets the
pause that follows it when the pieces are joined.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from preprocess.text import analyze
from preprocess.text.normalize import EN_ORDINAL, EN_TENS, EN_UNITS, MS_UNITS

# The strength of a cut, weakest first; the pause after a piece grows with it.
BOUNDARIES = ("word", "clause", "sentence", "paragraph")

# A sentence ends at terminators (and closing quotes/brackets) followed by white space; CJK
# terminators need no space after them.
_CLOSERS = "\"'\u201d\u2019)\\]"
_SENTENCE_END = re.compile(rf"(?:[.!?\u2026]+[{_CLOSERS}]*\s+)|(?:[\u3002\uff01\uff1f]+[{_CLOSERS}]*\s*)")
TERMINATORS = ".!?\u2026\u3002\uff01\uff1f"
_CLAUSE_END = re.compile(r"(?:[,;:\uff0c\uff1b\uff1a\u3001]+\s*)|(?:\s+[\u2013\u2014-]+\s+)")
# Abbreviations before a name or a place: the full stop after them never ends a sentence.
# ("No." only before a number: "No. 5" but "I said no. Then...")
TITLES = frozenset({
    "dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr", "mt", "ave", "rd", "vs", "lt", "capt", "sgt",
    "jln", "jl", "tmn", "kg", "sdn", "bhd", "hj", "hjh", "en", "pn", "tn",
})
# The words a number, an amount or a percentage is spoken with (both matrix languages).
NUMBER_WORDS = frozenset(
    MS_UNITS + EN_UNITS + [w for w in EN_TENS if w] + list(EN_ORDINAL.values())
    + ["sepuluh", "sebelas", "belas", "puluh", "ratus", "seratus", "ribu", "seribu", "juta", "bilion",
       "perpuluhan", "hundred", "thousand", "million", "billion", "point", "oh", "ringgit", "sen", "peratus",
       "percent", "pertama"]
    + [w + "th" for w in EN_UNITS[4:] if w not in EN_ORDINAL] + [t[:-1] + "ieth" for t in EN_TENS if t]
)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
CJK_WEIGHT = 4  # a Hanzi is a syllable: about as long to say as four Latin letters


@dataclass(frozen=True)
class Piece:
    text: str  # the spoken form, as the model reads it
    boundary: str  # the cut after this piece: one of BOUNDARIES

    @property
    def length(self) -> int:
        """How long the piece is to say, in Latin-letter equivalents."""
        return spoken_length(self.text)


def spoken_length(text: str) -> int:
    return len(text) + (CJK_WEIGHT - 1) * len(_CJK.findall(text))


def split_text(text: str, max_chars: int = 160) -> list[Piece]:
    """The pieces of `text` (raw, as a user typed it), in order; [] when nothing in it can be said."""
    if max_chars < 20:
        raise ValueError(f"max_chars {max_chars} is too small to hold a clause; use 20 or more")
    pieces: list[Piece] = []
    for paragraph in (p.strip() for p in text.splitlines()):
        spoken = [s for raw in raw_sentences(paragraph) for s in raw_sentences(_spoken_form(raw), after_numbers=True)]
        packed = _pack_sentences([s for s in spoken if _speakable(s)], max_chars)
        if packed:
            packed[-1] = Piece(packed[-1].text, "paragraph")
            pieces += packed
    if pieces:
        pieces[-1] = Piece(pieces[-1].text, "paragraph")
    return pieces


def _spoken_form(sentence: str) -> str:
    """The sentence through the text frontend, keeping its final mark (the frontend may take it
    with an address it spells out: "www.suara.my." -> "www dot suara dot my")."""
    spoken = analyze(sentence).normalized
    mark = sentence.rstrip("\"'\u201d\u2019)] ")[-1:]
    if spoken and mark in TERMINATORS and spoken.rstrip("\"'\u201d\u2019)] ")[-1:] not in TERMINATORS:
        spoken += mark
    return spoken


def raw_sentences(paragraph: str, after_numbers: bool = False) -> list[str]:
    """Sentences of a paragraph, cut only where no number, address or abbreviation can be split.
    `after_numbers`: in a spoken form, cut only after a number's words ("lima ringgit. The"),
    where the raw text could not be cut; other marks there were there in the raw text too."""
    out, start = [], 0
    for match in _SENTENCE_END.finditer(paragraph):
        end_of_word = match.start()
        before = paragraph[start:end_of_word].split()
        if not before:
            continue
        last = before[-1]
        following = paragraph[match.end():match.end() + 1]
        if after_numbers and not _is_number_word(last):
            continue
        if _ends_sentence(last, following, paragraph[match.start()]):
            out.append(paragraph[start:match.end()].strip())
            start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def _ends_sentence(last_word: str, next_char: str, terminator: str) -> bool:
    if terminator != ".":
        return True  # ! ? ... and CJK marks are never part of a number or an abbreviation
    if last_word[-1:].isdigit():
        return False  # "RM5. The" is cut after normalisation, when 5 is a word
    word = last_word.strip("\"'(").lower()
    if word in TITLES or (word == "no" and next_char.isdigit()):
        return False
    dotted = "." in word or (len(word) == 1 and word.isalpha())  # e.g / a.m / an initial
    return not (dotted and next_char.islower())


def _cut(text: str, pattern: re.Pattern[str]) -> list[str]:
    """`text` cut after each match of `pattern` (the marks stay with the part before)."""
    parts, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start and text[start:match.start()].strip():
            parts.append(text[start:match.end()].strip())
            start = match.end()
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _pack(units: list[str], max_chars: int) -> list[list[str]]:
    """Consecutive units joined greedily into groups of at most `max_chars` (a longer unit alone)."""
    groups: list[list[str]] = []
    size = 0
    for unit in units:
        if groups and size + 1 + spoken_length(unit) <= max_chars:
            groups[-1].append(unit)
            size += 1 + spoken_length(unit)
        else:
            groups.append([unit])
            size = spoken_length(unit)
    return groups


def _pack_sentences(sentences: list[str], max_chars: int) -> list[Piece]:
    pieces: list[Piece] = []
    short: list[str] = []
    for sentence in sentences + [None]:  # None flushes the last run of short sentences
        if sentence is not None and spoken_length(sentence) <= max_chars:
            short.append(sentence)
            continue
        pieces += [Piece(" ".join(group), "sentence") for group in _pack(short, max_chars)]
        short = []
        if sentence is not None:
            pieces += _split_sentence(sentence, max_chars)
    return pieces


def _split_sentence(sentence: str, max_chars: int) -> list[Piece]:
    """A sentence longer than max_chars: clauses packed into pieces, long clauses cut between words."""
    units: list[tuple[str, str]] = []  # (text, boundary after it)
    for clause in _cut(sentence, _CLAUSE_END):
        if spoken_length(clause) <= max_chars:
            units.append((clause, "clause"))
        else:
            units += [(chunk, "word") for chunk in _word_chunks(clause, max_chars)]
            units[-1] = (units[-1][0], "clause")
    pieces: list[Piece] = []
    size = 0
    for text, boundary in units:
        if pieces and size + 1 + spoken_length(text) <= max_chars and pieces[-1].boundary == "clause":
            pieces[-1] = Piece(f"{pieces[-1].text} {text}", boundary)
            size += 1 + spoken_length(text)
        else:
            pieces.append(Piece(text, boundary))
            size = spoken_length(text)
    pieces[-1] = Piece(pieces[-1].text, "sentence")
    return pieces


def _word_chunks(clause: str, max_chars: int) -> list[str]:
    """The clause as runs of words of balanced length, at most max_chars each, cut only where a
    number's spoken form does not continue across the cut (a run longer than max_chars with no
    such place stays whole)."""
    words = clause.split()
    target = spoken_length(clause) / math.ceil(spoken_length(clause) / max_chars)
    chunks: list[list[str]] = [[]]
    size = 0
    for i, word in enumerate(words):
        n = spoken_length(word)
        # Cut once this word's middle would pass the target length (or the word would not fit).
        if chunks[-1] and (size + 1 + n / 2 > target or size + 1 + n > max_chars) and _cuttable(words[i - 1], word):
            chunks.append([])
            size = -1
        chunks[-1].append(word)
        size += 1 + n
    return [" ".join(c) for c in chunks]


def _is_number_word(word: str) -> bool:
    return word.strip(".,;:!?\"'()").lower().removeprefix("ke-") in NUMBER_WORDS


def _cuttable(before: str, after: str) -> bool:
    return not (_is_number_word(before) and _is_number_word(after))
