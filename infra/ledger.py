"""The spend ledger: one small object per paying scope under `runs/<run_id>/spend/`, in dollars.

Every stage that holds a GPU writes its entry (preprocessing ranks, each phase, each speaker), so
the campaign total is the sum of the entries and survives any instance. trainer/budget.py keeps
the trainer's entries current between steps; a `Heartbeat` keeps preprocessing's current from a
thread. Either way a preempted attempt loses at most one heartbeat of its spend, and the next
attempt of the scope adds to what the entry holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from infra.settings import BudgetSettings
from infra.storage import Store

log = logging.getLogger(__name__)
LEDGER = "spend"


def ledger_key(scope: str) -> str:
    return f"{LEDGER}/{scope.replace('/', '__')}.json"


def entries(run: Store) -> list[dict[str, Any]]:
    return [run.get_json(key) for key in run.list(LEDGER)]


def read_ledger(run: Store) -> dict[str, float]:
    """USD spent per scope, from the ledger objects of the run."""
    return {entry["scope"]: float(entry["usd"]) for entry in entries(run)}


def paid_since(budget: BudgetSettings, process_start: float) -> float:
    """The monotonic clock reading at which this attempt started paying: the task's first command
    (`budget.task_started_at`, Unix seconds, which the task files set) or else the process's start,
    less the provisioning and image pull before it that no process sees
    (`budget.provision_seconds_estimate`), so every recovery pays its own start-up."""
    start = process_start
    if budget.task_started_at is not None:
        start = time.monotonic() - max(0.0, time.time() - budget.task_started_at)
    return start - budget.provision_seconds_estimate


def write_entry(run: Store, scope: str, usd: float, hourly_price_usd: float, **extra: Any) -> None:
    run.put_json(ledger_key(scope), {"scope": scope, "usd": usd, "hourly_price_usd": hourly_price_usd, **extra})


class Heartbeat:
    """Keeps one scope's entry at `spent()` while a block runs: written on entry (an attempt killed
    at once has still paid its start-up), every `every_s` seconds from a daemon thread, and on exit.
    A failed refresh is logged and retried at the next beat; it never stops the work it meters."""

    def __init__(self, run: Store, scope: str, spent: Callable[[], float], hourly_price_usd: float,
                 every_s: float, **extra: Any):
        self.run, self.scope, self.spent = run, scope, spent
        self.hourly_price_usd, self.every_s, self.extra = hourly_price_usd, every_s, extra
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"ledger {scope}", daemon=True)

    def write(self) -> float:
        usd = self.spent()
        write_entry(self.run, self.scope, usd, self.hourly_price_usd, **self.extra)
        return usd

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.write()
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("could not refresh the ledger entry of %s: %s", self.scope, exc)

    def __enter__(self) -> Heartbeat:
        self.write()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.write()
        except Exception as error:  # noqa: BLE001 - never hide the error that ended the block
            if exc_type is None:
                raise
            log.warning("could not write the last ledger entry of %s: %s", self.scope, error)
