"""Training data streamed from the run's MDS shards, with a resumable position.

`StreamingDataLoader.state_dict()` records the epoch and the sample within it; loading it in a new
process (new cache directory, same seed) continues with exactly the samples an uninterrupted run
would have seen. On top of it:

- replay: the stream mixes several datasets by proportion (a phase's own data and a share of the
  earlier phases'), which mosaicml-streaming resumes exactly too;
- length bucketing: samples are drawn a window at a time, sorted by length and cut into batches
  under a budget of padded sequence positions, so a batch pads to its own longest row, never to a
  fixed 10 s. A row's length counts everything the model reads: prompt tokens, audio frames, the
  audio EOS, and a context turn when one is added. The resume state is the loader's state at the
  window's start plus how many of its batches were used: refilling the window gives the same
  samples, hence the same batches;
- context turns: some targets get a reference clip of the same speaker from their batch, drawn with
  a generator seeded by the batch's position (never the global RNG), so they are the same after a
  resume and the same whichever thread draws them; a context that would break the budget is skipped;
- prefetch: `Prefetcher` turns drawn batches into model inputs on a background thread, ahead of the
  step. Each item carries its own position, and the trainer saves the position of the last batch it
  trained on, so running ahead never changes what a resumed run sees;
- micro-batches: with gradient accumulation a step's batch is cut by `micro_batches` into forward
  passes that each fit the budget (the stream draws the step's batch under budget x accumulation).
"""

from __future__ import annotations

import queue
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from infra.storage import Store
from preprocess.shards import ShardSample
from trainer.shared_memory import open_dataset

T = TypeVar("T")
U = TypeVar("U")


def target_frames(sample: ShardSample) -> int:
    """The default row length: the audio frames and the audio EOS (no tokenizer at hand)."""
    return sample.frames + 1


@dataclass(frozen=True)
class Position:
    """Where the stream stands after a batch: the loader's state at the start of the batch's window,
    how many of the window's batches are used (this one included), and the window's number."""

    loader: dict[str, Any] | None
    used: int
    window_index: int

    def as_dict(self) -> dict[str, Any]:
        return {"loader": self.loader, "used": self.used, "window_index": self.window_index}


@dataclass
class Drawn:
    """One batch as the stream draws it: its targets, each one's context turn (or None), and the
    stream's position after it."""

    samples: list[ShardSample]
    contexts: list[ShardSample | None]
    position: Position


def _collate(samples: list[dict[str, Any]]) -> dict[str, list[ShardSample]]:
    # A dict of columns: StreamingDataLoader counts samples by the length of the first value.
    return {"samples": [ShardSample.from_columns(s) for s in samples]}


def bucket(samples: list[ShardSample], batch_size: int, frame_budget: int | None,
           rng: random.Random, length: Callable[[ShardSample], int] = target_frames) -> list[list[ShardSample]]:
    """Sort by `length` (sequence positions a sample takes as a row), cut into batches of <= batch_size
    samples whose padded size (samples x longest) fits `frame_budget` (a longer single sample still
    forms its own batch); shuffle batch order."""
    lengths = {id(s): length(s) for s in samples}
    ordered = sorted(samples, key=lambda s: (lengths[id(s)], s.id))
    batches: list[list[ShardSample]] = []
    current: list[ShardSample] = []
    for sample in ordered:
        frames = lengths[id(sample)]
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


def choose_contexts(samples: list[ShardSample], share: float, rng: random.Random,
                    length: Callable[[ShardSample], int] = target_frames,
                    frame_budget: int | None = None) -> list[ShardSample | None]:
    """For each target, with probability `share`, another sample of the batch by the same speaker as
    a context turn before it; skipped when the longer row would push the padded batch past
    `frame_budget`. Draws from `rng` in the same pattern whatever the budget decides."""
    if share == 0:
        return [None] * len(samples)
    rows = [length(s) for s in samples]
    contexts: list[ShardSample | None] = []
    for i, sample in enumerate(samples):
        others = [j for j, o in enumerate(samples) if j != i and o.speaker_id == sample.speaker_id]
        if not others or rng.random() >= share:
            contexts.append(None)
            continue
        j = others[rng.randrange(len(others))]
        longer = rows[i] + length(samples[j])
        if frame_budget is not None and len(samples) * max(*rows, longer) > frame_budget:
            contexts.append(None)
            continue
        rows[i] = longer
        contexts.append(samples[j])
    return contexts


class ShardStream:
    """Endless batches of raw samples from one or more dataset prefixes of the run."""

    def __init__(self, run: Store, streams: list[tuple[str, float]], batch_size: int, seed: int,
                 cache_dir: Path, window_batches: int = 8, frame_budget: int | None = None,
                 length: Callable[[ShardSample], int] = target_frames, context_share: float = 0.0):
        from streaming import Stream, StreamingDataLoader

        for prefix, _ in streams:
            if not run.exists(f"{prefix}/index.json"):
                raise FileNotFoundError(f"no training shards at {run.uri(prefix)}; was preprocessing run?")
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._local = tempfile.mkdtemp(prefix="shards-", dir=cache_dir)
        self._run = run
        self.seed, self.batch_size = seed, batch_size
        self.window_batches, self.frame_budget = window_batches, frame_budget
        self.length, self.context_share = length, context_share
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
        self._position = Position(None, 0, 0)

    def _raw(self) -> Iterator[list[ShardSample]]:
        while True:
            for batch in self.loader:
                yield batch["samples"]

    def drawn(self) -> Iterator[Drawn]:
        """Endless batches from the current position, each with its contexts and its position."""
        raw = self._raw()
        skip, window_index = self._position.used, self._position.window_index
        with self._run.library_env():
            while True:
                window_start = self.loader.state_dict()
                window = [s for _ in range(self.window_batches) for s in next(raw)]
                rng = random.Random(self.seed * 1_000_003 + window_index)
                cut = bucket(window, self.batch_size, self.frame_budget, rng, self.length)
                for index, batch in enumerate(cut):
                    if index < skip:
                        continue
                    position = Position(window_start, index + 1, window_index)
                    draw = random.Random(f"contexts:{self.seed}:{window_index}:{index}")
                    contexts = choose_contexts(batch, self.context_share, draw, self.length, self.frame_budget)
                    yield Drawn(batch, contexts, position)
                skip = 0
                window_index += 1

    def batches(self) -> Iterator[list[ShardSample]]:
        """Endless batches of samples; `state_dict()` is the position after the last one yielded."""
        for drawn in self.drawn():
            self._position = drawn.position
            yield drawn.samples

    def state_dict(self) -> dict[str, Any]:
        return self._position.as_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("loader") is not None:
            self.loader.load_state_dict(state["loader"])
        self._position = Position(state.get("loader"), state.get("used", 0), state.get("window_index", 0))

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


def micro_batches(rows: list[T], size: int, frame_budget: int | None,
                  length: Callable[[T], int] = target_frames) -> list[list[T]]:
    """Cut one optimizer step's batch, in its order (the stream's batches run shortest first, so
    neighbours pad alike), into micro-batches of <= `size` rows whose padded size (rows x longest
    `length`, the measure the stream's budget uses) fits `frame_budget`; a row longer than the
    budget forms its own micro-batch. A batch the stream cut under the same budget and size stays
    whole: without accumulation, the step's batch is the one drawn."""
    out: list[list[T]] = []
    current: list[T] = []
    longest = 0
    for row in rows:
        positions = length(row) if frame_budget is not None else 0
        too_long = frame_budget is not None and current and (len(current) + 1) * max(longest, positions) > frame_budget
        if current and (len(current) >= size or too_long):
            out.append(current)
            current, longest = [], 0
        current.append(row)
        longest = max(longest, positions)
    if current:
        out.append(current)
    return out


class Prefetcher(Generic[T, U]):
    """`make(item)` for each item of `source`, computed on a background thread up to `depth` items
    ahead of the consumer (0: on the consumer's thread, when it asks). Errors reach the consumer."""

    def __init__(self, source: Iterator[T], make: Callable[[T], U], depth: int):
        self._source, self._make, self.depth = source, make, depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
            self._thread.start()

    def __iter__(self) -> Prefetcher[T, U]:
        return self

    def __next__(self) -> U:
        if self._thread is None:
            return self._make(next(self._source))
        kind, value = self._queue.get()
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def _run(self) -> None:
        try:
            for item in self._source:
                made = self._make(item)
                while not self._stop.is_set():
                    try:
                        self._queue.put(("item", made), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, who decides
            self._queue.put(("error", exc))
        else:
            self._queue.put(("end", None))

    def close(self) -> None:
        """Stop the thread (it finishes the item in hand, which may wait on a download: it is a daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
