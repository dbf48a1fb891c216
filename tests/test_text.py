"""The first text frontend: word tags, particles in context, switch points, phase."""

from __future__ import annotations

import json
import subprocess

import pytest

from preprocess.text import analyze, with_tags
from tests.conftest import PYTHON


def tags(text):
    return [(w.text, w.lang) for w in analyze(text).words]


@pytest.mark.parametrize(("text", "phase"), [
    ("Selamat pagi, apa khabar?", 1),
    ("The weather is very hot today.", 1),
    ("Saya nak go to the kedai.", 2),
    ("Cannot lah, I busy leh.", 3),
    ("", 1),
])
def test_phase_follows_the_contract(text, phase):
    assert analyze(text).phase == phase


def test_words_drop_edge_punctuation_and_punctuation_only_tokens():
    result = analyze("Okay lah , I will go!")
    assert [w.text for w in result.words] == ["Okay", "lah", "I", "will", "go"]


def test_particles_map_spelling_variants_to_canonical_names():
    words = analyze("Okay laa, cannot lorh, you go first wat").words
    assert [(w.text, w.particle) for w in words if w.particle] == [("laa", "lah"), ("lorh", "lor"), ("wat", "what")]


@pytest.mark.parametrize(("text", "word", "is_particle"), [
    ("What you want?", "What", False),
    ("I told you already what", "what", True),
    ("I got one car", "one", False),
    ("He so stingy one", "one", True),
    ("Ah Seng come already ah", "Ah", False),
])
def test_ambiguous_particles_are_decided_by_position(text, word, is_particle):
    found = next(w for w in analyze(text).words if w.text == word)
    assert (found.lang == "particle") is is_particle


def test_switch_points_mark_where_the_language_changes():
    result = analyze("Saya nak go to the kedai")
    assert [w.lang for w in result.words] == ["ms", "ms", "en", "en", "en", "ms"]
    assert result.switches == [2, 5]


def test_pinyin_needs_pinyin_neighbours():
    assert tags("budak ni") == [("budak", "ms"), ("ni", "ms")]
    assert tags("ni hao ma") == [("ni", "zh"), ("hao", "zh"), ("ma", "zh")]


def test_given_tags_override_and_must_match_the_words():
    result = with_tags(analyze("Boleh leh"), ["ms", "particle"], ["none", "leh"])
    assert [(w.lang, w.particle) for w in result.words] == [("ms", None), ("particle", "leh")]
    with pytest.raises(ValueError, match="3 language tags for 2 words"):
        with_tags(analyze("Boleh leh"), ["ms", "ms", "ms"], None)


def test_cli_writes_one_json_line_per_input_line_even_for_bad_bytes():
    data = "Saya nak go lah\n\n\tcafé 😀 你好\n".encode() + b"bad \xff\xfe bytes\n"
    out = subprocess.run([PYTHON, "-m", "preprocess.text", "analyze"], input=data,
                         capture_output=True, check=True)
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 4
    first, empty, mixed, bad = (json.loads(line) for line in lines)
    assert first["phase"] == 3 and empty["words"] == [] and empty["phase"] == 1
    assert any(w["lang"] == "zh" for w in mixed["words"])
    assert "invalid UTF-8" in out.stderr.decode() and bad["words"]


@pytest.mark.parametrize(("text", "spoken"), [
    ("Harga dia RM5.50 je", "Harga dia lima ringgit lima puluh sen je"),
    ("It costs RM5.50 only", "It costs five ringgit fifty sen only"),
    ("Diskaun 50% hari ini", "Diskaun lima puluh peratus hari ini"),
    ("Jumpa pukul 3pm nanti", "Jumpa pukul tiga petang nanti"),
    ("Let's meet at 3.30pm okay", "Let's meet at three thirty p m okay"),
    ("Dia dapat tempat ke-3", "Dia dapat tempat ketiga"),
    ("He came 3rd in the race", "He came third in the race"),
    ("budak2 main bola", "budak-budak main bola"),
    ("sy x tau yg mana", "saya tak tau yang mana"),
    ("Go to www.example.com now", "Go to www dot example dot com now"),
    ("Best gila 😀😀 sia", "Best gila sia"),
    ("I have 1,250 followers", "I have one thousand two hundred fifty followers"),
    ("harga 3.50 sekilo", "harga tiga perpuluhan lima kosong sekilo"),
])
def test_normalisation_speaks_in_the_matrix_language(text, spoken):
    assert analyze(text).normalized == spoken


def test_particles_and_english_words_are_never_rewritten_into_malay():
    text = "Okay lah, I go first what"
    assert analyze(text).normalized == text
    assert analyze("Saya nak go shopping lah").normalized == "Saya nak go shopping lah"


def test_numbers_are_tagged_other_and_short_forms_malay():
    words = {w.text: w.lang for w in analyze("sy bayar RM20 utk 3 org").words}
    assert words == {"sy": "ms", "bayar": "ms", "RM20": "other", "utk": "ms", "3": "other", "org": "ms"}
