"""Montreal Forced Aligner: its corpus layout, lexicon, invocation and TextGrid parsing.

MFA itself cannot run here (it needs Kaldi; the GPU image installs it from conda-forge), so the
pipeline test puts a stand-in `mfa` on PATH that writes TextGrids the way MFA does."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from infra.storage import Store
from preprocess import mfa
from preprocess.pipeline import input_store, run
from preprocess.text import analyze
from tests.conftest import small_corpus

FIXTURE = Path(__file__).parent / "fixtures" / "mfa_words.TextGrid"


def test_textgrid_words_tier_is_parsed_and_matched_to_the_transcript():
    tiers = mfa.parse_textgrid(FIXTURE.read_text())
    assert set(tiers) == {"words", "phones"}
    assert tiers["words"][1] == (0.15, 0.64, "okay")
    times = mfa.word_times(tiers, ["Okay", "lah", "go"])
    assert [(t.start_s, t.end_s) for t in times] == [(0.15, 0.64), (0.64, 1.19), (1.6, 2.46)]
    assert mfa.word_times(tiers, ["okay", "go"]) is None  # a dropped word is not guessed around


def test_the_lexicon_covers_every_word_of_the_corpus_in_its_own_language(tmp_path):
    utterances = [analyze(t).words for t in ("Budak ni nak RM5 lah", "wo mei you qian lah", "I told you already what")]
    lines = mfa.write_lexicon(tmp_path, utterances).read_text().splitlines()
    entries = {}
    for line in lines:
        word, phones = line.split("\t")
        entries.setdefault(word, []).append(phones)
    assert set(entries) == {w.text.lower() for words in utterances for w in words}
    assert entries["budak"] == ["B UW D AA Q"]  # Malay by rule, final k a glottal stop
    assert entries["rm5"] == ["L IY M AH R IY NG G IY T"]  # said in the utterance's language
    assert entries["lah"] == ["L AA"]
    assert entries["ni"] == ["N IY"]  # Malay "ni" and pinyin "ni" sound alike: one entry
    assert set(entries["you"]) >= {"Y UW", "Y OW"}  # English "you" and pinyin "you" both


def test_the_command_trains_on_the_corpus_and_writes_alignments(tmp_path):
    cmd = mfa.command(tmp_path, tmp_path / "lexicon.dict", jobs=4)
    assert cmd[:2] == ["mfa", "train"] and str(tmp_path / "corpus") in cmd
    assert cmd[cmd.index("--output_directory") + 1] == str(tmp_path / "aligned")


STAND_IN = '''#!{python}
# Stand-in for `mfa train CORPUS DICT MODEL --output_directory OUT`: one TextGrid per .lab, words
# spread evenly over the clip (MFA's long TextGrid format), recording the call.
import json, pathlib, sys, soundfile as sf
args = sys.argv[1:]
corpus, lexicon = pathlib.Path(args[-5]), pathlib.Path(args[-4])
out = pathlib.Path(args[args.index("--output_directory") + 1])
pathlib.Path(sys.argv[0] + ".calls").write_text(json.dumps({{"args": args, "lexicon": lexicon.read_text()}}))
for lab in corpus.rglob("*.lab"):
    words = lab.read_text().split()
    dur = sf.info(str(lab.with_suffix(".wav"))).duration
    step = dur / len(words)
    items = "".join(
        f'        intervals [{{i + 1}}]:\\n            xmin = {{i * step}} \\n            xmax = {{(i + 1) * step}} \\n'
        f'            text = "{{w}}" \\n' for i, w in enumerate(words))
    grid = ('File type = "ooTextFile"\\nObject class = "TextGrid"\\n\\nxmin = 0 \\nxmax = {{d}} \\ntiers? <exists> \\n'
            'size = 1 \\nitem []: \\n    item [1]:\\n        class = "IntervalTier" \\n        name = "words" \\n'
            '        xmin = 0 \\n        xmax = {{d}} \\n        intervals: size = {{n}} \\n')
    grid = grid.format(d=dur, n=len(words))
    target = out / lab.parent.name / (lab.stem + ".TextGrid")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(grid + items)
'''


def test_pipeline_uses_mfa_timings_for_rows_without_their_own(tmp_path, make_settings, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "mfa"
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    corpus = small_corpus(tmp_path / "corpus", ["pa_001_01", "pa_005_01", "ms_001_01"])
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    (corpus / "manifest.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "word_timings" or r["id"] == "ms_001_01"}) + "\n"
        for r in rows))
    settings = make_settings(preprocess={"aligner": "mfa", "workers": 1})
    run(settings, input_store(str(corpus), settings), progress=False)

    call = json.loads(Path(str(stand_in) + ".calls").read_text())
    assert call["args"][0] == "train" and "lah\tL AA" in call["lexicon"]
    from trainer.shared_memory import open_dataset

    run_store = Store.for_run(settings)
    aligners = {}
    for key in ("phase1/train", "phase3/train"):
        ds = open_dataset(remote=run_store.uri(f"data/{key}"), local=str(tmp_path / "c" / key), batch_size=1)
        aligners.update({ds[i]["id"]: ds[i]["aligner"] for i in range(len(ds))})
    assert aligners == {"pa_001_01": "mfa", "pa_005_01": "mfa", "ms_001_01": "manifest"}


def test_asking_for_mfa_without_it_is_a_clear_error(tmp_path, make_settings, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = make_settings(preprocess={"aligner": "mfa"})
    corpus = small_corpus(tmp_path / "corpus", ["pa_001_01"])
    with pytest.raises(ValueError, match="needs the `mfa` command"):
        run(settings, input_store(str(corpus), settings), progress=False)
