"""Is a particle spelling a particle where it stands? The context rules.

Every spelling in the particle inventory is a particle unless its context makes it something else:

- part of a name: after a kin term or title and with the clause going on ("kak lah datang" is
  Kak Lah, "tolong kak la" a particle), or a place ("jalan lor"); "ah" before a name ("ah meng
  datang": a word no table knows well follows it);
- half of a Malay reduplication ("usaha dia sia sia je": sia-sia, in vain);
- a Chinese loan it begins or ends ("lor mee", "wat tan hor") is matched before these rules run.

The spellings that are also ordinary words ("what", "one", "ah", pinyin "wo"/"liao") are particles
only at the end of a clause, and not after a word that takes them as an object or noun ("so stingy
one" vs "that one", "I told you already what" vs "you want what?"). A clause-final "liao" after
pinyin is the particle ("chi bao liao") unless it ends a Mandarin word ("wu liao", bored); "wo"
after pinyin is Mandarin ("ni shuo wo").
"""

from __future__ import annotations

import functools

from preprocess.text.lexicon import (
    AMBIGUOUS_PARTICLES,
    ARTICLES,
    DETERMINERS,
    INTERJECTIONS,
    KIN_TITLES,
    OBJECT_VERBS,
    PARTICLE_VARIANTS,
    PLACE_HEADS,
    frequencies,
)
from preprocess.text.tokens import Token

_MANDARIN_BEFORE_LIAO = frozenset({"wu", "de", "bu"})  # 無聊 bored, 不得了 terrific, 受不了
# Particles whose spelling doubled is a Malay word: sia-sia (in vain). "lah lah" stays two particles.
_REDUPLICATED_WORDS = frozenset({"sia"})


def particle(tokens: list[Token], i: int) -> str | None:
    """The canonical particle that tokens[i] is, or None."""
    token = tokens[i]
    low = token.text.lower()
    canonical = PARTICLE_VARIANTS.get(low)
    if canonical is None:
        return None
    previous = tokens[i - 1].text.lower() if i > 0 else ""
    following = tokens[i + 1].text.lower() if i + 1 < len(tokens) else ""
    if name_after_title(tokens, i):
        return None  # Jalan Lor; Kak Lah, aunty Mah
    if canonical in _REDUPLICATED_WORDS and low in (previous, following):
        return None  # sia sia: a reduplicated Malay word
    if low not in AMBIGUOUS_PARTICLES:
        return canonical
    if i == 0:
        return None
    if canonical == "liao":
        # Chat leaves out the comma: a liao that no pinyin follows ends its clause ("chi bao liao tak
        # larat"), unless it ends a Mandarin word ("wu liao") or starts one ("liao tian").
        return None if previous in _MANDARIN_BEFORE_LIAO or pinyin_only(following) else canonical
    at_end = token.clause_end or following in PARTICLE_VARIANTS
    if canonical == "ah":
        # Mid-sentence topic marker too ("this one ah, ..."), unless it starts a name.
        return None if starts_name(tokens, i) else canonical
    if not at_end:
        return None
    if canonical == "what":
        # "so what", "or what" are English idioms; after a verb "what" is its object.
        return None if token.question or previous in OBJECT_VERBS or previous in ("so", "or") else canonical
    if canonical == "one":
        # "that one", "the red one" (an article two words back), but "no problem one" is a particle.
        two_back = tokens[i - 2].text.lower() if i >= 2 else ""
        if previous in ("that", "this") and two_back == "like" and not _liked_by_someone(tokens, i - 2):
            return canonical  # "why like that one": like that, then the particle
        return None if previous in OBJECT_VERBS or previous in DETERMINERS or two_back in ARTICLES else canonical
    return None if pinyin_only(previous) else canonical  # wo: "ni shuo wo" is Mandarin


def name_after_title(tokens: list[Token], i: int) -> bool:
    """Is tokens[i] a name after a kin term or title ("kak lah datang", "uncle lim"), or a place name
    after its head ("jalan lor")? A name is capitalised or rare in both tables, or a particle
    spelling the clause goes on after."""
    if i == 0:
        return False
    previous, low = tokens[i - 1].text.lower(), tokens[i].text.lower()
    if previous in PLACE_HEADS:
        return low in PARTICLE_VARIANTS or tokens[i].text[:1].isupper()
    if previous not in KIN_TITLES or tokens[i - 1].clause_end or not tokens[i].text.isalpha():
        return False
    if previous in frequencies().pinyin and pinyin_only(low):
        return False  # "ni de bang zhu": Mandarin, not abang Zhu
    if low in PARTICLE_VARIANTS:
        return not tokens[i].clause_end and i + 1 < len(tokens)
    return tokens[i].text[:1].isupper() or _rare(low)


def _rare(low: str) -> bool:
    """Rare as a word in both tables: likely a name ("meng", "lim"; not "boy", "very")."""
    freq = frequencies()
    return max(freq.ms.get(low, 0.0), freq.en.get(low, 0.0)) < 5e-5


def _liked_by_someone(tokens: list[Token], like: int) -> bool:
    """Is tokens[like] ("like") a verb with a subject ("I like that one"), not "so like that"?"""
    subject = tokens[like - 1].text.lower() if like > 0 else ""
    return subject in ("i", "you", "we", "they", "he", "she", "u", "dont", "don't", "also", "really", "would")


def starts_name(tokens: list[Token], i: int) -> bool:
    """Is tokens[i] the name prefix "Ah" ("Ah Seng", "ah meng datang")? A name follows it in the same
    clause: capitalised, or a word no table knows well, and no particle or interjection."""
    token = tokens[i]
    if token.text.lower() not in ("ah", "ahh") or token.clause_end or i + 1 >= len(tokens):
        return False
    name = tokens[i + 1].text
    low = name.lower()
    if low in PARTICLE_VARIANTS or low in INTERJECTIONS or not name.isalpha():
        return False
    return name[0].isupper() or _rare(low)


@functools.lru_cache(maxsize=65536)
def pinyin_only(low: str) -> bool:
    freq = frequencies()
    return low in freq.pinyin and max(freq.ms.get(low, 0.0), freq.en.get(low, 0.0)) < 1e-5
