"""Synthesis for real use: budgets from length, reported cuts, pauses, seeds, voice prompts, batches.

The tiny random model speaks noise and almost never ends on its own, so these tests check the
mechanics (pieces, budgets, reports, files, sample rates, determinism), not the sound.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import PYTHON, REPO, SAMPLE, shard_sample, subprocess_env
from trainer.loss import build_batch
from trainer.pieces import Piece
from trainer.synth import (
    PAUSE_S,
    Synthesizer,
    SynthOptions,
    VoicePrompt,
    prompt_ids,
    speak,
    synthesize_batch,
)

HOP = 1920  # Mimi: samples per frame at 24 kHz
FAST = SynthOptions(max_seconds=0.24, max_chars=24)  # 3 frames a piece: the mechanics, quickly


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, far faster on a busy machine
    yield
    torch.set_num_threads(threads)


def _prompt_row() -> dict:
    return json.loads((SAMPLE / "manifest.jsonl").read_text().splitlines()[0])  # ms_001_01, speaker_01


def test_a_piece_budget_grows_with_its_length_and_a_cap_bounds_it():
    options = SynthOptions()
    short, long = Piece("Okay lah.", "paragraph"), Piece("Saya nak pergi kedai sekejap, " * 4, "sentence")
    assert options.budget_frames(short, 12.5) == math.ceil((9 / 7.0 + 2.0) * 12.5)
    assert options.budget_frames(long, 12.5) > 3 * options.budget_frames(short, 12.5)
    assert SynthOptions(max_seconds=1.0).budget_frames(long, 12.5) == 13


@pytest.mark.parametrize("bad", [{"temperature": -1}, {"top_k": -5}, {"speed": 5.0}, {"max_seconds": 0},
                                 {"max_chars": 5}])
def test_sampling_options_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SynthOptions(**bad)


def test_long_text_is_said_piece_by_piece_joined_with_pauses_and_cut_pieces_are_reported(tiny, caplog):
    csm, tokenizer = tiny
    text = "Selamat pagi semua. Okay lah, jom pergi makan!\nSee you tomorrow, okay?"
    with caplog.at_level(logging.WARNING, logger="trainer.synth"):
        speech = speak(csm, tokenizer, text, 0, FAST)
    assert speech.sample_rate == 24_000
    assert [(p.text, p.boundary) for p in speech.pieces] == [
        ("Selamat pagi semua.", "sentence"), ("Okay lah,", "clause"), ("jom pergi makan!", "paragraph"),
        ("See you tomorrow, okay?", "paragraph")]
    assert all(p.budget_frames == 3 and p.frames == 3 and p.hit_budget for p in speech.pieces)
    pauses = sum(int(PAUSE_S[p.boundary] * 24_000) for p in speech.pieces[:-1])
    assert len(speech.samples) == 4 * 3 * HOP + pauses
    # Every piece that used its whole budget is said so, in the log and in the record.
    assert sum("may be cut short" in r.getMessage() for r in caplog.records) == 4
    record = speech.record()
    assert record["hit_budget"] == 4 and len(record["pieces"]) == 4 and record["pieces"][1]["budget_frames"] == 3


def test_the_same_seed_gives_the_same_speech_and_another_seed_other_speech(tiny):
    csm, tokenizer = tiny
    first = speak(csm, tokenizer, "Okay lah, jom.", 0, FAST)
    again = speak(csm, tokenizer, "Okay lah, jom.", 0, FAST)
    other = speak(csm, tokenizer, "Okay lah, jom.", 0, SynthOptions(max_seconds=0.24, max_chars=24, seed=7))
    assert np.array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, other.samples)


def test_speed_time_stretches_the_result(tiny):
    csm, tokenizer = tiny
    normal = speak(csm, tokenizer, "Okay lah.", 0, FAST)
    faster = speak(csm, tokenizer, "Okay lah.", 0, SynthOptions(max_seconds=0.24, max_chars=24, speed=2.0))
    assert abs(len(faster.samples) - len(normal.samples) / 2) <= 512


def test_a_piece_that_ends_before_its_budget_is_not_reported(tiny, caplog):
    """A model whose heads are all zero says its end-of-audio frame (code 0 everywhere) first."""
    csm, tokenizer = tiny
    ending = copy.deepcopy(csm)
    with torch.no_grad():
        ending.lm_head.weight.zero_()
        ending.depth_decoder.codebooks_head.weight.zero_()
    with caplog.at_level(logging.WARNING, logger="trainer.synth"):
        speech = speak(ending, tokenizer, "Okay lah.", 0, SynthOptions(temperature=0, max_seconds=1.0))
    assert speech.pieces[0].frames < speech.pieces[0].budget_frames and not speech.pieces[0].hit_budget
    assert speech.hit_budget == [] and "may be cut short" not in caplog.text


def test_a_voice_prompt_is_an_earlier_turn_laid_out_as_training_lays_out_context(tiny):
    csm, tokenizer = tiny
    target = shard_sample(1, 5, normalized="Jom pergi makan.")
    context = shard_sample(2, 7, normalized="Selamat pagi, apa khabar?")
    batch = build_batch([target], tokenizer, csm.config, {"s": 1}, contexts=[context])
    ids = prompt_ids(tokenizer, csm.config, 1, target.normalized, context.normalized, prompt_frames=7)
    assert batch.input_ids[0, : len(ids)].tolist() == ids


def test_speaking_with_a_voice_prompt_encodes_the_clip_into_the_context(tiny, make_settings):
    csm, tokenizer = tiny
    row = _prompt_row()
    prompt = VoicePrompt.from_file(SAMPLE / row["audio"], row["text"], make_settings().preprocess)
    assert prompt.text == "Selamat pagi, apa khabar?" and prompt.audio.dtype == np.float32
    plain = speak(csm, tokenizer, "Jom pergi.", 0, FAST)
    prompted = speak(csm, tokenizer, "Jom pergi.", 0, FAST, prompt=prompt)
    assert len(prompted.samples) == len(plain.samples)  # the prompt is context, never part of the output
    assert not np.array_equal(prompted.samples, plain.samples)
    assert prompted.record()["prompt"].endswith("ms_001_01.flac")


def test_a_voice_prompt_that_cannot_be_used_is_refused_with_the_reason(tmp_path, make_settings):
    settings = make_settings()
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.wav.*unreadable_audio"):
        VoicePrompt.from_file(tmp_path / "empty.wav", "Hello.", settings.preprocess)
    with pytest.raises(ValueError, match="no such file"):
        VoicePrompt.from_file(tmp_path / "missing.wav", "Hello.", settings.preprocess)
    with pytest.raises(ValueError, match="transcript is empty"):
        VoicePrompt.from_file(SAMPLE / _prompt_row()["audio"], "  ", settings.preprocess)


def test_phase_four_offers_each_speaker_from_one_base_with_its_own_adapter(published_store, make_settings):
    voice = Synthesizer.from_store(make_settings(store=published_store, run_id="shared"), 4)
    assert sorted(voice.voices) == ["speaker_01", "speaker_02"]
    assert {v.adapter for v in voice.voices.values()} == {"speaker_01", "speaker_02"}
    ids = torch.tensor([prompt_ids(voice.tokenizer, voice.csm.config, 0, "Okay lah.")])

    def logits_after(name: str) -> torch.Tensor:
        voice.speak("Okay lah.", name, FAST)
        assert voice.model.active_adapter == name
        with torch.no_grad():
            return voice.csm(input_ids=ids).logits

    first, second = logits_after("speaker_01"), logits_after("speaker_02")
    assert not torch.allclose(first, second)  # each speaker's own weights
    assert torch.equal(logits_after("speaker_01"), first)
    with pytest.raises(ValueError, match=r"unknown voice 'alloy'.*speaker_01"):
        voice.speak("Okay lah.", "alloy", FAST)


def test_the_synth_command_says_a_paragraph_from_a_file_and_lists_its_pieces(published_store, make_settings,
                                                                           tmp_path):
    settings = make_settings(store=published_store, run_id="shared")
    text = tmp_path / "story.txt"
    text.write_text("Selamat pagi semua. Harga tiket RM12.50 sahaja lah!\nSee you at 3.30 pm, okay?\n")
    out = tmp_path / "story.flac"
    result = subprocess.run([PYTHON, "-m", "trainer", "synth", "--phase", "3", "--text-file", str(text), "--out",
                             str(out), "--max-seconds", "0.24", "--max-chars", "40", "--seed", "5"],
                            env=subprocess_env(settings, OMP_NUM_THREADS="1"), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    audio, rate = sf.read(out)
    assert rate == 24_000 and len(audio) > 3 * 3 * HOP
    assert "4 pieces" in result.stdout and "dua belas ringgit lima puluh sen" in result.stdout
    assert result.stderr.count("may be cut short") == 4 and result.stdout.count("<- used its whole budget") == 4


def test_batch_synthesis_writes_one_file_per_row_and_a_manifest_and_resumes(published_store, make_settings,
                                                                          tmp_path):
    settings = make_settings(store=published_store, run_id="shared")
    row = _prompt_row()
    shutil.copy(SAMPLE / row["audio"], tmp_path / "ref.flac")
    lines = [
        {"id": "greeting", "text": "Okay lah, jumpa esok."},
        {"id": "emoji", "text": "😀 🎉"},
        {"id": "greeting", "text": "A second row with the same id."},
        {"text": "Saya pergi dulu.", "speaker": "speaker_02"},
        {"id": "cloned", "text": "Jom makan.", "prompt_audio": "ref.flac", "prompt_text": row["text"]},
        {"id": "../escape", "text": "Not a file name."},
        {"id": "typo", "txt": "A field nobody reads."},
    ]
    batch = tmp_path / "lines.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")
    out = tmp_path / "speech"
    result = subprocess.run([PYTHON, "-m", "trainer", "synth", "--phase", "3", "--batch", str(batch), "--out", str(out),
                             "--format", "flac", "--max-seconds", "0.24", "--no-progress"],
                            env=subprocess_env(settings, OMP_NUM_THREADS="1"), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1, result.stderr[-3000:]  # some rows failed; the others were written
    assert "3 written, 0 already there, 5 failed, 3 with a piece that may be cut short" in result.stdout
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(e["id"], e["status"]) for e in entries] == [
        ("greeting", "ok"), ("emoji", "error"), ("greeting", "error"), ("row000004", "ok"), ("cloned", "ok"),
        ("../escape", "error"), ("typo", "error"), ("row000008", "error")]
    errors = {i: e["error"] for i, e in enumerate(entries) if e["status"] == "error"}
    assert "nothing to say" in errors[1] and "duplicate id" in errors[2] and "cannot name a file" in errors[5]
    assert "unknown fields ['txt']" in errors[6] and "not JSON" in errors[7]
    assert sorted(p.name for p in out.iterdir()) == ["cloned.flac", "greeting.flac", "manifest.jsonl",
                                                     "row000004.flac"]
    for entry in (e for e in entries if e["status"] == "ok"):
        audio, rate = sf.read(out / entry["file"])
        assert rate == entry["sample_rate"] == 24_000 and len(audio) / rate == pytest.approx(entry["seconds"])
        assert entry["hit_budget"] == len(entry["pieces"]) and entry["pieces"][0]["budget_frames"] == 3
    assert entries[3]["voice"] == "speaker_02" and entries[4]["prompt"].endswith("ref.flac")

    # Run again: the rows already written are kept as they are, only the failed ones are tried.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.flac")}
    report = synthesize_batch(settings, 3, batch, out, options=SynthOptions(max_seconds=0.24), fmt="flac",
                              progress=False)
    assert (report.written, report.skipped, report.failed) == (0, 3, 5)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.flac")} == before
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 8
