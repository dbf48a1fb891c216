"""The first text frontend: word tags, particles in context, switch points, phase."""

from __future__ import annotations

import json
import re
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


@pytest.mark.parametrize(("text", "spoken"), [
    ("Dr. Ahmad akan datang esok.", "Doktor Ahmad akan datang esok."),
    ("Prof Lim said okay lah.", "Professor Lim said okay lah."),
    ("Rumah dia di Jln. Ampang, Tmn Melati.", "Rumah dia di Jalan Ampang, Taman Melati."),
    ("Bilik No. 5 di tingkat 2.", "Bilik nombor lima di tingkat dua."),
    ("Kerja di Syarikat Maju Sdn. Bhd.", "Kerja di Syarikat Maju Sendirian Berhad."),
    ("Pn. Siti dan En. Abu dah sampai", "Puan Siti dan Encik Abu dah sampai"),
    # Only where the next word shows what they are: chat "dr" is "dari", "no" a word.
    ("dr mana ni", "dari mana ni"),
    ("No, I cannot lah.", "No, I cannot lah."),
    ("Tinggal di jln tu je", "Tinggal di jalan tu je"),
])
def test_abbreviations_are_read_in_full_where_the_next_word_shows_what_they_are(text, spoken):
    assert analyze(text).normalized == spoken


@pytest.mark.parametrize(("text", "spoken"), [
    ("Call 012-345 6789 okay", "Call zero one two three four five six seven eight nine okay"),
    ("Telefon +60 3-1234 5678 ya", "Telefon plus enam kosong tiga satu dua tiga empat lima enam tujuh lapan ya"),
    ("Ejen 007 dah sampai", "Ejen kosong kosong tujuh dah sampai"),
    ("Harga RM0.50 sahaja", "Harga lima puluh sen sahaja"),
])
def test_telephone_numbers_and_leading_zeros_are_read_digit_by_digit(text, spoken):
    assert analyze(text).normalized == spoken


def test_particles_and_english_words_are_never_rewritten_into_malay():
    text = "Okay lah, I go first what"
    assert analyze(text).normalized == text
    assert analyze("Saya nak go shopping lah").normalized == "Saya nak go shopping lah"


def test_numbers_are_tagged_other_and_short_forms_malay():
    words = {w.text: w.lang for w in analyze("sy bayar RM20 utk 3 org").words}
    assert words == {"sy": "ms", "bayar": "ms", "RM20": "other", "utk": "ms", "3": "other", "org": "ms"}


@pytest.mark.parametrize(("text", "expected"), [
    # Words in two languages take the language their neighbours make likely.
    ("budak ni nakal", ["ms", "ms", "ms"]),
    ("ni hao ma", ["zh", "zh", "zh"]),
    ("wo men mei you qian", ["zh", "zh", "zh", "zh", "zh"]),
    ("Do you have time", ["en", "en", "en", "en"]),
    ("Air sungai tu keruh", ["ms", "ms", "ms", "ms"]),
    ("The air is fresh", ["en", "en", "en", "en"]),
    # A switch at a clause boundary: pinyin, then English.
    ("Xie xie ni, you very helpful", ["zh", "zh", "zh", "en", "en", "en"]),
    # English words inside a Malay clause, spelled as English.
    ("Kita kena settle project ni cepat", ["ms", "ms", "en", "en", "ms", "ms"]),
    # Words no frequency table has: by spelling, by pinyin syllables, by reduplication.
    ("Mereka dipertanggungjawabkan semula", ["ms", "ms", "ms"]),
    ("xiexie ni", ["zh", "zh"]),
    ("kedai-kedai dah tutup", ["ms", "ms", "ms"]),
])
def test_language_follows_context_and_spelling(text, expected):
    assert [w.lang for w in analyze(text).words] == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Ah Seng already went back ah", ["other", "other", "en", "en", "en", "particle"]),
    ("Eh, dah pukul berapa ni?", ["other", "ms", "ms", "ms", "ms"]),
    ("Kami pergi ke Langkawi dengan Mei Ling", ["ms", "ms", "ms", "other", "ms", "other", "other"]),
    ("Mesin ATM tu rosak", ["ms", "other", "ms", "ms"]),
    ("Jumpa hari Jumaat, Encik Rahman", ["ms", "ms", "ms", "ms", "other"]),
    ("I told you already, cannot wo", ["en", "en", "en", "en", "en", "particle"]),
    ("wo bu zhi dao", ["zh", "zh", "zh", "zh"]),
    ("The bus gone liao", ["en", "en", "en", "particle"]),
    ("Aku tak leh datang esok", ["ms", "ms", "ms", "ms", "ms"]),
    ("You try first leh", ["en", "en", "en", "particle"]),
    ("Why you so late one?", ["en", "en", "en", "en", "particle"]),
    ("I want that one.", ["en", "en", "en", "en"]),
    ("Can la, no problem one.", ["en", "particle", "en", "en", "particle"]),
    ("You want to eat what?", ["en", "en", "en", "en", "en"]),
    ("I already paid what, why still ask?", ["en", "en", "en", "particle", "en", "en", "en"]),
])
def test_names_interjections_and_particles_in_context(text, expected):
    assert [w.lang for w in analyze(text).words] == expected


def test_every_input_gives_words_by_the_contract_and_never_crashes():
    import random

    rng = random.Random(7)
    alphabet = ("abcdefghijklmnopqrstuvwxyz ABC  ,.!?'-@/:%$2590\t\u00e9\u00fc\u01ce\u4f60\u597d\U0001F600"
                "\u200d\ufe0f\u0645\u0930\ufffd\x00\x1b")
    lines = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(400)]
    lines += ["lah " * 20000, "a" * 100000, "RM" + "9" * 400, "-" * 50, "2" * 60, "ke-" * 30, "x2 " * 40]
    for line in lines:
        result = analyze(line)
        for word in result.words:  # whole tokens with edge punctuation stripped
            assert re.match(r"\w", word.text) and re.search(r"\w$", word.text) and not re.search(r"\s", word.text)
            assert word.text in line
        assert all(w.lang in ("ms", "en", "zh", "particle", "other") for w in result.words)
        assert result.phase in (1, 2, 3) and isinstance(result.normalized, str)


@pytest.mark.parametrize(("text", "spoken"), [
    ("Jumpa 25/12/2026 nanti", "Jumpa dua puluh lima Disember dua ribu dua puluh enam nanti"),
    ("The exam is on 3/1/2025", "The exam is on third of January twenty twenty five"),
    ("Dia lahir 12hb Mei 1990", "Dia lahir dua belas haribulan Mei seribu sembilan ratus sembilan puluh"),
    ("She was born in May 1995", "She was born in May nineteen ninety five"),
    ("xpe la, aku tgh drive", "takpe la, aku tengah drive"),
    ("link: https://a.com/x okay", "link: a dot com slash x okay"),
    ("version 1.2.3 dah keluar", "version satu titik dua titik tiga dah keluar"),
])
def test_dates_years_short_forms_and_addresses_are_spoken(text, spoken):
    assert analyze(text).normalized == spoken


def test_the_shipped_pinyin_table_is_what_the_packages_give():
    from preprocess.text.lexicon import _read_pinyin_table, build_pinyin_table

    built = build_pinyin_table()
    shipped = _read_pinyin_table()
    assert built.keys() == shipped.keys() and len(shipped) > 400
    assert all(abs(built[s] - shipped[s]) <= 1e-4 * built[s] for s in shipped)


@pytest.mark.parametrize(("text", "spoken"), [
    # Vowel-dropped Malay, matched by consonant skeleton against the Malay word list (none listed).
    ("dia x dtg smlm sbb demam", "dia tak datang semalam sebab demam"),
    ("korg dah smpai ke blm", "korang dah sampai ke belum"),
    ("mmg ssh nk cri parking", "memang susah nak cari parking"),
    ("brape harga dia", "berapa harga dia"),  # a final -a written e
    ("kerja x hbs2", "kerja tak habis-habis"),
    # English chat forms in English; a place code and an ambiguous skeleton stay as typed.
    ("u r so funny", "you are so funny"),
    ("tade duit pun", "tade duit pun"),  # said as written: no "tiada"
    ("jumpa kat ss2 nnti", "jumpa kat ss2 nanti"),
    ("muka dia mrh", "muka dia mrh"),  # marah or merah: left alone
])
def test_chat_short_forms_are_spelled_out_in_the_normalized_text(text, spoken):
    assert analyze(text).normalized == spoken


@pytest.mark.parametrize(("text", "expected"), [
    ("sy x dtg smlm", ["ms"] * 4),
    ("cpt sikit nnt lmbt", ["ms"] * 4),  # ambiguous between two Malay words is still Malay
    ("r u coming or not", ["en"] * 5),  # one-letter chat English
    ("kitorang otw ni", ["ms", "en", "ms"]),
    ("ape hal korang ni", ["ms"] * 4),  # colloquial spellings said as written
    ("tade duit", ["ms", "ms"]),
])
def test_chat_forms_take_the_language_they_stand_for(text, expected):
    assert [w.lang for w in analyze(text).words] == expected


@pytest.mark.parametrize(("text", "expected"), [
    # Names and kin terms: no particle.
    ("semalam kak lah datang rumah", ["ms", "ms", "other", "ms", "ms"]),
    ("tolong kak la", ["ms", "ms", "particle"]),
    ("semalam ah meng datang", ["ms", "other", "other", "ms"]),
    ("tanya ah ma dulu", ["ms", "zh", "zh", "ms"]),
    ("aunty mah jual kuih", ["en", "other", "ms", "ms"]),
    ("xie xie ni de bang zhu", ["zh"] * 6),  # "bang" + a pinyin syllable: Mandarin, not abang Zhu
    # A reduplicated Malay word, and dish names, are no particles.
    ("usaha dia sia sia je", ["ms"] * 5),
    ("jom makan lor mee", ["ms", "ms", "zh", "zh"]),
    ("aku order wat tan hor satu", ["ms", "en", "zh", "zh", "zh", "ms"]),
    # Particles after pinyin, but not the end of a Mandarin word.
    ("chi bao liao tak larat dah", ["zh", "zh", "particle", "ms", "ms", "ms"]),
    ("aiyo so wu liao one", ["other", "en", "zh", "zh", "particle"]),
    ("zhe ge hen gui leh", ["zh", "zh", "zh", "zh", "particle"]),
    ("so what lah", ["en", "en", "particle"]),
    ("why you so like that one", ["en", "en", "en", "en", "en", "particle"]),
])
def test_particle_spellings_are_decided_by_what_is_around_them(text, expected):
    assert [w.lang for w in analyze(text).words] == expected


@pytest.mark.parametrize(("text", "expected"), [
    # Shared words: a collocation decides, else the clause.
    ("air mata dia jatuh", ["ms", "ms", "ms", "ms"]),
    ("hot air balloon", ["en", "en", "en"]),
    ("budak tu main bola", ["ms", "ms", "ms", "ms"]),
    ("the main problem is money", ["en"] * 5),
    ("traffic jam teruk gila", ["en", "en", "ms", "ms"]),
    ("jam berapa sekarang", ["ms", "ms", "ms"]),
    # Chinese-variety loans inside Malay are zh and no pinyin context for their neighbours.
    ("ni ang pau utk kau", ["ms", "zh", "zh", "ms", "ms"]),
    ("towkay kedai tu kaya", ["zh", "ms", "ms", "ms"]),
    # Pinyin needs evidence: a word only pinyin can be, or a Mandarin word of two syllables.
    ("you ni kan", ["en", "ms", "ms"]),
    ("mei you lah don't worry", ["zh", "zh", "particle", "en", "en"]),
])
def test_shared_words_loans_and_pinyin_follow_their_context(text, expected):
    assert [w.lang for w in analyze(text).words] == expected


def test_the_chinese_loan_list_documents_variety_and_source_of_every_row():
    from importlib import resources

    text = resources.files("preprocess.text").joinpath("data/zh_loans.tsv").read_text(encoding="utf-8")
    legend = {line.split()[1] for line in text.splitlines() if line.startswith("#   ")}
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    assert len(rows) >= 60
    for spellings, variety, hanzi, gloss, sources in rows:
        assert spellings and gloss and hanzi
        assert set(variety.split("/")) <= {"hok", "can", "teo", "hak", "man"}, spellings
        assert {s.strip() for s in sources.split(",")} <= legend, spellings


def test_the_shipped_pinyin_word_list_is_what_the_packages_give():
    from preprocess.text.lexicon import build_pinyin_words, pinyin_words

    assert set(build_pinyin_words()) == pinyin_words() and {"mei you", "bu yong"} <= pinyin_words()
