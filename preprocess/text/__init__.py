"""Malaysian text frontend: word-level language tags, discourse particles, switch points, phase.

`analyze(text)` is the one entry point (also `python -m preprocess.text analyze`, one JSON object
per input line). Tags: `ms`, `en`, `zh` (pinyin, Hanzi, Chinese-dialect loans), `particle`,
`other` (names, numbers, symbols, interjections). Phase: 3 if any particle, else 2 if two or more
of ms/en/zh occur, else 1. How words are tagged: `preprocess.text.tagger` (chat short forms:
`chat`; particles in context: `particles`; words both languages share: `context`); the spoken
form: `preprocess.text.normalize`; pronunciations: `preprocess.text.pronounce` (Malay: `malay`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from preprocess.text.lexicon import PARTICLE_VARIANTS
from preprocess.text.normalize import normalize as spoken
from preprocess.text.tagger import tag, tokenize

LANGS = ("ms", "en", "zh", "particle", "other")


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


def analyze(text: str) -> Analysis:
    toks = tokenize(text)
    words = [Word(t.text, lang, particle) for t, (lang, particle) in zip(toks, tag(toks), strict=True)]
    return Analysis(text=text, normalized=spoken(text, matrix_language(words)), words=words,
                    switches=switch_points(words), phase=phase_of(words))


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
