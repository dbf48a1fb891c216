"""The spend ledger: one small object per paying scope under `runs/<run_id>/spend/`, in dollars.

Every stage that holds a GPU writes its entry (preprocessing ranks, each phase, each speaker), so
the campaign total is the sum of the entries and survives any instance. trainer/budget.py keeps
the trainer's entries current; preprocessing writes its own at the end of each rank.
"""

from __future__ import annotations

import time
from typing import Any

from infra.storage import Store

LEDGER = "spend"


def ledger_key(scope: str) -> str:
    return f"{LEDGER}/{scope.replace('/', '__')}.json"


def entries(run: Store) -> list[dict[str, Any]]:
    return [run.get_json(key) for key in run.list(LEDGER)]


def read_ledger(run: Store) -> dict[str, float]:
    """USD spent per scope, from the ledger objects of the run."""
    return {entry["scope"]: float(entry["usd"]) for entry in entries(run)}


def paid_since(task_started_at: float | None, fallback_monotonic: float) -> float:
    """The monotonic clock reading at which this task started paying: the task's own start (Unix
    seconds, from the task file) when known, else the process's."""
    if task_started_at is None:
        return fallback_monotonic
    return time.monotonic() - max(0.0, time.time() - task_started_at)


def write_entry(run: Store, scope: str, usd: float, hourly_price_usd: float, **extra: Any) -> None:
    run.put_json(ledger_key(scope), {"scope": scope, "usd": usd, "hourly_price_usd": hourly_price_usd, **extra})
