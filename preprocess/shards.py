"""Training shards: one MDS dataset (mosaicml-streaming) per phase bucket and split, in the store.

Layout under the run's prefix:
    data/phase1/train/   index.json + rank_000/shard.*.mds  (phase 1: one language, no particle)
    data/phase2/{train,val,test}/                           (phase 2: code-switched)
    data/phase3/...                                         (phase 3: contains a particle)
    data/phase4/<speaker_id>/{train,val,test}/              (phase 4: every utterance of one speaker)
    data/_ranks/rank_000.json                               one preprocessing rank's partial report
    data/manifest.json                                      counts, seconds, codec, sha256 of every file

Each preprocessing rank (one per machine) writes its own `rank_NNN/` shards; the merge writes one
`index.json` per bucket naming every rank's shards, which `StreamingDataset` reads as one dataset.

MDS is read back by `StreamingDataset`, whose loader state resumes mid-epoch exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from infra.storage import Store

DATA_PREFIX = "data"
SPLITS = ("train", "val", "test")


def _column(kind: str) -> Any:
    return field(metadata={"mds": kind})


@dataclass(frozen=True)
class ShardSample:
    """One training sample, as the shards hold it. The fields are the MDS columns (their encodings
    in the metadata): the shard writer and every reader go through this one schema."""

    id: str = _column("str")
    speaker_id: str = _column("str")
    text: str = _column("str")
    normalized: str = _column("str")
    words: list[dict[str, Any]] = _column("json")  # [{"text", "lang", "particle"}]
    switches: list[int] = _column("json")  # word indices where the language changes
    phase: int = _column("int")
    split: str = _column("str")
    duration_s: float = _column("float64")
    codes: np.ndarray = _column("ndarray:int16")  # (frames, codebooks) Mimi codes
    particle_mask: np.ndarray = _column("ndarray:uint8")  # (frames,) 1 inside a particle word
    switch_mask: np.ndarray = _column("ndarray:uint8")  # (frames,) 1 within the margin of a language switch
    f0_hz: np.ndarray = _column("ndarray:float32")  # (frames,) pyworld F0, 0 where unvoiced
    energy_db: np.ndarray = _column("ndarray:float32")  # (frames,)
    word_times: list[list[float]] = _column("json")  # [[start_s, end_s], ...] per word, cleaned audio's clock
    aligner: str = _column("str")  # which aligner produced word_times

    @property
    def frames(self) -> int:
        return int(self.codes.shape[0])

    def to_columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_columns(cls, row: dict[str, Any]) -> ShardSample:
        """A sample read back from a shard (columns written by older versions are ignored)."""
        return cls(**{f.name: _owned(row[f.name]) for f in fields(cls)})


def _owned(value: Any) -> Any:
    # StreamingDataset can hand out read-only views into its shard cache, which is deleted on close.
    return np.array(value) if isinstance(value, np.ndarray) else value


COLUMNS = {f.name: f.metadata["mds"] for f in fields(ShardSample)}


# Ids and speaker ids are parts of store keys (a speaker id is a folder: `phase4/<speaker_id>/`), so
# they follow one rule everywhere: letters and digits of any script, `_`, `-` and `.`, starting with a
# letter or digit (so never `.`, `..` or a hidden name), at most KEY_MAX_BYTES in UTF-8 (a folder
# name may be 255 bytes; an S3 key 1024 in all). No separators, blanks or control characters.
KEY_MAX_BYTES = 128
KEY_RULE = f"letters, digits, '_', '-' and '.', starting with a letter or digit, at most {KEY_MAX_BYTES} bytes"


def key_problem(value: str) -> str | None:
    """Why `value` cannot be an id or speaker id (a part of a store key), or None if it can."""
    if not value:
        return "it is empty"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > KEY_MAX_BYTES:
        return f"it is {size} bytes long"
    for ch in value:
        if not (ch.isalnum() or ch in "_-."):
            return f"it contains {ch!r} (U+{ord(ch):04X})"
    if not value[0].isalnum():
        return f"it starts with {value[0]!r}"
    return None


def check_key(value: str, what: str) -> str:
    problem = key_problem(value)
    if problem:
        raise ValueError(f"{what} {value!r} is not a safe store key: {problem}; use {KEY_RULE}")
    return value


def split_of(utt_id: str) -> str:
    """Deterministic 80/10/10 split by a hash of the id: stable when data is added."""
    bucket = int.from_bytes(hashlib.sha256(utt_id.encode("utf-8")).digest()[:4], "big") % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def bucket_keys(phase: int, speaker_id: str, split: str) -> list[str]:
    """The dataset prefixes (relative to data/) one sample goes to."""
    return [f"phase{phase}/{split}", f"phase4/{check_key(speaker_id, 'speaker_id')}/{split}"]


@dataclass
class BucketStats:
    samples: int = 0
    seconds: float = 0.0


def rank_dir(rank: int) -> str:
    return f"rank_{rank:03d}"


class ShardWriter:
    """Opens one MDSWriter per bucket on first use; `close()` finishes them all."""

    def __init__(self, run: Store, rank: int = 0, size_limit: int = 1 << 24):
        self.run = run
        self.rank = rank
        self.size_limit = size_limit
        self._writers: dict[str, Any] = {}
        self.stats: dict[str, BucketStats] = {}

    @staticmethod
    def check(sample: ShardSample) -> None:
        """Raise if `sample` cannot be written (a column MDS cannot encode, an unsafe speaker id):
        checked before any bucket is touched, so a sample lands in all its buckets or in none."""
        from streaming.base.format.mds.encodings import mds_encode

        columns = sample.to_columns()
        for name, kind in COLUMNS.items():
            mds_encode(kind, columns[name])
        bucket_keys(sample.phase, sample.speaker_id, sample.split)

    def write(self, sample: ShardSample) -> None:
        from streaming import MDSWriter

        self.check(sample)
        columns = sample.to_columns()
        for key in bucket_keys(sample.phase, sample.speaker_id, sample.split):
            writer = self._writers.get(key)
            if writer is None:
                writer = MDSWriter(out=self.run.uri(f"{DATA_PREFIX}/{key}/{rank_dir(self.rank)}"), columns=COLUMNS,
                                   size_limit=self.size_limit, progress_bar=False, exist_ok=True)
                self._writers[key] = writer
                self.stats[key] = BucketStats()
            writer.write(columns)
            self.stats[key].samples += 1
            self.stats[key].seconds += sample.duration_s

    def close(self) -> None:
        for writer in self._writers.values():
            writer.finish()
        self._writers.clear()


@contextmanager
def shard_writer(run: Store, rank: int = 0) -> Iterator[ShardWriter]:
    writer = ShardWriter(run, rank)
    with run.library_env():
        try:
            yield writer
        finally:
            writer.close()


def make_sample(*, utt_id: str, speaker_id: str, text: str, analysis: dict[str, Any], split: str,
                duration_s: float, codes: np.ndarray, extras: dict[str, Any]) -> ShardSample:
    """One shard sample; `extras` holds the per-frame masks and features and the word timings."""
    return ShardSample(
        id=utt_id,
        speaker_id=speaker_id,
        text=text,
        normalized=analysis["normalized"],
        words=analysis["words"],
        switches=analysis["switches"],
        phase=int(analysis["phase"]),
        split=split,
        duration_s=float(duration_s),
        codes=np.ascontiguousarray(codes, dtype=np.int16),
        **extras,
    )


def dataset_prefix(phase: int, split: str, speaker_id: str | None = None) -> str:
    """Key prefix (under the run) of one bucket's MDS dataset."""
    if phase == 4:
        if speaker_id is None:
            raise ValueError("phase 4 datasets are per speaker: give speaker_id")
        return f"{DATA_PREFIX}/phase4/{check_key(speaker_id, 'speaker_id')}/{split}"
    return f"{DATA_PREFIX}/phase{phase}/{split}"


def read_data_manifest(run: Store) -> dict[str, Any]:
    key = f"{DATA_PREFIX}/manifest.json"
    if not run.exists(key):
        raise FileNotFoundError(
            f"no preprocessed data at {run.uri(key)}; run `python -m preprocess run` for this run id first"
        )
    return run.get_json(key)


def merge_indexes(run: Store, bucket: str, ranks: list[int]) -> int:
    """Write `data/<bucket>/index.json` naming the shards of every rank that wrote this bucket
    (each shard's basename gains its `rank_NNN/` folder, as mosaicml-streaming's merge does).
    Returns the number of samples."""
    shards = []
    for rank in ranks:
        key = f"{DATA_PREFIX}/{bucket}/{rank_dir(rank)}/index.json"
        if not run.exists(key):
            continue
        for shard in run.get_json(key)["shards"]:
            for part in ("raw_data", "zip_data"):
                if shard.get(part):
                    shard[part]["basename"] = f"{rank_dir(rank)}/{shard[part]['basename']}"
            shards.append(shard)
    run.put_json(f"{DATA_PREFIX}/{bucket}/index.json", {"shards": shards, "version": 2})
    return sum(shard["samples"] for shard in shards)
