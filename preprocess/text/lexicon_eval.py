"""Score Malay pronunciations against a labelled word list, in one run: what the lexicon command writes
for each word alone on a line (tagger + pronouncer), the Malay rules with the e table, the rules alone.

A list has one word a line, `word<TAB>IPA phones` (space-separated; `data/text/lexicon.tsv`), lines
starting with `#` are comments. The IPA is mapped onto the lexicon's phone set; a final [a] may be
said [a] or [ə] (Peninsular speech has both), so either counts.

Metrics: word accuracy (every phone right), taling recall and precision (the gold [e]s we say as
taling, the taling we say that are gold [e]), pepet accuracy (the gold [ə]s we say as pepet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from preprocess.text.malay import malay
from preprocess.text.tables import data_lines

IPA_PHONES = {
    "a": "AA", "e": "EY", "ə": "AH", "i": "IY", "o": "OW", "u": "UW", "ai̯": "AY", "au̯": "AW", "oi̯": "OY",
    "b": "B", "tʃ": "CH", "d": "D", "f": "F", "g": "G", "ɣ": "G", "h": "HH", "dʒ": "JH", "k": "K", "l": "L",
    "m": "M", "n": "N", "ŋ": "NG", "ɲ": "NY", "p": "P", "r": "R", "s": "S", "ʃ": "SH", "t": "T", "w": "W",
    "j": "Y", "z": "Z", "x": "X", "ʔ": "Q", "v": "V",
}
System = Callable[[str], list[str]]


@dataclass(frozen=True)
class Entry:
    line: int
    word: str
    phones: list[str]


@dataclass(frozen=True)
class LexiconScore:
    words: int
    word_accuracy: float
    taling_recall: float
    taling_precision: float
    pepet_accuracy: float

    def row(self) -> str:
        return (f"{self.word_accuracy:9.3f} {self.taling_recall:9.3f} {self.taling_precision:9.3f} "
                f"{self.pepet_accuracy:9.3f}")


def load(path: Path) -> list[Entry]:
    """The entries of a labelled list; raises ValueError naming the line of a malformed row."""
    entries = []
    for number, line in data_lines(path.read_text(encoding="utf-8")):
        word, sep, ipa = line.partition("\t")
        unknown = sorted({p for p in ipa.split() if p not in IPA_PHONES})
        if not sep or not ipa.split() or unknown:
            raise ValueError(f"{path}:{number}: expected word<TAB>IPA phones from {sorted(IPA_PHONES)}"
                             + (f"; unknown {unknown}" if unknown else ""))
        entries.append(Entry(number, word, [IPA_PHONES[p] for p in ipa.split()]))
    return entries


def ours(word: str) -> list[str]:
    """What `python -m preprocess.text lexicon` writes first for the word alone on a line: the tagger
    decides its language, the pronouncer its phones."""
    from preprocess.text import analyze
    from preprocess.text.pronounce import dictionary

    entries = dictionary([analyze(word).words])
    return entries[word.lower()][0] if word.lower() in entries else []


def rules_alone(word: str) -> list[str]:
    """The Malay rules without the e table: what the positional rules give on their own."""
    return malay(word, table={})


def _same(gold: list[str], ours: list[str]) -> bool:
    if len(gold) != len(ours):
        return False
    last = len(gold) - 1
    return all(g == o or (i == last and g == "AA" and o == "AH") for i, (g, o) in enumerate(zip(gold, ours,
                                                                                                   strict=True)))


def score(entries: list[Entry], system: System) -> tuple[LexiconScore, list[tuple[Entry, list[str]]]]:
    right = taling = taling_found = said_taling = pepet = pepet_right = 0
    wrong = []
    for entry in entries:
        ours = system(entry.word)
        if _same(entry.phones, ours):
            right += 1
        else:
            wrong.append((entry, ours))
        said_taling += ours.count("EY")
        for tag, g0, g1, o0, o1 in SequenceMatcher(a=entry.phones, b=ours, autojunk=False).get_opcodes():
            pairs = list(zip(entry.phones[g0:g1], ours[o0:o1], strict=False)) if tag in ("equal", "replace") else []
            taling += entry.phones[g0:g1].count("EY")
            taling_found += sum(g == o == "EY" for g, o in pairs)
            pepet += entry.phones[g0:g1].count("AH")
            pepet_right += sum(g == o == "AH" for g, o in pairs)
    n = max(len(entries), 1)
    return LexiconScore(len(entries), right / n, taling_found / max(taling, 1), taling_found / max(said_taling, 1),
                        pepet_right / max(pepet, 1)), wrong


def report(path: Path, show_errors: bool = False) -> str:
    entries = load(path)
    gold_taling = sum(e.phones.count("EY") for e in entries)
    lines = [f"{path}: {len(entries)} words, {gold_taling} taling e",
             f"{'system':24s} {'word acc':>9s} {'taling R':>9s} {'taling P':>9s} {'pepet acc':>9s}"]
    details = []
    systems = {"suara (tagger + lexicon)": ours, "Malay rules + e table": malay, "rules alone (no table)": rules_alone}
    for name, system in systems.items():
        result, wrong = score(entries, system)
        lines.append(f"{name:24s} {result.row()}")
        if show_errors and system is ours:
            details += [f"  line {e.line}: {e.word}  gold {' '.join(e.phones)}  ours {' '.join(ours)}"
                        for e, ours in wrong]
    return "\n".join(lines + details)
