"""Benchmark (`make bench`): the peak memory of one preprocessing worker does not grow with the file.

Each measurement runs `prepare` on one row in a fresh process (as a worker does) and reads the
process's peak resident set (getrusage ru_maxrss) after the imports and after the row. The files
are 48 kHz stereo 16-bit WAV, the largest common layout: a typical 3-s clip (kept), one at the
length bound (60 s: decoded and cleaned whole before its trimmed length is refused), 10 minutes
(110 MiB) and 2 hours (1.3 GiB), both refused from their header with the default bounds. The
baseline, measured in the same run, is the whole-file path (read the bytes, decode them all,
resample them all) that preprocessing used before. A worker's first decoded clip also pays once
for librosa's compiled kernels (numba), which is why a kept 3-s clip costs more than a refused file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import PYTHON, REPO, SAMPLE

MEASURE = """
import io, json, resource, sys
import numpy as np
from infra.settings import PreprocessSettings
from preprocess.manifest import Utterance
from preprocess.prepare import Prepared, prepare

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

folder, name, text, how = sys.argv[1:5]
pre = PreprocessSettings()
before = peak_mib()
if how == "whole-file":
    import librosa, soundfile as sf
    data = open(f"{folder}/{name}", "rb").read()
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = librosa.resample(samples.mean(axis=1), orig_sr=rate, target_sr=pre.sample_rate_hz, res_type="soxr_hq")
    outcome = f"decoded {len(mono) / pre.sample_rate_hz:.0f} s"
else:
    row = Utterance.from_dict({"id": "x", "audio": name, "text": text, "speaker_id": "s"}, line=1)
    result = prepare((row, f"file://{folder}", None, pre, None))
    outcome = "kept" if isinstance(result, Prepared) else f"{result.reason}: {result.detail}"
print(json.dumps({"imports_mib": round(before), "peak_mib": round(peak_mib()), "outcome": outcome}))
"""


def write_speechlike_wav(path: Path, seconds: float, rate: int = 48_000) -> None:
    """A 48 kHz stereo WAV of the sample corpus's speech repeated, written in blocks."""
    speech, speech_rate = sf.read(SAMPLE / "audio" / "cs_001_01.flac", dtype="float32")
    import soxr

    block = soxr.resample(speech, speech_rate, rate)
    block = np.stack([block, block * 0.8], axis=1)
    frames = int(seconds * rate)
    with sf.SoundFile(path, "w", rate, 2, "PCM_16") as out:
        while frames > 0:
            out.write(block[:frames])
            frames -= len(block)


def measure(folder: Path, name: str, text: str, how: str = "prepare") -> dict:
    out = subprocess.run([PYTHON, "-c", MEASURE, str(folder), name, text, how], cwd=REPO, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.bench
def test_one_workers_peak_memory_does_not_grow_with_the_file(tmp_path):
    phrase = "I want to pergi shopping"  # the recording repeated in the files, 2.9 s each
    files = {"3 s (a typical clip)": 3, "60 s (the length bound)": 60, "10 minutes": 600, "2 hours": 7200}
    results = {}
    for label, seconds in files.items():
        name = f"{seconds}s.wav"
        write_speechlike_wav(tmp_path / name, seconds)
        results[label] = measure(tmp_path, name, " ".join([phrase] * min(20, max(1, seconds // 3))))
        if seconds == 7200:
            (tmp_path / name).unlink()
    results["10 minutes, whole-file baseline"] = measure(tmp_path, "600s.wav", phrase, how="whole-file")
    for label, r in results.items():
        print(f"{label:34s} imports {r['imports_mib']:5d} MiB  peak {r['peak_mib']:5d} MiB  {r['outcome'][:60]}")
    typical, ten, two_hours = results["3 s (a typical clip)"], results["10 minutes"], results["2 hours"]
    assert typical["outcome"] == "kept"
    for long in (ten, two_hours):
        assert long["outcome"].startswith("duration_out_of_bounds") and "not decoded" in long["outcome"]
        assert long["peak_mib"] <= typical["peak_mib"]  # refused from the header: less than a kept clip costs
    assert results["60 s (the length bound)"]["peak_mib"] < typical["peak_mib"] + 128
    baseline = results["10 minutes, whole-file baseline"]
    print(f"10-minute file: {baseline['peak_mib'] / ten['peak_mib']:.1f}x less peak memory than the whole-file path")
