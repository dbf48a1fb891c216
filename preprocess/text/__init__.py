"""Malaysian text frontend: word-level language tags, discourse particles, switch points, phase.

`analyze(text)` is the one entry point (also `python -m preprocess.text analyze`, one JSON object
per input line). Tags: `ms`, `en`, `zh` (pinyin, Hanzi, Chinese-dialect loans), `particle`,
`other` (numbers, symbols, names we cannot place). Phase: 3 if any particle, else 2 if two or more
of ms/en/zh occur, else 1.

This first version decides by lexicon lookup plus a few context rules for the words that are
both a particle and an ordinary English word ("what", "one", "ah").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from preprocess.text.lexicon import (
    ENGLISH_WORDS,
    MALAY_WORDS,
    PARTICLE_VARIANTS,
    PINYIN_SYLLABLES,
    ZH_LOANS,
)
from preprocess.text.normalize import SHORT_FORMS
from preprocess.text.normalize import clean_unicode as normalize
from preprocess.text.normalize import normalize as spoken

LANGS = ("ms", "en", "zh", "particle", "other")
# Particles that are also common English words: a particle only at the end of a clause.
_AMBIGUOUS_PARTICLES = {"what", "one", "ah", "wat", "lo", "wo"}
_CLAUSE_END = re.compile(r"[.,!?;:…]+$")
_PUNCT_EDGES = re.compile(r"^[^\w]+|[^\w]+$", re.UNICODE)
_HANZI = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Word:
    text: str
    lang: str
    particle: str | None = None

    def to_dict(self) -> dict:
        return {"text": self.text, "lang": self.lang, "particle": self.particle}


@dataclass(frozen=True)
class Analysis:
    text: str
    normalized: str
    words: list[Word] = field(default_factory=list)
    switches: list[int] = field(default_factory=list)
    phase: int = 1

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "normalized": self.normalized,
            "words": [w.to_dict() for w in self.words],
            "switches": self.switches,
            "phase": self.phase,
        }


def matrix_language(words: list[Word]) -> str:
    """The utterance's base language: the more frequent of Malay and English (Malay on a tie)."""
    ms = sum(w.lang == "ms" for w in words)
    en = sum(w.lang == "en" for w in words)
    return "en" if en > ms else "ms"


def tokens(text: str) -> list[tuple[str, bool]]:
    """Whitespace tokens with edge punctuation stripped, and whether each ends a clause."""
    out = []
    raw = normalize(text).split(" ") if text.strip() else []
    for position, token in enumerate(raw):
        word = _PUNCT_EDGES.sub("", token)
        if not word:
            continue
        clause_end = bool(_CLAUSE_END.search(token)) or position == len(raw) - 1
        out.append((word, clause_end))
    return out


def _lexical_lang(word: str) -> str | None:
    low = word.lower()
    if _HANZI.search(word):
        return "zh"
    if not any(ch.isalpha() for ch in word) or any(ch.isdigit() for ch in word):
        return "other"  # numbers, amounts, times: spoken by the normaliser in the matrix language
    if low in SHORT_FORMS:
        return "ms"
    if low in ZH_LOANS:
        return "zh"
    in_ms, in_en = low in MALAY_WORDS, low in ENGLISH_WORDS
    if in_ms and not in_en:
        return "ms"
    if in_en and not in_ms:
        return "en"
    if in_ms and in_en:
        return None  # decided by the neighbours
    if low in PINYIN_SYLLABLES:
        return None  # pinyin only if neighbours are pinyin too ("ni hao", not "ni" in "budak ni")
    if re.fullmatch(r"[a-z]+(2|-[a-z]+)", low) and low.split("-")[0].rstrip("2") in MALAY_WORDS:
        return "ms"  # reduplication: budak2, budak-budak
    return "en" if word.isascii() else "other"


def _particle(word: str, clause_end: bool, index: int, n: int) -> str | None:
    low = word.lower()
    canonical = PARTICLE_VARIANTS.get(low)
    if canonical is None:
        return None
    if low in _AMBIGUOUS_PARTICLES and not (clause_end and index > 0):
        return None  # "What you want?", "one car", "Ah Seng"
    return canonical


def analyze(text: str) -> Analysis:
    toks = tokens(text)
    n = len(toks)
    langs: list[str | None] = []
    particles: list[str | None] = []
    for index, (word, clause_end) in enumerate(toks):
        particle = _particle(word, clause_end, index, n)
        particles.append(particle)
        langs.append("particle" if particle else _lexical_lang(word))

    # Pinyin runs: a syllable next to a pinyin-only syllable or a Chinese word is zh even when it is
    # also a Malay word ("ni hao" vs "budak ni"); an English word needs such words on both sides
    # ("mei you shi" vs "you").
    zh_anchor = [
        langs[j] == "zh"
        or (toks[j][0].lower() in PINYIN_SYLLABLES and toks[j][0].lower() not in MALAY_WORDS | ENGLISH_WORDS)
        for j in range(n)
    ]
    for i, (word, _) in enumerate(toks):
        low = word.lower()
        if langs[i] == "particle" or low not in PINYIN_SYLLABLES or zh_anchor[i]:
            continue
        sides = [zh_anchor[j] for j in (i - 1, i + 1) if 0 <= j < n]
        if (low in ENGLISH_WORDS and sides and all(sides)) or (low not in ENGLISH_WORDS and any(sides)):
            langs[i] = "zh"
    for i in range(n):
        if zh_anchor[i] and langs[i] is None:
            langs[i] = "zh"

    # Words in two lexicons take the language of the nearest decided neighbour (left first).
    for i in range(n):
        if langs[i] is None:
            langs[i] = _nearest(langs, i) or ("ms" if toks[i][0].lower() in MALAY_WORDS else "en")

    words = [Word(w, lang, p) for (w, _), lang, p in zip(toks, langs, particles, strict=True)]
    return Analysis(text=text, normalized=spoken(text, matrix_language(words)), words=words,
                    switches=switch_points(words), phase=phase_of(words))


def _nearest(langs: list[str | None], i: int) -> str | None:
    for distance in range(1, len(langs)):
        for j in (i - distance, i + distance):
            if 0 <= j < len(langs) and langs[j] in ("ms", "en", "zh"):
                return langs[j]
    return None


def switch_points(words: list[Word]) -> list[int]:
    """Indices of words whose language (ms/en/zh) differs from the previous such word's."""
    switches, previous = [], None
    for index, word in enumerate(words):
        if word.lang in ("ms", "en", "zh"):
            if previous is not None and word.lang != previous:
                switches.append(index)
            previous = word.lang
    return switches


def phase_of(words: list[Word]) -> int:
    if any(w.lang == "particle" for w in words):
        return 3
    return 2 if len({w.lang for w in words} & {"ms", "en", "zh"}) >= 2 else 1


def with_tags(analysis: Analysis, langs: list[str], particles: list[str | None] | None) -> Analysis:
    """The analysis with tags given by a manifest (they override ours). Raises ValueError when the
    tags do not match the words."""
    n = len(analysis.words)
    if len(langs) != n:
        raise ValueError(f"{len(langs)} language tags for {n} words")
    bad = sorted(set(langs) - set(LANGS))
    if bad:
        raise ValueError(f"unknown language tags {bad}; expected {list(LANGS)}")
    if particles is not None and len(particles) != n:
        raise ValueError(f"{len(particles)} particle tags for {n} words")
    words = []
    for i, (word, lang) in enumerate(zip(analysis.words, langs, strict=True)):
        particle = particles[i] if particles is not None else word.particle
        particle = None if particle in (None, "", "none") else PARTICLE_VARIANTS.get(particle, particle)
        if lang == "particle" and particle is None:
            particle = PARTICLE_VARIANTS.get(word.text.lower())
            if particle is None:
                raise ValueError(f"word {word.text!r} is tagged particle but is no known particle")
        words.append(Word(word.text, lang, particle if lang == "particle" else None))
    return Analysis(text=analysis.text, normalized=analysis.normalized, words=words,
                    switches=switch_points(words), phase=phase_of(words))
