"""Score word tagging against a labelled set: ours and an off-the-shelf baseline, in one run.

A labelled file has one utterance per line, `text<TAB>tags`, one tag per word as `analyze` splits
the words: `m` (ms), `e` (en), `z` (zh), `o` (other), `*lah`/`*what`/... (a particle and its
canonical name). Lines starting with `#` are comments. `data/text/dev.tsv` is the dev set.

Metrics: word accuracy (tag right, and for particles the canonical name right too), particle
precision/recall/F1 (a found particle counts when the word is that particle), phase accuracy
(the phase from our tags vs the phase from the gold tags).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from preprocess.text import PARTICLE_VARIANTS, Word, analyze, phase_of
from preprocess.text.tables import data_lines
from preprocess.text.tagger import tokenize

_CODES = {"m": "ms", "e": "en", "z": "zh", "o": "other"}
Tags = list[tuple[str, str | None]]
System = Callable[[str], Tags]


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    gold: Tags


@dataclass(frozen=True)
class Score:
    words: int
    word_accuracy: float
    particle_precision: float
    particle_recall: float
    particle_f1: float
    phase_accuracy: float
    confusion: Counter  # (gold tag, predicted tag) -> count, errors only

    def row(self) -> str:
        return (f"{self.word_accuracy:9.3f} {self.particle_precision:9.3f} {self.particle_recall:9.3f} "
                f"{self.particle_f1:9.3f} {self.phase_accuracy:9.3f}")


def parse_tag(code: str) -> tuple[str, str | None]:
    if code.startswith("*"):
        name = PARTICLE_VARIANTS.get(code[1:])
        if name is None or name != code[1:]:
            raise ValueError(f"{code!r} is not a canonical particle")
        return ("particle", name)
    if code not in _CODES:
        raise ValueError(f"unknown tag {code!r}; expected one of {sorted(_CODES)} or *particle")
    return (_CODES[code], None)


def load(path: Path) -> list[Example]:
    """The labelled utterances of `path`; raises ValueError naming the line of any malformed row."""
    examples = []
    for number, line in data_lines(path.read_text(encoding="utf-8")):
        text, sep, codes = line.partition("\t")
        if not sep:
            raise ValueError(f"{path}:{number}: expected text<TAB>tags")
        try:
            gold = [parse_tag(code) for code in codes.split()]
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
        words = [t.text for t in tokenize(text)]
        if len(words) != len(gold):
            raise ValueError(f"{path}:{number}: {len(gold)} tags for {len(words)} words {words}")
        examples.append(Example(number, text, gold))
    return examples


def ours(text: str) -> Tags:
    return [(w.lang, w.particle) for w in analyze(text).words]


def lingua_baseline() -> System:
    """lingua (word by word, Malay/English/Chinese): what an off-the-shelf identifier gives. Words
    without letters are `other`; lingua has no notion of particles."""
    from lingua import Language, LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_languages(Language.MALAY, Language.ENGLISH, Language.CHINESE).build()
    names = {Language.MALAY: "ms", Language.ENGLISH: "en", Language.CHINESE: "zh"}

    def system(text: str) -> Tags:
        tags = []
        for token in tokenize(text):
            if not any(ch.isalpha() for ch in token.text) or any(ch.isdigit() for ch in token.text):
                tags.append(("other", None))
            else:
                tags.append((names.get(detector.detect_language_of(token.text), "other"), None))
        return tags

    return system


def _phase(tags: Tags) -> int:
    return phase_of([Word("", lang, particle) for lang, particle in tags])


def score(examples: Iterable[Example], system: System) -> tuple[Score, list[tuple[Example, Tags]]]:
    """The metrics of `system` on `examples`, and the examples it got any word of wrong."""
    words = right = phases = n = 0
    tp = fp = fn = 0
    confusion: Counter = Counter()
    wrong = []
    for example in examples:
        predicted = system(example.text)
        n += 1
        phases += _phase(predicted) == _phase(example.gold)
        for gold, guess in zip(example.gold, predicted, strict=True):
            words += 1
            right += gold == guess
            if gold != guess:
                confusion[(_label(gold), _label(guess))] += 1
            if guess[0] == "particle":
                tp += gold == guess
                fp += gold != guess
            if gold[0] == "particle" and gold != guess:
                fn += 1
        if predicted != example.gold:
            wrong.append((example, predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(words, right / max(words, 1), precision, recall, f1, phases / max(n, 1), confusion), wrong


def _label(tag: tuple[str, str | None]) -> str:
    return f"*{tag[1]}" if tag[0] == "particle" else tag[0]


def report(path: Path, show_errors: bool = False, baseline: bool = True) -> str:
    examples = load(path)
    systems: dict[str, System] = {"suara": ours}
    if baseline:
        systems["lingua (word by word)"] = lingua_baseline()
    n_words = sum(len(e.gold) for e in examples)
    n_particles = sum(tag[0] == "particle" for e in examples for tag in e.gold)
    lines = [f"{path}: {len(examples)} utterances, {n_words} words, {n_particles} particles",
             f"{'system':24s} {'word acc':>9s} {'part P':>9s} {'part R':>9s} {'part F1':>9s} {'phase acc':>9s}"]
    details = []
    for name, system in systems.items():
        result, wrong = score(examples, system)
        lines.append(f"{name:24s} {result.row()}")
        top = ", ".join(f"{g}->{p} {c}" for (g, p), c in result.confusion.most_common(8))
        details.append(f"{name} most frequent errors (gold->predicted): {top or 'none'}")
        if show_errors and name == "suara":
            for example, predicted in wrong:
                marks = [f"{t.text}[{_label(g)}->{_label(p)}]"
                         for t, g, p in zip(tokenize(example.text), example.gold, predicted, strict=True) if g != p]
                details.append(f"  line {example.line}: {example.text}  {' '.join(marks)}")
    return "\n".join(lines + details)
