"""Word-level language tags and discourse particles for Malaysian text.

Three passes over the words of an utterance:

1. Closed classes by form and position: numbers, symbols, addresses and interjections are `other`,
   names (capitalised mid-sentence, acronyms, "ah" + a name) are `other`, Hanzi and the documented
   Chinese-variety loans (`data/zh_loans.tsv`, whole phrases first: "lor mee") are `zh`, chat short
   forms are `ms` or `en` by what they stand for (`preprocess.text.chat`: "sbb", "dtg", "u", "pls"),
   particles are `particle` where their context allows (`preprocess.text.particles`).
2. The rest by a hidden Markov model over ms/en/zh: emissions are word frequencies (wordfreq's
   Malay, English and Indonesian tables; Mandarin syllable frequencies for pinyin), transitions
   favour staying in a language, so a word found in two languages ("ni", "you", "air") takes the
   language its neighbours make likely ("budak ni" vs "ni hao"). Particles and `other` words are
   transparent: the language carries across them. A word both languages have is fixed by a known
   collocation ("air mata", "main road") or leans to its clause's language
   (`preprocess.text.context`). Viterbi decoding, three states.
3. Words no table knows fall back on a character-trigram model (Malay or English by spelling) and on
   pinyin segmentation ("xiexie").

English loans that Malay text uses freely ("okay", "best", "order") are frequent in wordfreq's
Malay table too; for a word common in English its Malay frequency is capped by its Indonesian one,
which keeps genuinely shared words ("air", "main", "data") Malay-capable and loans English. A word
English has must also be spelled like Malay to be Malay ("project", "stress" are not), unless Malay
text uses it a hundred times more than English text ("universiti", "proses").
"""

from __future__ import annotations

import functools
import itertools
import math
import re

from preprocess.text import chat
from preprocess.text.charmodel import char_model
from preprocess.text.context import COLLOCATIONS, clause_bias, collocation
from preprocess.text.lexicon import (
    CALENDAR,
    INTERJECTIONS,
    KIN_TITLES,
    PARTICLE_VARIANTS,
    PLACE_HEADS,
    TITLES,
    frequencies,
    pinyin_frequencies,
    pinyin_words,
    split_pinyin,
    zh_loans,
)
from preprocess.text.particles import name_after_title, particle, pinyin_only, starts_name
from preprocess.text.tokens import Token, tokenize

__all__ = ["Token", "tag", "tokenize"]

STATES = ("ms", "en", "zh")
# Log transition and start probabilities. Switching between Malay and English is common (single
# English words inside Malay clauses are everyday speech); pinyin is rarer and comes in runs.
_START = {"ms": math.log(0.45), "en": math.log(0.45), "zh": math.log(0.10)}


def _log_table(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {a: {b: math.log(p) for b, p in row.items()} for a, row in table.items()}


# Within a clause, and across a clause boundary (after , . ? ...), where switches are likelier.
_TRANS = _log_table({
    "ms": {"ms": 0.70, "en": 0.28, "zh": 0.02},
    "en": {"ms": 0.28, "en": 0.70, "zh": 0.02},
    "zh": {"ms": 0.10, "en": 0.10, "zh": 0.80},
})
_TRANS_BOUNDARY = _log_table({
    "ms": {"ms": 0.50, "en": 0.45, "zh": 0.05},
    "en": {"ms": 0.45, "en": 0.50, "zh": 0.05},
    "zh": {"ms": 0.25, "en": 0.25, "zh": 0.50},
})
_EN_COMMON = 1.5e-5  # above this English frequency a Malay reading must be backed by Indonesian
_OOV = 1e-8  # probability mass spread by the character model over words no table has
_NO_PINYIN = math.log(1e-12)  # the zh emission of a word that cannot be read as pinyin
_NEGATORS = frozenset({"tak", "x", "tk", "tidak", "takkan", "mana", "dah"})
_AH = frozenset({"ah", "ahh"})
_TITLE_OR_PLACE = KIN_TITLES | PLACE_HEADS
_CLITICS = ("lah", "nya", "kah", "pun", "ku", "mu", "tah")

_REDUPLICATED = re.compile(r"(?=[^\W\d_]*[aeiouAEIOU])[^\W\d_]{2,}2")
_HANZI = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_ADDRESS = re.compile(r"@|^(?:https?://|www\.)|\w\.\w+\.|^\w+\.(?:com|my|net|org)\b", re.IGNORECASE)


def tag(tokens: list[Token]) -> list[tuple[str, str | None]]:
    """(language tag, canonical particle or None) for each token."""
    loans = _loan_spans(tokens)
    fixed: list[tuple[str, str | None] | None] = [_closed_class(tokens, i, loans) for i in range(len(tokens))]
    lows = [t.text.lower() for t in tokens]
    shared = False
    for i, f in enumerate(fixed):
        if f is None and lows[i] in COLLOCATIONS:
            shared = True
            if lang := collocation(tokens, i):
                fixed[i] = (lang, None)
    # Loans are transparent like particles: a Hokkien word inside a Malay clause is no pinyin context.
    open_positions = [i for i, f in enumerate(fixed) if f is None or (f[0] in STATES and i not in loans)]
    # A fixed zh/ms/en word still takes part in the HMM (as context), with only its own state allowed.
    emissions = [_emission(tokens[i].text) if fixed[i] is None else _only(fixed[i][0]) for i in open_positions]
    if any(fixed[i] is None and e[2] > _NO_PINYIN for i, e in zip(open_positions, emissions, strict=True)) \
            and not _pinyin_evidence(lows, fixed, loans):
        # Pinyin needs a word that can only be pinyin ("hao", "xiexie"), a Mandarin word of two
        # syllables ("mei you") or Hanzi; "you ni kan" is English and Malay, however well it reads.
        emissions = [(ms, en, -math.inf) if fixed[i] is None else (ms, en, zh)
                     for i, (ms, en, zh) in zip(open_positions, emissions, strict=True)]
    if shared:
        clause_of = list(itertools.accumulate((t.clause_end for t in tokens), initial=0))
        bias = clause_bias([lows[i] for i in open_positions], emissions, [clause_of[i] for i in open_positions])
        emissions = [(ms + shift, en, zh) for (ms, en, zh), shift in zip(emissions, bias, strict=True)]
    # Is there a clause boundary between each open word and the one before it? A particle ends its
    # clause in speech as a comma does in writing ("wo bu yao lah, you take").
    ends = [t.clause_end or (j + 1 < len(tokens) and fixed[j + 1] is not None and fixed[j + 1][0] == "particle")
            for j, t in enumerate(tokens)]
    boundaries = [any(ends[a:b]) for a, b in zip(open_positions, open_positions[1:], strict=False)]
    for i, lang in zip(open_positions, _viterbi(emissions, boundaries), strict=True):
        if fixed[i] is None:
            fixed[i] = (lang, None)
    return fixed  # type: ignore[return-value]


def _loan_spans(tokens: list[Token]) -> set[int]:
    """Positions of the words that make up a documented Chinese-variety loan, longest loans first."""
    loans, first_words = zh_loans(), _loan_first_words()
    lows = [t.text.lower() for t in tokens]
    covered: set[int] = set()
    i = 0
    while i < len(lows):
        if lows[i] in first_words:
            for size in (4, 3, 2, 1):
                if i + size <= len(lows) and tuple(lows[i:i + size]) in loans:
                    covered.update(range(i, i + size))
                    i += size - 1
                    break
        i += 1
    return covered


@functools.cache
def _loan_first_words() -> frozenset[str]:
    return frozenset(loan[0] for loan in zh_loans())


def _closed_class(tokens: list[Token], i: int, loans: set[int]) -> tuple[str, str | None] | None:
    token = tokens[i]
    word, low = token.text, token.text.lower()
    form = _form(word)
    if form == "hanzi":
        return ("zh", None)
    if form == "reduplicated":
        return None  # budak2: a Malay plural, spelled out by the normaliser
    if form == "symbolic":
        return ("other", None)  # numbers, amounts, times, URLs, e-mail: spoken by the normaliser
    if i in loans and (i - 1 in loans or i + 1 in loans):
        return ("zh", None)  # a loan of several words: ah ma, lor mee
    previous = tokens[i - 1].text.lower() if i > 0 else ""
    if ((word[0].isupper() and _is_name(tokens, i)) or (low in _AH and starts_name(tokens, i))
            or (previous in _AH and starts_name(tokens, i - 1))
            or (previous in _TITLE_OR_PLACE and name_after_title(tokens, i))):
        return ("other", None)  # Mei Ling, ah Meng, kak Lah, aunty Mah, uncle Lim
    if i in loans:
        return ("zh", None)  # a one-word loan, unless it was a name: Ah Huat
    if form == "interjection" or (low in _AH and token.sentence_start):
        return ("other", None)
    if low == "leh" and previous in _NEGATORS:
        return ("ms", None)  # "tak leh" is "tak boleh", not the particle
    if form == "particle":
        found = particle(tokens, i)
        if found:
            return ("particle", found)
    if form == "ms-short":
        return ("ms", None)  # chat short forms: yg, dgn, x, sbb, dtg
    if form == "en-short":
        return ("en", None)  # u, r, pls, tmr
    return None


@functools.lru_cache(maxsize=262144)
def _form(word: str) -> str | None:
    """What a word is by its spelling alone, before any context (cached per spelling)."""
    low = word.lower()
    if _HANZI.search(word):
        return "hanzi"
    if _REDUPLICATED.fullmatch(word):
        return "reduplicated"
    if word.endswith("2") and len(word) > 2 and word[:-1].isalpha() and chat.is_malay_short_form(word[:-1]):
        return "ms-short"  # hbs2: habis-habis
    if any(ch.isdigit() for ch in word) and chat.english_form(word):
        return "en-short"  # b4, 2day
    if not any(ch.isalpha() for ch in word) or any(ch.isdigit() for ch in word) or _ADDRESS.search(word):
        return "symbolic"
    if low in INTERJECTIONS:
        return "interjection"
    if low in PARTICLE_VARIANTS:
        return "particle"
    if chat.is_malay_short_form(word):
        return "ms-short"
    if chat.english_form(word):
        return "en-short"
    return None


def _is_name(tokens: list[Token], i: int) -> bool:
    word = tokens[i].text
    if not word[0].isupper() or word == "I" or word.startswith("I'"):
        return False
    low = word.lower()
    if low in TITLES and not tokens[i].sentence_start:
        return False
    if low in CALENDAR and not tokens[i].sentence_start:
        # "Mei" the month, unless a name follows ("Mei Ling").
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        return (following is not None and following.text.istitle()
                and following.text.lower() not in TITLES | CALENDAR and _is_name(tokens, i + 1))
    if len(word) >= 2 and word.isupper() and word.isalpha():
        freq = frequencies()
        return max(freq.en.get(word.lower(), 0.0), freq.ms.get(word.lower(), 0.0)) < 1e-4  # IC, LRT, KL
    if not tokens[i].sentence_start:
        return True
    # A capitalised first word that is rare as a word ("Mei", "Siew") or the name prefix "Ah" is part
    # of a name when a name follows it ("Mei Ling", "Ah Seng"; not "Tadi Ah Chong").
    following = tokens[i + 1] if i + 1 < len(tokens) else None
    if following is None or following.sentence_start or not following.text.istitle():
        return False
    freq = frequencies()
    common = max(freq.ms.get(word.lower(), 0.0), freq.en.get(word.lower(), 0.0)) >= 1e-4
    return (word in ("Ah", "Ahh") or not common) and _is_name(tokens, i + 1)


def _pinyin_evidence(lows: list[str], fixed: list, loans: set[int]) -> bool:
    """Does anything in the utterance show it holds Mandarin: Hanzi, a word only pinyin can be, or
    two neighbours that make a Mandarin word (and not both common Malay or English words)?"""
    if any(f is not None and f[0] == "zh" and i not in loans for i, f in enumerate(fixed)):
        return True
    words, freq = pinyin_words(), frequencies()
    for i, low in enumerate(lows):
        if fixed[i] is not None:
            continue
        if _only_pinyin(low):
            return True
        if i + 1 < len(lows) and fixed[i + 1] is None and f"{low} {lows[i + 1]}" in words and min(
                max(freq.ms.get(w, 0.0), freq.en.get(w, 0.0)) for w in (low, lows[i + 1])) < 1e-4:
            return True
    return False


@functools.lru_cache(maxsize=65536)
def _only_pinyin(low: str) -> bool:
    """Can `low` only be pinyin: a Mandarin syllable or run of them that Malay and English barely
    use ("hao", "xiexie")?"""
    if pinyin_only(low):
        return True
    freq = frequencies()
    return (4 < len(low) <= 24 and max(freq.ms.get(low, 0.0), freq.en.get(low, 0.0)) < 1e-6
            and (split_pinyin(low) or [None]) != [None] and len(split_pinyin(low) or []) >= 2)


def _only(state: str) -> tuple[float, float, float]:
    return tuple(0.0 if s == state else -math.inf for s in STATES)  # type: ignore[return-value]


@functools.lru_cache(maxsize=262144)
def _emission(word: str) -> tuple[float, float, float]:
    """Log P(word | ms), P(word | en), P(word | zh)."""
    low = word.lower()
    if _REDUPLICATED.fullmatch(low):
        low = f"{low[:-1]}-{low[:-1]}"
    parts = [p for p in low.split("-") if p]
    if len(parts) > 1:
        if len(set(parts)) == 1 or all(p.startswith(parts[0]) for p in parts[1:]):
            return _emission(parts[0])  # reduplication: budak-budak, sudah-sudahlah
        scores = [_emission(p) for p in parts]
        return tuple(sum(s[k] for s in scores) / len(scores) for k in range(3))  # type: ignore[return-value]
    freq = frequencies()
    p_ms, p_en = freq.ms.get(low, 0.0), freq.en.get(low, 0.0)
    spelled_malay = char_model().p_malay(low) if low.isascii() and low.isalpha() else 0.5
    if p_en >= _EN_COMMON:
        # A common English word is Malay only as far as Indonesian uses it too: "air", "main",
        # "data" stay possible; "okay" (Indonesian "oke") does not.
        p_ms = min(p_ms, freq.id.get(low, 0.0))
    if p_en > 0.0 and 100 * p_en >= p_ms:
        # A word English has must also be spelled like Malay to be Malay ("project", "stress" are not),
        # unless Malay text uses it far more than English text does ("universiti", "proses").
        p_ms *= min(1.0, 2.0 * spelled_malay)
    if chat.colloquial_malay(low):
        p_ms = max(p_ms, 1e-4)  # korang, camne, ape, mane: Malay as chat says it
    if p_ms == 0.0 and len(low) > 4:
        for clitic in _CLITICS:
            base = low[: -len(clitic)]
            if low.endswith(clitic) and freq.ms.get(base, 0.0) > freq.en.get(base, 0.0):
                p_ms = 0.1 * freq.ms[base]  # cepatlah, rumahnya
                break
    p_zh = _pinyin_probability(low)
    p_ms, p_en = p_ms + _OOV * spelled_malay, p_en + _OOV * (1 - spelled_malay)
    return (math.log(p_ms), math.log(p_en), math.log(p_zh) if p_zh > 0 else _NO_PINYIN)


def _pinyin_probability(low: str) -> float:
    freq = pinyin_frequencies()
    if low in freq:
        return freq[low]
    if not low.isalpha() or len(low) > 24:
        return 0.0
    syllables = split_pinyin(low)
    if not syllables or len(syllables) < 2:
        return 0.0
    return math.prod(freq[s] for s in syllables)


def _viterbi(emissions: list[tuple[float, float, float]], boundaries: list[bool]) -> list[str]:
    if not emissions:
        return []
    score = [_START[s] + e for s, e in zip(STATES, emissions[0], strict=True)]
    back: list[list[int]] = []
    for emission, boundary in zip(emissions[1:], boundaries, strict=True):
        trans = _TRANS_BOUNDARY if boundary else _TRANS
        new_score, pointers = [], []
        for k, state in enumerate(STATES):
            best, arg = -math.inf, 0
            for j, prev in enumerate(STATES):
                value = score[j] + trans[prev][state]
                if value > best:
                    best, arg = value, j
            new_score.append(best + emission[k])
            pointers.append(arg)
        score = new_score
        back.append(pointers)
    state = max(range(3), key=score.__getitem__)
    path = [state]
    for pointers in reversed(back):
        state = pointers[state]
        path.append(state)
    return [STATES[k] for k in reversed(path)]
