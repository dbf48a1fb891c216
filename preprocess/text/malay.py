"""Malay pronunciation by rule, and the two vowels Malay spells with one letter e.

Malay writes both pepet [ə] ("besar", "sebab") and taling [e] ("merah", "boleh") as e; which one a
word has is lexical, so the model is a word table first, then rules:

1. The e table (`data/e_vowels.tsv`): the vowel of each e of every word with a taling e, and of the
   all-pepet words the rules below would get wrong (4,236 words). Built by `build_e_table` from the
   Indonesian pronunciation lexicon shipped in the PyPI package g2p_id_py 0.4.2
   (`g2p_id/resources/lexicon_id.tsv`, 27,578 words, Apache-2.0, PT Bookbot Indonesia):
   Indonesian and Malay share most words and their e's ("merah", "perak", "kereta", "esok"), and
   Malaysian spellings the lexicon lacks are covered by `MALAYSIAN_E` below.
2. Affixes: a word not in the table is split into prefix + root + suffix when the root is a Malay
   word ("kemerahan" = ke + merah + an, "menyewa" = meny + sewa); the prefixes' e's are pepet and the
   root keeps its own.
3. Positional rules for the rest, each with the share of taling it predicts among the table's source
   words that are also in the Malay word list (6,420 words with an e):
   - final syllable closed by r: pepet (taling 25 %: loans "komputer", "meter"; "leher" is listed);
   - final syllable closed by any other consonant: taling (h, k, ng, s, t, n: 90-100 %; l, m: 70 %);
   - final open e: taling ("sate", "kafe", 49 % overall, ~90 % once -isme and the chat spelling of
     a final -a are set aside: "ape", "mane" are "apa", "mana" said with a schwa);
   - the penultimate e before a final-syllable e: taling (80 %: "leher", "nenek", "bengkel");
   - the penultimate e before o: taling (84 %: "esok", "elok", "tengok");
   - e right before another vowel: taling ("video", "teori", "geografi");
   - word-initial e three or more syllables from the end, or before i/o/e: taling (94 %: loans
     "ekonomi", "elektrik", "edisi"), unless a nasal cluster follows ("empangan");
   - anywhere else: pepet (95 % of the e's three or more syllables from the end are pepet).

Other rules: ng ny sy kh gh are one sound each; k is a glottal stop word-finally and before a
consonant; a glottal stop separates like vowels ("maaf", "saat", "keadaan") and stands for an
apostrophe ("ma'af"); final -a is a schwa (Peninsular speech); final ai/au/oi are diphthongs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

# Malaysian spellings and pronunciations the Indonesian lexicon lacks or has otherwise; the vowel of
# each e in order (T = taling, P = pepet).
MALAYSIAN_E = {
    "stesen": "TT", "televisyen": "TTT", "restoran": "T", "teksi": "T", "beca": "T", "beza": "T",
    "khemah": "T", "mentega": "PT", "selesa": "PT", "leceh": "TT", "senget": "PT", "pesek": "TT",
    "tauke": "T", "kemeja": "PT", "cerewet": "PTT", "ejen": "TT", "episod": "T", "estet": "TT",
    "filem": "P",
}

_TABLE = "data/e_vowels.tsv"
_VOWELS = frozenset("aeiou")
_DIGRAPHS = {"ng": "NG", "ny": "NY", "sy": "SH", "kh": "X", "gh": "G"}
LETTERS = {
    "a": "AA", "b": "B", "c": "CH", "d": "D", "f": "F", "g": "G", "h": "HH", "i": "IY", "j": "JH", "k": "K",
    "l": "L", "m": "M", "n": "N", "o": "OW", "p": "P", "q": "K", "r": "R", "s": "S", "t": "T", "u": "UW",
    "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z",
}
_FINAL_DIPHTHONGS = {"ai": "AY", "au": "AW", "oi": "OY"}

# Prefixes, longest first, as (spelling, the root's first letter it replaced or ""): the nasal
# prefixes swallow a root's first consonant ("menyewa" = meny + sewa, "menengok" = men + tengok).
_PREFIXES = (
    ("memper", ""), ("diper", ""), ("keber", ""), ("meny", "s"), ("peny", "s"), ("meng", "k"), ("peng", "k"),
    ("meng", ""), ("peng", ""), ("mem", "p"), ("pem", "p"), ("men", "t"), ("pen", "t"), ("mem", ""), ("men", ""),
    ("pem", ""), ("pen", ""), ("ber", ""), ("ter", ""), ("per", ""), ("be", ""), ("me", ""), ("pe", ""),
    ("ke", ""), ("se", ""), ("di", ""),
)
# be-, me- and pe- stand only before these root beginnings (be+rehat, be+kerja, me+lihat, pe+lari);
# elsewhere "be", "me", "pe" are a root's own first syllable ("belok", "meja", "peta").
_SHORT_PREFIX_ROOTS = {"be": re.compile(r"r|[^aeiou]er"), "me": re.compile(r"[lrwymn]"),
                       "pe": re.compile(r"[lrwymn]|[^aeiou]er")}
_SUFFIXES = ("kannya", "annya", "nya", "kan", "an", "i", "lah", "kah", "pun", "ku", "mu")
# Clitics attach to any word; -an, -i, -kan derive from roots of two syllables or more, so "pesan"
# is no "pes" + -an.
_CLITICS = frozenset({"nya", "lah", "kah", "pun", "ku", "mu"})


@functools.cache
def e_table() -> dict[str, str]:
    """The shipped e table with the Malaysian entries over it: word -> vowel of each e (T/P)."""
    text = resources.files("preprocess.text").joinpath(_TABLE).read_text(encoding="utf-8")
    rows = (line.split("\t") for line in text.splitlines() if line and not line.startswith("#"))
    return {**dict(rows), **MALAYSIAN_E}


def e_vowels(word: str, table: Mapping[str, str] | None = None) -> str:
    """The vowel of each e of a Malay word, in order: "T" taling, "P" pepet ("kereta" -> "PT").
    `table` is the word table (the shipped one by default; an empty one measures the rules alone)."""
    w = word.lower()
    if "e" not in w:
        return ""
    table = e_table() if table is None else table
    known = table.get(w)
    if known is not None and len(known) == w.count("e"):
        return known
    split = _split_affixes(w, table)
    if split:
        prefix, root, suffix = split
        return "P" * prefix.count("e") + e_vowels(root, table) + "P" * suffix.count("e")
    return _rules(w)


def _split_affixes(w: str, table: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(prefix as written, root, suffix) for the longest root that is a Malay word, or None."""
    from preprocess.text.lexicon import frequencies

    known = frequencies().ms
    best = None
    for suffix in ("", *_SUFFIXES):
        if suffix and not w.endswith(suffix):
            continue
        stem = w[: len(w) - len(suffix)]
        for prefix, replaced in (("", ""), *_PREFIXES):
            if not stem.startswith(prefix) or (not prefix and not suffix):
                continue
            root = replaced + stem[len(prefix):]
            if prefix in _SHORT_PREFIX_ROOTS and not _SHORT_PREFIX_ROOTS[prefix].match(root):
                continue
            if len(root) < 3 or not any(ch in _VOWELS for ch in root):
                continue
            if len(_nuclei(root)) < 2 and (prefix or suffix not in _CLITICS):
                continue
            found = root in table or known.get(root, 0.0) >= 1e-6
            if found and (best is None or len(root) > len(best[1])):
                best = (prefix, root, suffix)
    return best


def _nuclei(w: str) -> list[int]:
    """Positions of the vowels that head syllables (a final diphthong counts once)."""
    positions = [i for i, ch in enumerate(w) if ch in _VOWELS]
    if len(positions) >= 2 and w[-2:] in _FINAL_DIPHTHONGS and positions[-2:] == [len(w) - 2, len(w) - 1]:
        positions.pop()
    return positions


def _rules(w: str) -> str:
    nuclei = _nuclei(w)
    plan = []
    for k, i in enumerate(nuclei):
        if w[i] != "e":
            continue
        from_end = len(nuclei) - 1 - k
        after = w[i + 1:]
        following = w[nuclei[k + 1]] if k + 1 < len(nuclei) else ""
        if from_end == 0:
            taling = _final_taling(w, i, nuclei)
        elif after[:1] in _VOWELS:
            taling = True  # e right before a vowel: video, teori
        elif from_end == 1:
            taling = following in ("e", "o") or (i == 0 and following == "i")
        else:
            taling = i == 0 and not re.match(r"[mn](?!g?[aeiou])|ng(?![aeiou])", after)
        plan.append("T" if taling else "P")
    return "".join(plan)


def _final_taling(w: str, i: int, nuclei: list[int]) -> bool:
    coda = w[i + 1:]
    if not coda:
        if len(nuclei) == 1 or w.endswith("isme"):
            return False  # the clitics ke, se; -isme
        from preprocess.text.lexicon import frequencies

        # Chat spells a final -a said as a schwa with e: "ape", "mane", "kite" (apa, mana, kita).
        return frequencies().ms.get(w[:-1] + "a", 0.0) < 1e-5
    return coda != "r"


def malay(word: str, table: Mapping[str, str] | None = None) -> list[str]:
    """Phones of a Malay word by rule ("budak" -> B UW D AA Q); `table` as for `e_vowels`."""
    phones: list[str] = []
    for part in word.lower().split("-"):
        phones += _part(part, table)
    return phones


def _part(word: str, table: Mapping[str, str] | None) -> list[str]:
    w = "".join(ch for ch in word if (ch.isalpha() and ch.isascii()) or ch == "'").strip("'")
    plan = list(e_vowels(w.replace("'", ""), table))
    out: list[str] = []
    i = 0
    while i < len(w):
        pair, ch = w[i:i + 2], w[i]
        if ch == "'":
            out.append("Q")  # ma'af, Jum'at: the apostrophe writes a glottal stop
            i += 1
            continue
        if pair in _FINAL_DIPHTHONGS and i + 2 == len(w) and i > 0:
            out.append(_FINAL_DIPHTHONGS[pair])
            i += 2
            continue
        if pair in _DIGRAPHS:
            out.append(_DIGRAPHS[pair])
            i += 2
            continue
        if ch in _VOWELS and i > 0 and w[i - 1] == ch:
            out.append("Q")  # like vowels meet across a syllable break: maaf, saat, keadaan
        if ch == "e":
            out.append("EY" if (plan.pop(0) if plan else "P") == "T" else "AH")
        elif ch == "k" and (i + 1 == len(w) or (w[i + 1] not in _VOWELS and w[i + 1] not in "h'")):
            # Final k and k before a consonant are a glottal stop (budak, rakyat, maksud), but e or o
            # before k+s/t marks a loan that keeps its k (teksi, doktor, sektor).
            loan = i > 0 and w[i - 1] in "eo" and w[i + 1:i + 2] in ("s", "t")
            out.append("K" if loan else "Q")
        elif ch == "a" and i + 1 == len(w) and len(w) > 2:
            out.append("AH")  # Peninsular final -a: saya, apa
        else:
            out.extend(LETTERS.get(ch, "").split())
        i += 1
    return out


def build_e_table(lexicon: Path) -> dict[str, str]:
    """The e table from a lexicon in g2p_id's format (`word<TAB>IPA phones`, space-separated): every
    word with a taling e, and the words whose e's the rules alone would get wrong. Words whose vowels
    cannot be matched one to one with their spelling are left out."""
    plans: dict[str, str] = {}
    for line in lexicon.read_text(encoding="utf-8").splitlines():
        word, _, ipa = line.partition("\t")
        if not re.fullmatch(r"[a-z]+", word) or "e" not in word:
            continue
        vowels = [p for p in ipa.split() if p in ("a", "e", "ə", "i", "o", "u")]
        letters = [ch for ch in word if ch in _VOWELS]
        if len(vowels) != len(letters) or any(v != ch and not (ch == "e" and v == "ə")
                                              for ch, v in zip(letters, vowels, strict=True)):
            continue
        plans[word] = "".join("T" if v == "e" else "P" for ch, v in zip(letters, vowels, strict=True) if ch == "e")
    # Every word with a taling e; then the all-pepet words that the rules, given those, would get wrong.
    table = {w: p for w, p in plans.items() if "T" in p}
    table |= {w: p for w, p in plans.items() if "T" not in p and e_vowels(w, table) != p}
    return dict(sorted(table.items()))


def write_e_table(lexicon: Path, out: Path) -> int:
    table = build_e_table(lexicon)
    header = [
        "# The vowel of each e (T taling, P pepet) of the words the Malay rules would get wrong:",
        "# preprocess.text.malay.build_e_table over g2p_id/resources/lexicon_id.tsv of the PyPI package",
        "# g2p_id_py 0.4.2 (`pip download g2p_id_py==0.4.2 --no-deps`, then unzip the wheel).",
        "# Derived work: entries selected and reduced to their e vowels. The source lexicon is",
        "# Copyright 2023 PT Bookbot Indonesia, licensed under the Apache License, Version 2.0",
        "# (http://www.apache.org/licenses/LICENSE-2.0).",
    ]
    out.write_text("\n".join(header + [f"{w}\t{p}" for w, p in table.items()]) + "\n", encoding="utf-8")
    return len(table)
