"""Training data streamed from the run's MDS shards, with a resumable position.

`StreamingDataLoader.state_dict()` records the epoch and the sample within it; loading it in a new
process (new cache directory, same seed) continues with exactly the samples an uninterrupted run
would have seen. On top of it:

- replay: the stream mixes several datasets by proportion (a phase's own data and a share of the
  earlier phases'), which mosaicml-streaming resumes exactly too;
- length bucketing: samples are drawn a window at a time, sorted by length and cut into batches
  under a frame budget, so a batch pads to its own longest clip, never to a fixed 10 s. The resume
  state is the loader's state at the window's start plus how many of its batches were used:
  refilling the window gives the same samples, hence the same batches.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from infra.storage import Store
from preprocess.shards import ShardSample
from trainer.shared_memory import open_dataset


def _collate(samples: list[dict[str, Any]]) -> dict[str, list[ShardSample]]:
    # A dict of columns: StreamingDataLoader counts samples by the length of the first value.
    return {"samples": [ShardSample.from_columns(s) for s in samples]}


def bucket(samples: list[ShardSample], batch_size: int, frame_budget: int | None,
           rng: random.Random) -> list[list[ShardSample]]:
    """Sort by length, cut into batches of <= batch_size samples whose padded size (samples x longest)
    fits `frame_budget` (a longer single sample still forms its own batch); shuffle batch order."""
    ordered = sorted(samples, key=lambda s: (s.frames, s.id))
    batches: list[list[ShardSample]] = []
    current: list[ShardSample] = []
    for sample in ordered:
        frames = sample.frames
        too_many = len(current) >= batch_size
        too_long = frame_budget is not None and current and (len(current) + 1) * frames > frame_budget
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(sample)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


class ShardStream:
    """Endless batches of raw samples from one or more dataset prefixes of the run."""

    def __init__(self, run: Store, streams: list[tuple[str, float]], batch_size: int, seed: int,
                 cache_dir: Path, window_batches: int = 8, frame_budget: int | None = None):
        from streaming import Stream, StreamingDataLoader

        for prefix, _ in streams:
            if not run.exists(f"{prefix}/index.json"):
                raise FileNotFoundError(f"no training shards at {run.uri(prefix)}; was preprocessing run?")
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._local = tempfile.mkdtemp(prefix="shards-", dir=cache_dir)
        self._run = run
        self.seed, self.batch_size = seed, batch_size
        self.window_batches, self.frame_budget = window_batches, frame_budget
        with run.library_env():
            if len(streams) == 1:
                dataset_args: dict[str, Any] = {"remote": run.uri(streams[0][0]), "local": self._local}
            else:
                own = run.get_json(f"{streams[0][0]}/index.json")
                own_samples = sum(shard["samples"] for shard in own["shards"])
                dataset_args = {
                    "streams": [Stream(remote=run.uri(prefix), local=f"{self._local}/{i}", proportion=share)
                                for i, (prefix, share) in enumerate(streams)],
                    # An epoch holds the phase's own data once, plus the replayed share on top.
                    "epoch_size": max(batch_size, round(own_samples / streams[0][1])),
                }
            self.dataset = open_dataset(
                **dataset_args, shuffle=True, shuffle_seed=seed, batch_size=batch_size,
                predownload=8 * batch_size, num_canonical_nodes=1, shuffle_block_size=1 << 18,
            )
        # A private generator: torch's DataLoader draws a seed from the global RNG each time an epoch
        # starts, which would shift dropout after a resume that restarts iteration mid-epoch.
        self.loader = StreamingDataLoader(self.dataset, batch_size=batch_size, collate_fn=_collate,
                                          num_workers=0, generator=torch.Generator().manual_seed(seed))
        self._window_start: dict[str, Any] | None = None
        self._window_index = 0
        self._used = 0
        self._skip = 0

    def _raw(self) -> Iterator[list[ShardSample]]:
        while True:
            for batch in self.loader:
                yield batch["samples"]

    def batches(self) -> Iterator[list[ShardSample]]:
        raw = self._raw()
        with self._run.library_env():
            while True:
                self._window_start = self.loader.state_dict()
                window = [s for _ in range(self.window_batches) for s in next(raw)]
                rng = random.Random(self.seed * 1_000_003 + self._window_index)
                cut = bucket(window, self.batch_size, self.frame_budget, rng)
                for index, batch in enumerate(cut):
                    if index < self._skip:
                        continue
                    self._used = index + 1
                    yield batch
                self._skip = 0
                self._window_index += 1

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self._window_start, "used": self._used, "window_index": self._window_index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("loader") is not None:
            self.loader.load_state_dict(state["loader"])
        self._skip = state.get("used", 0)
        self._window_index = state.get("window_index", 0)

    def close(self) -> None:
        shutil.rmtree(self._local, ignore_errors=True)


def first_samples(run: Store, prefix: str, count: int, cache_dir: Path) -> list[ShardSample]:
    """The first `count` samples of a dataset, in order (for validation)."""
    if not run.exists(f"{prefix}/index.json"):
        return []
    local = tempfile.mkdtemp(prefix="val-", dir=cache_dir)
    try:
        with run.library_env():
            dataset = open_dataset(remote=run.uri(prefix), local=local, shuffle=False, batch_size=1)
            return [ShardSample.from_columns(dataset[i]) for i in range(min(count, len(dataset)))]
    finally:
        shutil.rmtree(local, ignore_errors=True)


def micro_batches(samples: list[ShardSample], size: int, frame_budget: int | None) -> list[list[ShardSample]]:
    """Cut one optimizer step's batch, in its order (the stream's batches run shortest first, so
    neighbours pad alike), into micro-batches of <= `size` samples whose padded frames (samples x
    longest) fit `frame_budget`; a sample longer than the budget forms its own micro-batch."""
    out: list[list[ShardSample]] = []
    current: list[ShardSample] = []
    for sample in samples:
        longest = max([sample.frames] + [s.frames for s in current])
        too_long = frame_budget is not None and current and (len(current) + 1) * longest > frame_budget
        if current and (len(current) >= size or too_long):
            out.append(current)
            current = []
        current.append(sample)
    if current:
        out.append(current)
    return out
