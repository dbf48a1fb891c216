"""Fencing: only the newest instance of a training scope may commit.

A paused spot instance (Vast pauses rather than kills) can wake up after its replacement took over
and write into the same prefix. At start each instance claims the next generation number by
creating `fences/<scope>/<gen>` with a conditional write (S3 `If-None-Match: *`, O_EXCL locally);
before every commit it checks that no higher generation exists, and stops if one does.
"""

from __future__ import annotations

import json
import socket
import time

from infra.storage import Store


class Fenced(RuntimeError):
    """A newer instance owns this scope."""


class Fence:
    def __init__(self, run: Store, scope: str):
        self.run = run
        self.prefix = f"fences/{scope}"
        self.generation: int | None = None

    def _generations(self) -> list[int]:
        names = [key.rsplit("/", 1)[-1] for key in self.run.list(self.prefix)]
        return sorted(int(n) for n in names if n.isdigit())

    def claim(self) -> int:
        body = json.dumps({"host": socket.gethostname(), "claimed_at": time.time()}).encode()
        while True:
            existing = self._generations()
            candidate = (existing[-1] if existing else 0) + 1
            if self.run.put_if_absent(f"{self.prefix}/{candidate:06d}", body):
                self.generation = candidate
                return candidate

    def check(self) -> None:
        """Raise Fenced if a newer generation has been claimed since ours."""
        newest = self._generations()
        if self.generation is None:
            raise RuntimeError("claim() the fence before checking it")
        if newest and newest[-1] > self.generation:
            raise Fenced(
                f"generation {self.generation} of {self.prefix} was superseded by generation {newest[-1]}: "
                "a newer instance is training this scope, so this one stops without writing"
            )
