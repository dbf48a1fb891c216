"""What the text frontend knows about words: frequency tables and the closed word classes.

Open classes come from well-kept packages, loaded once per process and never from the network:
Malay, Indonesian and English word frequencies from `wordfreq`, the Mandarin syllable inventory
from `pypinyin` with each syllable's frequency in Chinese text (wordfreq's Chinese list read
through pypinyin; shipped as `data/pinyin_freq.tsv`, rebuilt by `build_pinyin_table`).
Closed classes (discourse particles, interjections, function words the particle rules look at) are
short hand-kept lists below; Chinese-variety loans are a documented word list (`data/zh_loans.tsv`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources

PARTICLE_VARIANTS: dict[str, str] = {
    **dict.fromkeys(["lah", "la", "laa", "lahh", "lahhh", "laaa", "lahs"], "lah"),
    **dict.fromkeys(["leh", "lehh", "lehhh"], "leh"),
    **dict.fromkeys(["lor", "lorh", "lorr", "lo", "lorrr"], "lor"),
    **dict.fromkeys(["loh", "lohh"], "loh"),
    **dict.fromkeys(["meh", "mehh"], "meh"),
    **dict.fromkeys(["mah", "mahh"], "mah"),
    **dict.fromkeys(["hor", "horr", "horh"], "hor"),
    **dict.fromkeys(["ah", "ahh", "ahhh"], "ah"),
    **dict.fromkeys(["wor", "wo", "woh", "worr"], "wor"),
    **dict.fromkeys(["liao", "liaw", "liou"], "liao"),
    "one": "one",
    **dict.fromkeys(["what", "wat", "wut"], "what"),
    **dict.fromkeys(["sia", "siah", "siaa"], "sia"),
}
PARTICLES = tuple(dict.fromkeys(PARTICLE_VARIANTS.values()))

# Spellings that are also ordinary words (English "what"/"one", pinyin "wo"/"liao", "Ah" in names):
# a particle only where the context rules in `tagger` say so.
AMBIGUOUS_PARTICLES = frozenset({"what", "wat", "one", "ah", "ahh", "wo", "liao"})

# Interjections are tagged `other` (the contract's class for them).
INTERJECTIONS = frozenset("""
eh ehh ehhh wah waa wahh aiyo aiyoh aiyoo aiya aiyah haiya haiyo haiyaa alamak wei weh oi oii oi ish
hmm hmmm hm uh uhh um umm erm omg oh ohh ooh aduh adoi adui aduhai walao walau wahlau aik haha hahaha
hehe lol wow yay ouch oops huh ha haa
""".split())

# Kin terms and titles used before a name: after them a particle spelling that a clause goes on from
# is a name ("kak Lah datang", "aunty Mah jual kuih"), not a particle ("tolong kak la").
KIN_TITLES = frozenset("""
kak akak abang bang adik dik mak pak cik makcik pakcik tok atuk nenek opah wan uncle aunty auntie encik
puan tuan datuk dato mr mrs miss madam ms
""".split())
# Words that head a place name: a particle spelling after them is part of the name ("Jalan Lor").
PLACE_HEADS = frozenset("""
jalan jln lorong lrg taman tmn kampung kampong kg bukit bt sungai sg pulau pulau bandar simpang kuala
""".split())

# Before a clause-final "one"/"what", these make it an ordinary English word ("that one", "you want
# what?"), not a particle ("so stingy one", "I told you already what").
DETERMINERS = frozenset("""
the a an this that these those which each every any some no another other my your his her our their
its whose only just last first next same favourite big small new old red blue black white
""".split())
# Two words before "one", these make it a noun ("the red one", "my old one").
ARTICLES = frozenset("the a an this that these those which my your his her our their each every another".split())
OBJECT_VERBS = frozenset("""
want wants wanted need needs needed have has had got get gets take takes took give gives gave buy buys
bought eat eats ate drink drinks order orders ordered choose chose pick picked see saw like likes make
makes made find found bring brought use used sell sold keep kept do does did doing say says mean means
meant know knew think call called is are was were for about to of with on in at from by
""".split())

# Capitalised words that keep a language tag mid-sentence (not names): titles, days, months.
TITLES = frozenset("encik puan cik tuan datuk dato datin tan sri mr mrs ms miss dr doktor cikgu".split())
CALENDAR = frozenset("""
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december isnin selasa rabu khamis jumaat sabtu ahad januari februari
mac mei jun julai ogos oktober disember
""".split())

_PINYIN_TABLE = "data/pinyin_freq.tsv"
_ZH_LOANS = "data/zh_loans.tsv"
_PINYIN_WORDS = "data/pinyin_words.tsv"
_HANZI_WORD = re.compile(r"^[\u3400-\u9fff]+$")


@dataclass(frozen=True)
class Frequencies:
    """Word frequencies (share of running words) by language."""

    ms: dict[str, float]
    id: dict[str, float]
    en: dict[str, float]
    pinyin: dict[str, float]


@functools.cache
def frequencies() -> Frequencies:
    """wordfreq's Malay, Indonesian and English tables and the shipped pinyin table (~0.3 s)."""
    import wordfreq

    return Frequencies(ms=wordfreq.get_frequency_dict("ms"), id=wordfreq.get_frequency_dict("id"),
                       en=wordfreq.get_frequency_dict("en"), pinyin=pinyin_frequencies())


@functools.cache
def pinyin_frequencies() -> dict[str, float]:
    """The shipped Mandarin syllable table alone (reading pinyin needs no word tables)."""
    return _read_pinyin_table()


@functools.cache
def zh_loans() -> dict[tuple[str, ...], str]:
    """Chinese-variety loans in Latin letters (`data/zh_loans.tsv`, its sources documented there):
    each spelling as a tuple of lower-case words -> its variety."""
    text = resources.files("preprocess.text").joinpath(_ZH_LOANS).read_text(encoding="utf-8")
    loans: dict[tuple[str, ...], str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            spellings, variety = line.split("\t")[:2]
            for spelling in spellings.split("|"):
                loans[tuple(spelling.lower().split())] = variety
    return loans


def _read_pinyin_table() -> dict[str, float]:
    text = resources.files("preprocess.text").joinpath(_PINYIN_TABLE).read_text(encoding="utf-8")
    rows = (line.split("\t") for line in text.splitlines() if line and not line.startswith("#"))
    return {syllable: float(freq) for syllable, freq in rows}


def build_pinyin_table(top: int = 30000) -> dict[str, float]:
    """Every toneless Mandarin syllable pypinyin knows, with its share of syllables in Chinese text
    (the `top` most frequent words of wordfreq's Chinese list, read with pypinyin). Syllables
    unseen there get half the rarest seen share."""
    import wordfreq
    from pypinyin import Style, lazy_pinyin
    from pypinyin.contrib.tone_convert import to_normal
    from pypinyin.pinyin_dict import pinyin_dict

    counts = {to_normal(p): 0.0 for readings in pinyin_dict.values() for p in readings.split(",")}
    words = sorted(wordfreq.get_frequency_dict("zh").items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    for word, freq in words:
        if _HANZI_WORD.match(word):
            for syllable in lazy_pinyin(word, style=Style.NORMAL):
                if syllable in counts:
                    counts[syllable] += freq
    total = sum(counts.values())
    floor = min(v for v in counts.values() if v) / total / 2
    return {s: (v / total if v else floor) for s, v in sorted(counts.items()) if s.isascii() and s.isalpha()}


def write_pinyin_table(path) -> None:
    table = build_pinyin_table()
    lines = ["# Mandarin syllable frequencies: preprocess.text.lexicon.build_pinyin_table (wordfreq zh + pypinyin)"]
    lines += [f"{s}\t{f:.4e}" for s, f in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@functools.cache
def pinyin_words() -> frozenset[str]:
    """Two-syllable Mandarin words in toneless pinyin, "mei you", "bu yong" (`data/pinyin_words.tsv`,
    rebuilt by `build_pinyin_words`)."""
    text = resources.files("preprocess.text").joinpath(_PINYIN_WORDS).read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def build_pinyin_words(top: int = 20000) -> list[str]:
    """The two-Hanzi words among the `top` most frequent of wordfreq's Chinese list, in toneless
    pinyin ("没有" -> "mei you"), sorted."""
    import wordfreq
    from pypinyin import Style, lazy_pinyin

    words = sorted(wordfreq.get_frequency_dict("zh").items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return sorted({" ".join(lazy_pinyin(w, style=Style.NORMAL)) for w, _ in words
                   if len(w) == 2 and _HANZI_WORD.match(w)})


def write_pinyin_words(path) -> None:
    lines = ["# Two-syllable Mandarin words in toneless pinyin: preprocess.text.lexicon.build_pinyin_words",
             "# (the 20,000 most frequent words of wordfreq's Chinese list, read with pypinyin)"]
    path.write_text("\n".join(lines + build_pinyin_words()) + "\n", encoding="utf-8")


def split_pinyin(word: str) -> list[str] | None:
    """`word` as a run of Mandarin syllables ("xiexie" -> ["xie", "xie"], "nǐhǎo" -> ["ni", "hao"]),
    fewest syllables first; None if it cannot be read as pinyin. Tones (marks or digits) are dropped."""
    return _split(toneless(word))


def toneless(word: str) -> str:
    """Pinyin without tone marks or tone digits, ü as v: "Nǚ3" -> "nv"."""
    low = word.lower().replace("'", "")
    if not low.isascii():
        low = low.replace("ü", "v").replace("ǖ", "v").replace("ǘ", "v").replace("ǚ", "v").replace("ǜ", "v")
        low = "".join(ch for ch in unicodedata.normalize("NFD", low) if not unicodedata.combining(ch))
    return low.rstrip("12345") if low[-1:].isdigit() else low


@functools.lru_cache(maxsize=65536)
def _split(plain: str) -> list[str] | None:
    if not plain:
        return []
    syllables = pinyin_frequencies()
    best = None
    for end in range(min(6, len(plain)), 0, -1):
        head = plain[:end]
        if head in syllables:
            rest = _split(plain[end:])
            if rest is not None and (best is None or len(rest) + 1 < len(best)):
                best = [head, *rest]
    return best
