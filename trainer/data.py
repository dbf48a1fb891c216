"""Training data streamed from the run's MDS shards, with a resumable position.

`StreamingDataLoader.state_dict()` records the epoch and the sample within it; loading it in a new
process (new cache directory, same seed) continues with exactly the batches an uninterrupted run
would have seen. The stream repeats epochs until the trainer stops asking.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from infra.storage import Store


def _collate(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    # A dict of columns: StreamingDataLoader counts samples by the length of the first value.
    return {"samples": samples}


class ShardStream:
    """Endless batches of raw samples from one dataset prefix of the run."""

    def __init__(self, run: Store, prefix: str, batch_size: int, seed: int, cache_dir: Path,
                 shuffle: bool = True):
        from streaming import StreamingDataLoader, StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        if not run.exists(f"{prefix}/index.json"):
            raise FileNotFoundError(f"no training shards at {run.uri(prefix)}; was preprocessing run?")
        # A killed earlier run leaves shared memory behind that would block this one.
        clean_stale_shared_memory()
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._local = tempfile.mkdtemp(prefix="shards-", dir=cache_dir)
        with run.library_env():
            self.dataset = StreamingDataset(
                remote=run.uri(prefix), local=self._local, shuffle=shuffle, shuffle_seed=seed,
                batch_size=batch_size, predownload=8 * batch_size, num_canonical_nodes=1,
                shuffle_block_size=1 << 18,
            )
        # A private generator: torch's DataLoader draws a seed from the global RNG each time an epoch
        # starts, which would shift dropout after a resume that restarts iteration mid-epoch.
        self.loader = StreamingDataLoader(self.dataset, batch_size=batch_size, collate_fn=_collate,
                                          num_workers=0, generator=torch.Generator().manual_seed(seed))
        self._run = run

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        with self._run.library_env():
            while True:
                for batch in self.loader:
                    yield batch["samples"]

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def close(self) -> None:
        shutil.rmtree(self._local, ignore_errors=True)
