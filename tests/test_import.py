"""Corpora in other formats become our manifest: one small corpus per format, made here in that
format (the `datasets` library writes real parquet and arrow; Common Voice, LJSpeech, Kaldi and a
plain folder by hand from their layouts), each with bad rows that must be quarantined with their
reason while every other row is kept."""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from infra.storage import Store
from preprocess.__main__ import main
from preprocess.pipeline import input_store, run
from tests.conftest import BUCKET, PYTHON, REPO, SAMPLE

ROWS = {r["id"]: r for r in map(json.loads, (SAMPLE / "manifest.jsonl").read_text().splitlines())}
GOOD = ["ms_001_01", "ms_002_02", "cs_009_01", "pa_014_02"]  # two speakers, three categories


def speech(utt: str) -> tuple[np.ndarray, int]:
    """A sample-corpus clip (real speech from espeak-ng) and its rate."""
    return sf.read(SAMPLE / ROWS[utt]["audio"], dtype="float32")


def speech_at(utt: str, rate: int) -> np.ndarray:
    import soxr

    audio, own = speech(utt)
    return soxr.resample(audio, own, rate).astype(np.float32) if own != rate else audio


def encoded(utt: str, fmt: str) -> bytes:
    audio, rate = speech(utt)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt)
    return buf.getvalue()


def import_cli(*args: str) -> tuple[list[dict], dict[str, str]]:
    """Run `python -m preprocess import ...` in this process; the manifest rows and the quarantine's
    reasons by id."""
    assert main(["import", "--no-progress", *args]) == 0
    dest = Path(args[args.index("--to") + 1])
    rows = [json.loads(x) for x in (dest / "manifest.jsonl").read_text().splitlines()]
    quarantine = [json.loads(x) for x in (dest / "import-quarantine.jsonl").read_text().splitlines()]
    assert all(q["detail"] for q in quarantine)
    return rows, {q["id"]: q["reason"] for q in quarantine}


def kept_ids(settings) -> list[str]:
    from trainer.shared_memory import open_dataset

    run_store = Store.for_run(settings)
    # A folder of its own: the cache folder is shared by the session, and streaming would read
    # another test's shards left under the same key.
    local = Path(tempfile.mkdtemp(prefix="mds-", dir=settings.cache_dir))
    ids = []
    for key in run_store.get_json("data/manifest.json")["buckets"]:
        if not key.startswith("phase4/"):
            with run_store.library_env():  # the S3 endpoint, for mosaicml-streaming's own client
                ds = open_dataset(remote=run_store.uri(f"data/{key}"), local=str(local / key),
                                  batch_size=1)
                ids += [ds[i]["id"] for i in range(len(ds))]
    return sorted(ids)


def run_quarantine(settings) -> dict[str, str]:
    lines = Store.for_run(settings).get_bytes("quarantine.jsonl").decode().splitlines()
    return {q["id"]: q["reason"] for q in map(json.loads, lines)}


# -- Hugging Face ----------------------------------------------------------------------------------

def hf_dataset():
    from datasets import Audio, ClassLabel, Dataset

    good = [{"audio": {"bytes": encoded(u, "FLAC" if i % 2 else "WAV"), "path": f"clips/{u}.x"}, "id": u,
             "sentence": ROWS[u]["text"], "speaker": ROWS[u]["speaker_id"], "gender": i % 2, "age": "20s"}
            for i, u in enumerate(GOOD)]
    bad = [
        {"audio": None, "id": "no_audio", "sentence": "Saya nak go", "speaker": "speaker_01", "gender": 0, "age": ""},
        {"audio": {"bytes": encoded("ms_003_01", "WAV"), "path": "x.wav"}, "id": "no_text", "sentence": "",
         "speaker": "speaker_01", "gender": 0, "age": ""},
        {"audio": {"bytes": encoded("ms_003_01", "WAV"), "path": "y.wav"}, "id": "no_speaker",
         "sentence": ROWS["ms_003_01"]["text"], "speaker": None, "gender": 0, "age": ""},
    ]
    # Cast rather than built with the features: encoding an Audio value would need torchcodec;
    # casting types the column (the file's metadata says Audio) and keeps the bytes as they are.
    ds = Dataset.from_list(good + bad)
    return ds.cast_column("audio", Audio()).cast_column("gender", ClassLabel(names=["female", "male"]))


HF_BAD = {"no_audio": "missing_audio", "no_text": "empty_text", "no_speaker": "unknown_speaker"}


def test_hugging_face_parquet_and_arrow_import_with_speaker_and_tags(tmp_path):
    from datasets import DatasetDict

    ds = hf_dataset()
    (tmp_path / "pq" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    DatasetDict(train=ds).save_to_disk(str(tmp_path / "arrow"))
    for src in ("pq", "arrow"):
        rows, reasons = import_cli("--format", "hf", str(tmp_path / src), "--to", str(tmp_path / f"out-{src}"),
                                   "--language", "ms")
        assert [r["id"] for r in rows] == GOOD and reasons == HF_BAD
        for row in rows:
            assert row["speaker_id"] == ROWS[row["id"]]["speaker_id"] and row["text"] == ROWS[row["id"]]["text"]
            assert row["language"] == "ms" and row["age"] == "20s" and row["hf_split"] == "train"
            assert row["gender"] in ("female", "male")  # a ClassLabel is written as its name
            audio, rate = sf.read(tmp_path / f"out-{src}" / row["audio"], dtype="float32")
            assert np.allclose(audio, speech(row["id"])[0], atol=1e-4) and rate == speech(row["id"])[1]


def test_hugging_face_parquet_preprocessed_on_the_fly(tmp_path, make_settings):
    (tmp_path / "pq").mkdir()
    hf_dataset().to_parquet(str(tmp_path / "pq" / "part.parquet"))
    settings = make_settings()
    report = run(settings, input_store(str(tmp_path / "pq"), settings), progress=False, fmt="hf")
    assert kept_ids(settings) == sorted(GOOD) and report.samples == len(GOOD)
    assert run_quarantine(settings) == HF_BAD


# -- Common Voice ----------------------------------------------------------------------------------

CV_HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
             "gender", "accents", "variant", "locale", "segment"]


def common_voice(root: Path) -> Path:
    """A Common Voice release folder: validated.tsv + MP3 clips (libsndfile's MPEG Layer III encoder)."""
    (root / "clips").mkdir(parents=True)
    client = {"speaker_01": "a" * 128, "speaker_02": "b" * 127 + "c"}  # sha512 hex, as Common Voice's are
    lines = ["\t".join(CV_HEADER)]
    for u in GOOD:
        sf.write(root / "clips" / f"common_voice_ms_{u}.mp3", *speech(u), format="MP3")
        lines.append("\t".join([client[ROWS[u]["speaker_id"]], f"common_voice_ms_{u}.mp3", "s1", ROWS[u]["text"],
                                "", "2", "0", "twenties", "female_feminine", "Malaysian \"KL\"", "", "ms", ""]))
    sf.write(root / "clips" / "common_voice_ms_extra.mp3", *speech("ms_003_01"), format="MP3")
    lines += [
        "\t".join([client["speaker_01"], "common_voice_ms_gone.mp3", "s2", "Saya nak go", "", "2", "0", "", "", "",
                   "", "ms", ""]),
        "\t".join([client["speaker_01"], "common_voice_ms_extra.mp3", "s3", "", "", "2", "0", "", "", "", "", "ms",
                   ""]),
        "\t".join(["", "common_voice_ms_extra.mp3", "s4", ROWS["ms_003_01"]["text"], "", "2", "0", "", "", "", "",
                   "ms", ""]),
    ]
    (root / "validated.tsv").write_text("\n".join(lines) + "\n")
    return root


CV_IDS = [f"common_voice_ms_{u}" for u in GOOD]


def test_common_voice_release_imports_with_locale_and_tags(tmp_path):
    rows, reasons = import_cli("--format", "commonvoice", str(common_voice(tmp_path / "cv")), "--to",
                               str(tmp_path / "out"))
    assert [r["id"] for r in rows] == CV_IDS
    # the second and third bad rows share a clip name: the later one's id gets a hash suffix
    assert sorted(reasons.values()) == ["empty_text", "missing_audio", "unknown_speaker"]
    assert reasons["common_voice_ms_gone"] == "missing_audio" and reasons["common_voice_ms_extra"] == "empty_text"
    assert all(r["language"] == "ms" and r["age"] == "twenties" and r["accents"] == 'Malaysian "KL"' for r in rows)
    assert {r["speaker_id"] for r in rows} == {"a" * 128, "b" * 127 + "c"}
    assert all((tmp_path / "out" / r["audio"]).read_bytes()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
               or (tmp_path / "out" / r["audio"]).read_bytes()[0] == 0xFF for r in rows)


def test_common_voice_through_s3_imports_and_preprocesses(tmp_path, make_settings, s3_endpoint):
    """Source and destination on the S3 server on 127.0.0.1, through the CLI as the README types it."""
    from tests.conftest import subprocess_env

    src = common_voice(tmp_path / "cv")
    store = Store(f"s3://{BUCKET}/import-test", s3_endpoint)
    for path in src.rglob("*"):
        if path.is_file():
            store.put_file(path, f"cv/{path.relative_to(src)}")
    settings = make_settings(store=f"s3://{BUCKET}/import-test/store", s3_endpoint_url=s3_endpoint)
    env = subprocess_env(settings)
    cmd = [PYTHON, "-m", "preprocess", "import", "--format", "commonvoice", f"s3://{BUCKET}/import-test/cv",
           "--to", f"s3://{BUCKET}/import-test/imported", "--no-progress"]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"imported {len(GOOD)} of {len(GOOD) + 3} rows, quarantined 3" in done.stdout
    rows = [json.loads(x) for x in store.get_bytes("imported/manifest.jsonl").decode().splitlines()]
    assert [r["id"] for r in rows] == CV_IDS and all(store.exists(f"imported/{r['audio']}") for r in rows)

    report = run(settings, input_store(f"s3://{BUCKET}/import-test/imported", settings), progress=False)
    assert kept_ids(settings) == sorted(CV_IDS) and report.quarantined == 3  # the import's entries are counted
    assert sorted(run_quarantine(settings).values()) == ["empty_text", "missing_audio", "unknown_speaker"]


# -- LJSpeech --------------------------------------------------------------------------------------

def test_ljspeech_folder_imports_as_one_speaker(tmp_path):
    root = tmp_path / "my_voice"
    (root / "wavs").mkdir(parents=True)
    lines = []
    for u in GOOD:
        audio, rate = speech(u)
        sf.write(root / "wavs" / f"{u}.wav", audio, rate)
        lines.append(f"{u}|{ROWS[u]['text']}|{ROWS[u]['text'].lower()}")
    sf.write(root / "wavs" / "blank.wav", *speech("ms_003_01"))
    lines += ["gone|Saya nak go|saya nak go", "blank| | ", "just-an-id", "../../etc/x|Saya nak go|"]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    rows, reasons = import_cli("--format", "ljspeech", str(root), "--to", str(tmp_path / "out"), "--language", "ms")
    assert [r["id"] for r in rows] == GOOD
    assert reasons == {"gone": "missing_audio", "blank": "empty_text", "just-an-id": "malformed_row",
                       "../../etc/x": "path_outside_input"}  # never read
    assert {r["speaker_id"] for r in rows} == {"my_voice"} and all(r["language"] == "ms" for r in rows)
    assert rows[0]["normalized_text"] == ROWS[GOOD[0]]["text"].lower()


# -- Kaldi -----------------------------------------------------------------------------------------

KALDI_RATE = 22_050


def kaldi_dir(root: Path) -> Path:
    """A Kaldi data dir whose utterances are segments of two recordings (clips joined by 0.5 s of
    silence), with wav.scp, segments, text, utt2spk and spk2gender."""
    (root / "audio").mkdir(parents=True)
    segments, text, utt2spk = [], [], []
    for rec, utts in (("rec_a", GOOD[:2]), ("rec_b", GOOD[2:])):
        parts, at = [], 0  # in samples: the times in `segments` land on whole samples
        for u in utts:
            audio, rate = speech_at(u, KALDI_RATE), KALDI_RATE
            parts += [audio, np.zeros(rate // 2, np.float32)]
            segments.append(f"{u} {rec} {at / rate:.6f} {(at + len(audio)) / rate:.6f}")
            text.append(f"{u} {ROWS[u]['text']}")
            utt2spk.append(f"{u} {ROWS[u]['speaker_id']}")
            at += len(audio) + rate // 2
        sf.write(root / "audio" / f"{rec}.flac", np.concatenate(parts), rate)
    segments += ["no_speaker rec_a 0.0 1.0", "blank rec_a 0.0 1.0", "past_end rec_b 100.0 101.5",
                 "no_recording rec_c 0 1", "piped rec_d 0 1"]
    text += ["no_speaker Saya nak go", "blank ", "past_end Saya nak go", "no_recording Saya nak go",
             "piped Saya nak go"]
    utt2spk += ["blank speaker_01", "past_end speaker_01", "no_recording speaker_01", "piped speaker_01",
                "no_text speaker_02"]
    (root / "wav.scp").write_text(f"rec_a audio/rec_a.flac\nrec_b {root}/audio/rec_b.flac\n"
                                  "rec_d sox audio/rec_a.flac -t wav - |\n")
    (root / "segments").write_text("\n".join(sorted(segments)) + "\n")
    (root / "text").write_text("\n".join(sorted(text)) + "\n")
    (root / "utt2spk").write_text("\n".join(sorted(utt2spk)) + "\n")
    (root / "spk2gender").write_text("speaker_01 f\nspeaker_02 m\n")
    return root


KALDI_BAD = {"no_speaker": "unknown_speaker", "blank": "empty_text", "past_end": "bad_segment",
             "no_recording": "missing_audio", "piped": "unreadable_audio", "no_text": "empty_text"}


def test_kaldi_data_dir_segments_are_cut_from_their_recordings(tmp_path):
    rows, reasons = import_cli("--format", "kaldi", str(kaldi_dir(tmp_path / "data")), "--to",
                               str(tmp_path / "out"), "--language", "ms")
    assert sorted(r["id"] for r in rows) == sorted(GOOD) and reasons == KALDI_BAD
    for row in rows:
        cut, rate = sf.read(tmp_path / "out" / row["audio"], dtype="float32")
        original, original_rate = speech_at(row["id"], KALDI_RATE), KALDI_RATE
        assert rate == original_rate and len(cut) == len(original)
        n = min(len(cut), len(original))
        assert np.abs(cut[:n] - original[:n]).max() < 1e-3  # the same samples (16-bit FLAC)
        assert row["gender"] == {"speaker_01": "f", "speaker_02": "m"}[row["speaker_id"]]


def test_kaldi_data_dir_preprocessed_on_the_fly_through_the_cli(tmp_path, make_settings):
    from tests.conftest import subprocess_env

    settings = make_settings()
    src = kaldi_dir(tmp_path / "data")
    cmd = [PYTHON, "-m", "preprocess", "run", "--input", str(src), "--format", "kaldi", "--no-progress"]
    done = subprocess.run(cmd, env=subprocess_env(settings), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"preprocessed {len(GOOD)} utterances" in done.stdout and f"quarantined {len(KALDI_BAD)}" in done.stdout
    assert kept_ids(settings) == sorted(GOOD) and run_quarantine(settings) == KALDI_BAD


# -- a plain folder --------------------------------------------------------------------------------

def test_folder_of_clips_and_transcripts_takes_speakers_from_folders(tmp_path, make_settings):
    root = tmp_path / "clips"
    for u in GOOD:
        folder = root / ROWS[u]["speaker_id"]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{u}.flac", *speech(u))
        (folder / f"{u}.txt").write_text(ROWS[u]["text"] + "\n")
    sf.write(root / "speaker_01" / "untranscribed.wav", *speech("ms_003_01"))
    (root / "speaker_01" / "orphan.txt").write_text("Saya nak go")
    sf.write(root / "speaker_02" / "blank.wav", *speech("ms_003_01"))
    (root / "speaker_02" / "blank.txt").write_text("  \n")
    sf.write(root / "top.wav", *speech("ms_003_01"))
    (root / "top.txt").write_text(ROWS["ms_003_01"]["text"])
    bad = {"speaker_01_untranscribed": "empty_text", "speaker_01_orphan": "missing_audio",
           "speaker_02_blank": "empty_text", "top": "unknown_speaker"}
    rows, reasons = import_cli("--format", "folder", str(root), "--to", str(tmp_path / "out"))
    assert sorted(r["text"] for r in rows) == sorted(ROWS[u]["text"] for u in GOOD) and reasons == bad
    assert all(r["speaker_id"] == ROWS[r["id"].split("_", 2)[2]]["speaker_id"] for r in rows)

    # In place: the manifest names the clips where they are, nothing is copied.
    rows, _ = import_cli("--format", "folder", str(root), "--to", str(root))
    assert all((root / r["audio"]).is_file() for r in rows) and not (root / "speaker_01" / "speaker_01").exists()
    settings = make_settings()
    report = run(settings, input_store(str(root), settings), progress=False)
    assert report.samples == len(GOOD) and run_quarantine(settings) == bad


@pytest.mark.parametrize("fmt", ["hf", "commonvoice", "ljspeech", "kaldi", "folder"])
def test_a_source_that_is_not_in_the_format_is_a_clear_error(tmp_path, fmt):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"error: no .*"):
        main(["import", "--format", fmt, str(tmp_path / "empty"), "--to", str(tmp_path / "out")])
