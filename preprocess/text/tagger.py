"""Word-level language tags and discourse particles for Malaysian text.

Three passes over the words of an utterance:

1. Closed classes by form and position: numbers, symbols, addresses and interjections are `other`,
   names (capitalised mid-sentence, acronyms) are `other`, Hanzi and Chinese-dialect loans are
   `zh`, chat short forms are `ms`, particles are `particle`. The words that are both a particle and
   an ordinary word ("what", "one", "ah", "wo", "liao") are particles only at the end of a clause
   and after a word that does not take them as an object or noun ("so stingy one" vs "that one",
   "I told you already what" vs "you want what?").
2. The rest by a hidden Markov model over ms/en/zh: emissions are word frequencies (wordfreq's
   Malay, English and Indonesian tables; Mandarin syllable frequencies for pinyin), transitions
   favour staying in a language, so a word found in two languages ("ni", "you", "air") takes the
   language its neighbours make likely ("budak ni" vs "ni hao"). Particles and `other` words are
   transparent: the language carries across them. Viterbi decoding, three states.
3. Words no table knows fall back on a character-trigram model (Malay or English by spelling) and on
   pinyin segmentation ("xiexie").

English loans that Malay text uses freely ("okay", "best", "order") are frequent in wordfreq's
Malay table too; for a word common in English its Malay frequency is capped by its Indonesian one,
which keeps genuinely shared words ("air", "main", "data") Malay-capable and loans English.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from preprocess.text.charmodel import char_model
from preprocess.text.lexicon import (
    AMBIGUOUS_PARTICLES,
    ARTICLES,
    CALENDAR,
    DETERMINERS,
    INTERJECTIONS,
    OBJECT_VERBS,
    PARTICLE_VARIANTS,
    TITLES,
    ZH_LOANS,
    frequencies,
    pinyin_frequencies,
    split_pinyin,
)
from preprocess.text.normalize import SHORT_FORMS, clean_unicode

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
_NEGATORS = frozenset({"tak", "x", "tk", "tidak", "takkan", "mana", "dah"})
_CLITICS = ("lah", "nya", "kah", "pun", "ku", "mu", "tah")

_CLAUSE_END = re.compile(r"[.,!?;:…)\]]+$")
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*$")
_PUNCT_EDGES = re.compile(r"^[^\w]+|[^\w]+$", re.UNICODE)
_REDUPLICATED = re.compile(r"[^\W\d_]{2,}2")
_HANZI = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_ADDRESS = re.compile(r"@|^(?:https?://|www\.)|\w\.\w+\.|^\w+\.(?:com|my|net|org)\b", re.IGNORECASE)


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


def tag(tokens: list[Token]) -> list[tuple[str, str | None]]:
    """(language tag, canonical particle or None) for each token."""
    fixed: list[tuple[str, str | None] | None] = [_closed_class(tokens, i) for i in range(len(tokens))]
    open_positions = [i for i, f in enumerate(fixed) if f is None or f[0] in STATES]
    # A fixed zh/ms word still takes part in the HMM (as context), with only its own state allowed.
    emissions = [_emission(tokens[i].text) if fixed[i] is None else _only(fixed[i][0]) for i in open_positions]
    # Is there a clause boundary between each open word and the one before it?
    boundaries = [any(tokens[j].clause_end for j in range(a, b))
                  for a, b in zip(open_positions, open_positions[1:], strict=False)]
    for i, lang in zip(open_positions, _viterbi(emissions, boundaries), strict=True):
        if fixed[i] is None:
            fixed[i] = (lang, None)
    return fixed  # type: ignore[return-value]


def _closed_class(tokens: list[Token], i: int) -> tuple[str, str | None] | None:
    token = tokens[i]
    word, low = token.text, token.text.lower()
    if _HANZI.search(word):
        return ("zh", None)
    if _REDUPLICATED.fullmatch(word):
        return None  # budak2: a Malay plural, spelled out by the normaliser
    if not any(ch.isalpha() for ch in word) or any(ch.isdigit() for ch in word) or _ADDRESS.search(word):
        return ("other", None)  # numbers, amounts, times, URLs, e-mail: spoken by the normaliser
    if _is_name(tokens, i):
        return ("other", None)
    if low in INTERJECTIONS or (low in ("ah", "ahh") and token.sentence_start):
        return ("other", None)
    if low == "leh" and i > 0 and tokens[i - 1].text.lower() in _NEGATORS:
        return ("ms", None)  # "tak leh" is "tak boleh", not the particle
    particle = _particle(tokens, i)
    if particle:
        return ("particle", particle)
    if low in ZH_LOANS:
        return ("zh", None)
    if SHORT_FORMS.get(low, low) != low:
        return ("ms", None)  # chat short forms: yg, dgn, x, sy
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


def _particle(tokens: list[Token], i: int) -> str | None:
    token = tokens[i]
    low = token.text.lower()
    canonical = PARTICLE_VARIANTS.get(low)
    if canonical is None or low not in AMBIGUOUS_PARTICLES:
        return canonical
    if i == 0:
        return None
    at_end = token.clause_end or (i + 1 < len(tokens) and tokens[i + 1].text.lower() in PARTICLE_VARIANTS)
    previous = tokens[i - 1].text.lower()
    if canonical == "ah":
        # Mid-sentence topic marker too ("this one ah, ..."), unless it starts a name ("tolong Ah Meng").
        return canonical if at_end or not token.text[0].isupper() else None
    if not at_end:
        return None
    if canonical == "what":
        return None if token.question or previous in OBJECT_VERBS else canonical
    if canonical == "one":
        # "that one", "the red one" (an article two words back), but "no problem one" is a particle.
        two_back = tokens[i - 2].text.lower() if i >= 2 else ""
        return None if previous in OBJECT_VERBS or previous in DETERMINERS or two_back in ARTICLES else canonical
    # wo / liao: particles after a clause, pinyin inside a pinyin run ("wo ai ni", "ni shuo wo").
    return None if _pinyin_only(previous) else canonical


@functools.lru_cache(maxsize=65536)
def _pinyin_only(low: str) -> bool:
    freq = frequencies()
    return low in freq.pinyin and max(freq.ms.get(low, 0.0), freq.en.get(low, 0.0)) < 1e-5


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
    if p_en > 0.0:
        # A word English has must also be spelled like Malay to be Malay ("project", "stress" are not).
        p_ms *= min(1.0, 2.0 * spelled_malay)
    if p_ms == 0.0 and len(low) > 4:
        for clitic in _CLITICS:
            base = low[: -len(clitic)]
            if low.endswith(clitic) and freq.ms.get(base, 0.0) > freq.en.get(base, 0.0):
                p_ms = 0.1 * freq.ms[base]  # cepatlah, rumahnya
                break
    p_zh = _pinyin_probability(low)
    p_ms, p_en = p_ms + _OOV * spelled_malay, p_en + _OOV * (1 - spelled_malay)
    return (math.log(p_ms), math.log(p_en), math.log(p_zh) if p_zh > 0 else math.log(1e-12))


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
