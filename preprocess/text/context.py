"""Context for words both languages have: collocations, and the language of the clause.

"air", "main", "jam", "bank" are Malay and English words alike; their frequencies cannot choose.
A neighbour often can: `COLLOCATIONS` lists, for each such word, the words right before or after it
that fix its language ("air mata", "air panas" are Malay; "hot air", "air con" English; "main bola"
Malay, "main road" English). Where no collocation decides, the clause does: such a word leans to
the language of the clause's clear words (`clause_bias`), which reaches further than the tagger's
word-to-word transitions ("the air here so fresh", "semalam kami main sampai malam").
"""

from __future__ import annotations

import math

from preprocess.text.tokens import Token

_COLLOCATIONS_TEXT = {
    "air": {"ms": "mata panas sejuk batu tangan liur terjun kelapa tebu laut sungai paip minum kosong suam sirap "
                  "bah hujan masak perigi kolah botol",
            "en": "hot fresh con cond conditioner conditioning force port pollution quality fryer balloon bag bnb "
                  "pressure open the",
            },
    "main": {"ms": "bola game games badminton futsal catur api sorok wayang hujan pasir tipu kejar gitar piano "
                   "handphone phone henfon dengan kat dekat je jer lah pun",
             "en": "the road course reason point door character thing issue problem entrance menu dish street "
                   "idea goal event branch office"},
    "jam": {"ms": "berapa tangan dinding loceng pukul satu dua tiga empat lima enam tujuh lapan "
                  "sembilan sepuluh",
            "en": "traffic strawberry session packed jar toast"},
    "bank": {"ms": "pergi ke kat dekat akaun pinjaman negara simpanan islam rakyat",
             "en": "in the transfer account balance holiday river robbery"},
    "data": {"ms": "tu ni ini itu peribadi", "en": "the show shows this that is are science"},
    "pen": {"ms": "aku saya dia kau awak tu ni", "en": "your my the a this that"},
    "hang": {"ms": "nak pi dah ni tu buat mai kata", "en": "out around on up in there"},
    "beg": {"ms": "sekolah tangan duit baju aku saya dia plastik", "en": "i you to for"},
}
COLLOCATIONS: dict[str, dict[str, frozenset[str]]] = {
    word: {lang: frozenset(neighbours.split()) for lang, neighbours in sides.items()}
    for word, sides in _COLLOCATIONS_TEXT.items()
}
_CLEAR = math.log(50.0)  # a word is clear when one language is 50 times likelier than the other
_MAX_BIAS = math.log(20.0)


def collocation(tokens: list[Token], i: int) -> str | None:
    """The language a collocation gives tokens[i] ("air mata" -> ms), or None."""
    sides = COLLOCATIONS.get(tokens[i].text.lower())
    if sides is None:
        return None
    # The word right after binds closer than the word before ("the air con": air con decides).
    for j in (i + 1, i - 1):
        if 0 <= j < len(tokens) and not (j > i and tokens[i].clause_end) and not (j < i and tokens[j].clause_end):
            neighbour = tokens[j].text.lower()
            for lang, words in sides.items():
                if neighbour in words:
                    return lang
    return None


def clause_bias(words: list[str], emissions: list[tuple[float, float, float]], clauses: list[int]) -> list[float]:
    """For each word, a log-odds shift towards Malay (positive) or English (negative): for the words
    both languages have (`COLLOCATIONS`' words) that the tables leave unclear, half the log ratio of
    their clause's clear Malay and English words. Other words get none: an English loan in a Malay
    clause ("game", "okay") is English, and the clause must not pull it over."""
    counts: dict[int, list[int]] = {}
    for (ms, en, _), clause in zip(emissions, clauses, strict=True):
        tally = counts.setdefault(clause, [0, 0])
        if ms - en > _CLEAR:
            tally[0] += 1
        elif en - ms > _CLEAR:
            tally[1] += 1
    bias = []
    for word, (ms, en, _), clause in zip(words, emissions, clauses, strict=True):
        n_ms, n_en = counts[clause]
        shift = 0.5 * math.log((n_ms + 1) / (n_en + 1))
        shared = word.lower() in COLLOCATIONS and abs(ms - en) <= _CLEAR
        bias.append(max(-_MAX_BIAS, min(_MAX_BIAS, shift)) if shared else 0.0)
    return bias
