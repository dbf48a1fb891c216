"""Chat Malay and chat English as people type them, and what each short form stands for.

Malay chat drops vowels: "sbb", "blh", "dgn", "smpai" are "sebab", "boleh", "dengan", "sampai".
No list can hold every such spelling, so a token is matched against the Malay word list by its
consonant skeleton:

1. Listed forms first (`SHORT_FORMS`): the spellings a skeleton cannot settle ("kt" is kat or kita,
   "bg" bagi or abang), contractions ("xde" takde) and pronoun forms ("korg" korang, "aq" aku).
2. Skeletons: every Malay word in wordfreq's list (seen at least once in a million words, and not
   more often in English text) is indexed by its first letter plus its consonants, also with ng
   written g or n, a nasal before a stop dropped and a final -a written e ("untuk" -> utk, "tengok"
   -> tgk, "berapa" -> brape). A token is one of those words with vowels left out ("smpai" = sampai
   less an a; "tggu" = tunggu): it is Malay. It is spelled out as the most frequent match when that
   is at least 1.5 times as frequent as the next ("dkt" dekat), else left as typed ("mrh": marah or
   merah). Two letters say too little ("ss", "hr"): those forms are listed or left alone. English
   chat forms (pls, tbh) and units are never taken for Malay.
3. Colloquial spellings said as written (`SAID_FORMS`: "korang", "camne", "tido") are Malay but not
   rewritten, and so is a final -e written for a final -a said as a schwa ("ape", "mane", "kite"):
   the tagger reads them as Malay (`colloquial_malay`).

English chat forms (`EN_SHORT_FORMS`: u, r, n, y, pls, tmr...) are English and spelled out in English.
Every rewrite shows in the analysis's `normalized` text.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict

from preprocess.text.lexicon import frequencies

# Malay chat short forms -> what is said (whole tokens only, any case).
SHORT_FORMS = {
    "yg": "yang", "dgn": "dengan", "utk": "untuk", "x": "tak", "tk": "tak", "sbb": "sebab", "nk": "nak",
    "blh": "boleh", "mcm": "macam", "dh": "dah", "tpi": "tapi", "tp": "tapi", "sy": "saya", "kt": "kat",
    "org": "orang", "pstu": "pastu", "lps": "lepas", "jgn": "jangan", "skrg": "sekarang", "bkn": "bukan",
    "sgt": "sangat", "krn": "kerana", "dlm": "dalam", "pd": "pada", "kpd": "kepada", "tgk": "tengok",
    "bg": "bagi", "lg": "lagi", "jln": "jalan", "mkn": "makan", "xpe": "takpe", "xde": "takde",
    "xnak": "tak nak", "xleh": "tak boleh", "tgh": "tengah", "ckp": "cakap", "dpt": "dapat", "jd": "jadi",
    "tlg": "tolong", "sblm": "sebelum", "ptg": "petang", "mlm": "malam", "esk": "esok", "knp": "kenapa",
    "npe": "kenapa", "sape": "siapa", "mne": "mana", "cmne": "macam mana", "sj": "saja", "jer": "je",
    "sket": "sikit", "bnyk": "banyak", "kwn": "kawan", "brp": "berapa", "bsk": "besok", "drpd": "daripada",
    "ttg": "tentang", "sptt": "seperti", "td": "tadi", "nnt": "nanti", "nnti": "nanti", "dr": "dari",
    "blk": "balik", "kn": "kan", "pn": "pun", "tkde": "takde", "tkpe": "takpe", "xtau": "tak tau",
    "tktau": "tak tau", "aq": "aku", "ak": "aku", "korg": "korang", "krg": "korang", "dorg": "diorang",
    "diorg": "diorang", "kitorg": "kitorang", "ktorg": "kitorang", "ktrg": "kitorang", "cmtu": "macam tu",
    "cmni": "macam ni", "mmg": "memang", "ngn": "dengan", "kalo": "kalau", "klu": "kalau", "tanak": "tak nak",
    "jgk": "jugak", "gk": "gak",
}
# English chat forms -> what is said. One-letter forms only in lower case ("Plan B" is no "be").
EN_SHORT_FORMS = {
    "u": "you", "r": "are", "n": "and", "y": "why", "k": "okay", "c": "see", "ur": "your", "pls": "please",
    "plz": "please", "thx": "thanks", "tq": "thank you", "tmr": "tomorrow", "tmrw": "tomorrow", "btw": "by the way",
    "idk": "I don't know", "nvm": "never mind", "otw": "on the way", "omw": "on my way", "ppl": "people",
    "msg": "message", "abt": "about", "bcoz": "because", "bcos": "because", "coz": "because", "cuz": "because",
    "b4": "before", "2day": "today", "2moro": "tomorrow", "2nite": "tonight", "gr8": "great", "l8r": "later",
    "brb": "be right back", "lmk": "let me know", "tbh": "to be honest", "imo": "in my opinion",
    "asap": "as soon as possible", "dunno": "don't know", "wanna": "want to", "gonna": "going to",
    "smh": "shaking my head", "jk": "just kidding", "ikr": "I know right", "fyi": "for your information",
}
# Colloquial Malay said as written: pronoun forms, contractions, clipped words.
SAID_FORMS = frozenset("""
ko kau hang depa korang diorang dorang kitorang kiterang camni camtu camne canne cemana macamtu pastu lepastu
takde takpe tade tapi takleh tatau nape napa kenape pehal apehal mende bende jap kejap gak jugak tau taw je jek
pon ker keje kije pegi gi pi dok tido citer cite sume ngan dekat lebey aje ajelah sat awat hampa cakap
""".split())
# Units and acronyms that look like vowel-dropped words.
_NOT_SHORT = frozenset("kg km cm mm ml mg kb mb gb tb hz kw rm sdn bhd hp pc tv dvd cd st mr mrs dr ms".split())
_VOWELS = frozenset("aeiou")
_NASAL_BEFORE_STOP = re.compile(r"n(?=[tdcj])|m(?=[pb])")


@functools.lru_cache(maxsize=65536)
def english_form(token: str) -> str | None:
    """What an English chat form says ("u" -> "you"), or None."""
    if len(token) == 1 and not token.islower():
        return None
    return EN_SHORT_FORMS.get(token.lower())


@functools.lru_cache(maxsize=65536)
def malay_form(token: str) -> str | None:
    """What a Malay chat short form says ("sbb" -> "sebab", "smpai" -> "sampai"), or None when the
    token is no short form, or could be several words about as often ("lmbt": lambat, lembut)."""
    listed = SHORT_FORMS.get(token.lower())
    if listed is not None:
        return listed
    if token.lower() in SAID_FORMS:
        return None  # said as written: "tade" is no "tiada"
    candidates = _candidates(token)
    if not candidates or (len(candidates) > 1 and candidates[0][0] < 1.5 * candidates[1][0]):
        return None
    return candidates[0][1]


@functools.lru_cache(maxsize=65536)
def is_malay_short_form(token: str) -> bool:
    """Is `token` a Malay short form, even one that could stand for several Malay words?"""
    return token.lower() in SHORT_FORMS or bool(_candidates(token))


def _candidates(token: str) -> list[tuple[float, str]]:
    if not (token.islower() or (token[:1].isupper() and token[1:].islower())):
        return []  # acronyms: KL, LRT
    return _skeleton_candidates(token.lower())


def colloquial_malay(low: str) -> bool:
    """Is `low` a Malay word as chat says it: a listed form, or a final -e for a said schwa ("mane")?"""
    if low in SAID_FORMS:
        return True
    freq = frequencies()
    return (len(low) > 2 and low.endswith("e") and freq.ms.get(low[:-1] + "a", 0.0) >= 1e-5
            and freq.en.get(low, 0.0) < 1e-5)


@functools.lru_cache(maxsize=65536)
def _skeleton_candidates(low: str) -> list[tuple[float, str]]:
    """The Malay words `low` is a vowel-dropped spelling of, most frequent first."""
    if not (3 <= len(low) <= 14 and low.isascii() and low.isalpha()) or low in _NOT_SHORT:
        return []
    if low in EN_SHORT_FORMS or sum(ch not in _VOWELS for ch in low) < 2:
        return []
    freq = frequencies()
    p_ms, p_en = freq.ms.get(low, 0.0), freq.en.get(low, 0.0)
    if any(ch in _VOWELS for ch in low[1:]):
        if max(p_ms, p_en) >= 1e-6:
            return []  # a word in its own right
    elif p_en >= 1e-5 and p_en >= p_ms:
        return []  # an English abbreviation: tbh, wtf
    candidates = [(f, w) for f, w in _skeleton_index().get(_skeleton(low), ())
                  if len(w) > len(low) and any(_subsequence_by_vowels(low, form) for form in _spellings(w))]
    return sorted(candidates, reverse=True)


def _skeleton(word: str) -> str:
    return word[0] + "".join(ch for ch in word[1:] if ch not in _VOWELS)


def _spellings(word: str) -> set[str]:
    """The ways chat writes the consonants of `word`: as spelled, ng as g or n, a nasal before a
    stop dropped, a final -a said as a schwa written e ("berape")."""
    forms = {word, word.replace("ng", "g"), word.replace("ng", "n")}
    forms |= {_NASAL_BEFORE_STOP.sub("", f) for f in forms}
    return forms | {f[:-1] + "e" for f in forms if f.endswith("a")}


def _subsequence_by_vowels(token: str, form: str) -> bool:
    """Is `token` the spelling `form` with some vowels (never the first letter) left out?"""
    if not token or token[0] != form[0]:
        return False
    i = 1
    for ch in form[1:]:
        if i < len(token) and token[i] == ch:
            i += 1
        elif ch not in _VOWELS:
            return False
    return i == len(token) and len(form) > len(token)


@functools.cache
def _skeleton_index() -> dict[str, list[tuple[float, str]]]:
    """Skeleton -> (frequency, Malay word) for every Malay word chat could shorten (~0.2 s once)."""
    freq = frequencies()
    index: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for word, f in freq.ms.items():
        if f < 1e-6 or len(word) < 3 or not (word.isascii() and word.isalpha()) or f < freq.en.get(word, 0.0):
            continue
        if sum(ch in _VOWELS for ch in word) < 1:
            continue  # chat forms themselves ("blh") are in the list too
        for key in {_skeleton(form) for form in _spellings(word)}:
            index[key].append((f, word))
    for word in (w for w in SAID_FORMS if freq.ms.get(w, 0.0) < 1e-6):  # tido: Malay as said, rare in print
        for key in {_skeleton(form) for form in _spellings(word)}:
            index[key].append((1e-6, word))
    return dict(index)
