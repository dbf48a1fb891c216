"""Long text into speakable pieces: where it may be cut, where never, and that nothing is lost."""

from __future__ import annotations

import re

import pytest

from preprocess.text import analyze
from tests.conftest import REPO
from trainer.pieces import NUMBER_WORDS, raw_sentences, split_text, spoken_length


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text.lower())


def test_sentences_are_cut_at_terminators_but_not_inside_numbers_titles_or_abbreviations():
    text = ("Harga dia RM1,250.50 sahaja, tapi Dr. Ahmad kata e.g. boleh nego lah! Jumpa pukul 3.30 petang? "
            "Rumah No. 5 Jln. Ampang. Versi 2.1.3 dah keluar. ok lah. I said no. jom pergi")
    assert raw_sentences(text) == [
        "Harga dia RM1,250.50 sahaja, tapi Dr. Ahmad kata e.g. boleh nego lah!",
        "Jumpa pukul 3.30 petang?",
        "Rumah No. 5 Jln. Ampang.",
        "Versi 2.1.3 dah keluar.",
        "ok lah.",
        "I said no.",
        "jom pergi",
    ]


def test_each_sentence_is_normalised_in_its_own_language():
    pieces = split_text("Saya ada 5 ekor kucing. I have 5 cats at home.", max_chars=30)
    assert [p.text for p in pieces] == ["Saya ada lima ekor kucing.", "I have five cats at home."]


def test_a_number_ending_a_sentence_is_cut_after_it_is_spoken():
    pieces = split_text("Harganya RM5. The total is 10 dollars.", max_chars=25)
    assert pieces[0].text.endswith("ringgit.") and "dollars" in pieces[-1].text


def test_short_sentences_share_a_piece_and_paragraphs_never_do():
    pieces = split_text("Okay lah. Jom pergi.\nSee you tomorrow.", max_chars=160)
    assert [(p.text, p.boundary) for p in pieces] == [("Okay lah. Jom pergi.", "paragraph"),
                                                      ("See you tomorrow.", "paragraph")]


def test_a_long_sentence_is_cut_at_clauses_then_between_words():
    sentence = ("Paragraf ini sangat panjang, dengan banyak klausa yang berbeza, dan ia perlu dipecahkan kerana ia "
                "melebihi had aksara yang dibenarkan untuk satu bahagian walaupun tiada noktah di tengahnya")
    pieces = split_text(sentence, max_chars=60)
    assert [p.boundary for p in pieces] == ["clause", "clause", "word", "word", "paragraph"]
    assert pieces[0].text == "Paragraf ini sangat panjang," and pieces[1].text.endswith("berbeza,")
    assert all(30 <= p.length <= 60 for p in pieces[2:])  # the word-cut part in pieces of even length
    assert _words(" ".join(p.text for p in pieces)) == _words(analyze(sentence).normalized)


def test_the_spoken_form_of_a_number_is_never_split_between_pieces():
    text = "Jumlahnya 1234567 ringgit dan 8901234 sen untuk semua orang yang datang ke sini hari ini pada waktu pagi"
    pieces = split_text(text, max_chars=30)
    for before, after in zip(pieces, pieces[1:], strict=False):
        last, first = _words(before.text)[-1], _words(after.text)[0]
        assert not (last in NUMBER_WORDS and first in NUMBER_WORDS), (before.text, after.text)
    assert any("satu juta dua ratus tiga puluh empat ribu lima ratus enam puluh tujuh ringgit" in p.text
               for p in pieces)


def test_hanzi_count_as_syllables_and_cjk_marks_end_sentences():
    pieces = split_text("我们走吧。好不好？", max_chars=20)
    assert [p.text for p in pieces] == ["我们走吧。", "好不好？"]
    assert spoken_length("好不好") == 12


@pytest.mark.parametrize("text", ["", "   \n\n  ", "😀 🎉", "... !!! ???"])
def test_text_with_nothing_to_say_gives_no_pieces(text):
    assert split_text(text) == []


def test_a_piece_size_too_small_for_a_clause_is_refused():
    with pytest.raises(ValueError, match="max_chars"):
        split_text("Okay lah.", max_chars=5)


def test_on_every_labelled_utterance_nothing_is_lost_and_pieces_respect_the_limit():
    """The dev and check sets of the text frontend, read as one long text: every word of each
    sentence's spoken form is said exactly once, in order, and no piece is longer than the limit
    unless it is one unbreakable run of number words."""
    lines = []
    for name in ("dev.tsv", "check.tsv"):
        for line in (REPO / "data" / "text" / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                lines.append(line.split("\t")[0])
    paragraphs = [" ".join(lines[i:i + 7]) for i in range(0, len(lines), 7)]
    text = "\n".join(paragraphs)
    pieces = split_text(text, max_chars=80)
    expected = []
    for paragraph in paragraphs:
        for raw in raw_sentences(paragraph):
            expected += _words(analyze(raw).normalized)
    assert _words(" ".join(p.text for p in pieces)) == expected
    for piece in pieces:
        if piece.length > 80:
            words = _words(piece.text)
            assert any(w in NUMBER_WORDS for w in words), piece.text
    assert sum(p.boundary == "paragraph" for p in pieces) == len(paragraphs)
