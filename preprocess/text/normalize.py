"""Spoken-form normalisation in the utterance's matrix language (Malay or English).

Numbers, RM amounts, percentages, times, ordinals, Malay reduplication (budak2), chat short forms
(yg, dgn, x, and vowel-dropped spellings matched by skeleton: sbb, dtg, smpai; English u, pls, tmr:
`preprocess.text.chat`), URLs, e-mail addresses and emoji become words CSM can say. Particles and
English words are never rewritten into Malay; only tokens that are numbers, symbols or short forms
change.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from preprocess.text.abbreviations import expand_abbreviations
from preprocess.text.chat import english_form, malay_form

MS_UNITS = ["kosong", "satu", "dua", "tiga", "empat", "lima", "enam", "tujuh", "lapan", "sembilan"]
EN_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
EN_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
              "nine": "ninth", "twelve": "twelfth"}

TIME_WORDS = {"pagi", "petang", "malam", "tengahari", "tengah", "pm", "am", "o'clock"}

_EMOJI = re.compile(
    "[\U0001F000-\U0001FAFF\U00002600-\U000027BF\U0001F900-\U0001F9FF\U00002B00-\U00002BFF\uFE0F\u200D]+"
)
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_MONEY = re.compile(r"\bRM\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\b", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_TIME = re.compile(r"\b(\d{1,2})(?:[.:](\d{2}))?\s?(am|pm|a\.m\.|p\.m\.)?(?=\s|$|[,.!?])", re.IGNORECASE)
_DATE = re.compile(r"\b(\d{1,2})[/.-](\d{1,2})[/.-](\d{4}|\d{2})\b")
_HB = re.compile(r"\b(\d{1,2})\s?hb\b", re.IGNORECASE)
MS_MONTHS = ["Januari", "Februari", "Mac", "April", "Mei", "Jun", "Julai", "Ogos", "September", "Oktober",
             "November", "Disember"]
EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December"]
_YEAR_AFTER_MONTH = re.compile(r"\b(" + "|".join(sorted(set(MS_MONTHS + EN_MONTHS))) + r")\s(\d{4})\b", re.IGNORECASE)
_MS_ORDINAL = re.compile(r"\bke-?(\d+)\b", re.IGNORECASE)
_EN_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
# budak2, hbs2: a word (or a short form) with a vowel or two consonants at least; "ss2" is a place.
_REDUP = re.compile(r"\b(?=[A-Za-z]*[AEIOUaeiou])([A-Za-z]{2,})2\b")
_DOTTED = re.compile(r"\b\d+(?:\.\d+){2,}\b")
# Telephone numbers (+60 12-345 6789, 03-1234 5678) and codes with a leading zero (007) are read
# digit by digit, as people say them, never as one large number.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s-]?\d{1,3}|\(?0\d{1,2}\)?)(?:[\s-]?\d{3,4}){1,2}\b")
_LEADING_ZERO = re.compile(r"(?<![\d.,])\b0\d+\b(?![.,]\d)")
_DIGIT_WORDS = {"ms": "kosong satu dua tiga empat lima enam tujuh lapan sembilan".split(),
                "en": "zero one two three four five six seven eight nine".split()}
_NUMBER = re.compile(r"\b\d{1,3}(?:,\d{3})+(?:\.\d+)?\b|\b\d+(?:\.\d+)?\b")


def ms_number(n: int) -> str:
    if n < 10:
        return MS_UNITS[n]
    if n < 20:
        return {10: "sepuluh", 11: "sebelas"}.get(n, f"{MS_UNITS[n - 10]} belas")
    if n < 100:
        tens, unit = divmod(n, 10)
        return f"{MS_UNITS[tens]} puluh" + (f" {MS_UNITS[unit]}" if unit else "")
    for size, one, name in ((10**9, "satu bilion", "bilion"), (10**6, "satu juta", "juta"),
                            (1000, "seribu", "ribu"), (100, "seratus", "ratus")):
        if n >= size:
            head, rest = divmod(n, size)
            words = one if head == 1 else f"{ms_number(head)} {name}"
            return words + (f" {ms_number(rest)}" if rest else "")
    raise ValueError(n)


def en_number(n: int) -> str:
    if n < 20:
        return EN_UNITS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return EN_TENS[tens] + (f" {EN_UNITS[unit]}" if unit else "")
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{en_number(head)} {name}" + (f" {en_number(rest)}" if rest else "")
    raise ValueError(n)


def number(text: str, lang: str) -> str:
    """An integer or decimal numeral ("1,250", "3.5") in words."""
    whole, _, frac = text.replace(",", "").partition(".")
    say = ms_number if lang == "ms" else en_number
    words = say(int(whole))
    if frac:
        point = "perpuluhan" if lang == "ms" else "point"
        digits = " ".join((MS_UNITS if lang == "ms" else EN_UNITS)[int(d)] for d in frac)
        words += f" {point} {digits}"
    return words


def ordinal(n: int, lang: str) -> str:
    if lang == "ms":
        return "pertama" if n == 1 else f"ke{ms_number(n)}" if n < 10 else f"ke-{ms_number(n)}"
    words = en_number(n).split()
    last = words[-1]
    words[-1] = EN_ORDINAL.get(last, (last[:-1] + "ieth") if last.endswith("y") else last + "th")
    return " ".join(words)


def year(n: int, lang: str) -> str:
    """A year as it is said: "dua ribu dua puluh enam"; "twenty twenty six", "nineteen ninety"."""
    if lang == "ms" or not 1100 <= n <= 2099 or 2000 <= n <= 2009:
        return ms_number(n) if lang == "ms" else en_number(n)
    head, tail = divmod(n, 100)
    rest = f"oh {en_number(tail)}" if 0 < tail < 10 else en_number(tail) if tail else "hundred"
    return f"{en_number(head)} {rest}"


def _date(m: re.Match, lang: str) -> str:
    day, month, yr = int(m.group(1)), int(m.group(2)), m.group(3)
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return m.group(0)
    full = int(yr) + (2000 if len(yr) == 2 else 0)
    if lang == "ms":
        return f"{ms_number(day)} {MS_MONTHS[month - 1]} {year(full, 'ms')}"
    return f"{ordinal(day, 'en')} of {EN_MONTHS[month - 1]} {year(full, 'en')}"


def _money(m: re.Match, lang: str) -> str:
    ringgit = int(m.group(1).replace(",", ""))
    sen = int((m.group(2) or "0").ljust(2, "0"))
    say = ms_number if lang == "ms" else en_number
    parts = [f"{say(ringgit)} ringgit"] if ringgit or not sen else []
    if sen:
        parts.append(f"{say(sen)} sen")
    return " ".join(parts)


def _time(m: re.Match, lang: str) -> str:
    hour, minute, suffix = int(m.group(1)), m.group(2), (m.group(3) or "").lower().replace(".", "")
    if not suffix:
        # "3.30" is a time only beside a time word ("pukul 3.30", "3.30 petang"); else a decimal.
        before, after = m.string[: m.start()].lower().split()[-1:], m.string[m.end():].lower().split()[:1]
        if minute is None or not (before in (["pukul"], ["at"]) or after and after[0].strip(",.!?") in TIME_WORDS):
            return m.group(0)
    if hour > 23 or (minute is not None and int(minute) > 59):
        return m.group(0)
    say = ms_number if lang == "ms" else en_number
    words = say(hour)
    if minute and int(minute):
        words += f" {say(int(minute))}" if lang == "ms" or int(minute) >= 10 else f" oh {say(int(minute))}"
    if suffix:
        words += " " + ({"am": "pagi", "pm": "petang"}[suffix] if lang == "ms" else " ".join(suffix))
    return words


def _spell_address(text: str, lang: str) -> str:
    dot = "titik" if lang == "ms" else "dot"
    text = re.sub(r"^https?://", "", text, flags=re.IGNORECASE).rstrip("/.,")
    text = text.replace("@", " at ").replace(".", f" {dot} ").replace("/", " slash ")
    return " ".join(text.split())


def _digits(text: str, lang: str) -> str:
    """Each digit said on its own; "+" as "plus"; groups kept apart by a space."""
    words = ["plus" if ch == "+" else _DIGIT_WORDS[lang][int(ch)] for ch in text if ch.isdigit() or ch == "+"]
    return " ".join(words)


def clean_unicode(text: str) -> str:
    """NFC, control characters (tabs, stray bytes' replacements aside) as spaces, single spaces."""
    if not (text.isascii() and text.isprintable()):  # the common case needs neither pass
        text = unicodedata.normalize("NFC", text)
        text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return " ".join(text.split())


def normalize(text: str, lang: str = "ms") -> str:
    """The spoken form of `text` in matrix language `lang` ("ms" or "en")."""
    lang = "ms" if lang == "ms" else "en"
    text = expand_abbreviations(_EMOJI.sub(" ", clean_unicode(text)), lang)
    text = " ".join(_short_form(token) for token in text.split())
    text = _URL.sub(lambda m: _spell_address(m.group(0), lang), text)
    text = _EMAIL.sub(lambda m: _spell_address(m.group(0), lang), text)
    text = _DATE.sub(lambda m: _date(m, lang), text)
    text = _PHONE.sub(lambda m: _digits(m.group(0), lang), text)
    text = _LEADING_ZERO.sub(lambda m: _digits(m.group(0), lang), text)
    text = _HB.sub(lambda m: f"{ms_number(int(m.group(1)))} haribulan", text)
    text = _YEAR_AFTER_MONTH.sub(lambda m: f"{m.group(1)} {year(int(m.group(2)), lang)}", text)
    text = _MONEY.sub(lambda m: _money(m, lang), text)
    text = _PERCENT.sub(lambda m: f"{number(m.group(1), lang)} {'peratus' if lang == 'ms' else 'percent'}", text)
    text = _MS_ORDINAL.sub(lambda m: ordinal(int(m.group(1)), "ms"), text)
    text = _EN_ORDINAL.sub(lambda m: ordinal(int(m.group(1)), "en"), text)
    text = _TIME.sub(lambda m: _time(m, lang), text)
    text = _REDUP.sub(lambda m: f"{m.group(1)}-{m.group(1)}", text)
    text = _DOTTED.sub(lambda m: f" {'titik' if lang == 'ms' else 'dot'} ".join(
        number(part, lang) for part in m.group(0).split(".")), text)  # versions, addresses: 1.2.3
    return _NUMBER.sub(lambda m: number(m.group(0), lang), text)


@functools.lru_cache(maxsize=65536)
def _short_form(token: str) -> str:
    """A chat short form (whole word, edge punctuation kept) spelled out: "yg," -> "yang,"."""
    core = token.strip(".,!?;:\"'()")
    if not core:
        return token
    if core.endswith("2") and len(core) > 2 and core[:-1].isalpha() and (base := malay_form(core[:-1])):
        return token.replace(core, f"{base}-{base}")  # hbs2: habis-habis
    expanded = malay_form(core) or english_form(core)
    return token.replace(core, expanded) if expanded and expanded != core.lower() else token
