"""Money spent, counted across restarts, and the caps that stop a phase.

Spend = hours the trainer has run x the instance's hourly price. It is stored in every checkpoint
and in a small ledger object per scope (`spend/<scope>.json`) refreshed every `heartbeat_s`, so a
restart after a preemption also counts the time since the last checkpoint that it threw away.
The campaign total is the sum of every scope's ledger entry in the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.settings import BudgetSettings
from infra.storage import Store

LEDGER = "spend"


def ledger_key(scope: str) -> str:
    return f"{LEDGER}/{scope.replace('/', '__')}.json"


def read_ledger(run: Store) -> dict[str, float]:
    """USD spent per scope, from the ledger objects of the run."""
    spent = {}
    for key in run.list(LEDGER):
        entry = run.get_json(key)
        spent[entry["scope"]] = float(entry["usd"])
    return spent


@dataclass
class BudgetGuard:
    """Counts this scope's spend from `spent_before` on, by `clock` (seconds; injectable for tests)."""

    settings: BudgetSettings
    scope: str
    phase_cap_usd: float | None
    spent_before: float  # this scope, from earlier attempts
    spent_elsewhere: float  # the run's other scopes
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._start = self.clock()

    @property
    def spent(self) -> float:
        hours = (self.clock() - self._start) / 3600
        return self.spent_before + hours * self.settings.hourly_price_usd

    @property
    def campaign_spent(self) -> float:
        return self.spent_elsewhere + self.spent

    def _remaining(self) -> float:
        left = [float("inf")]
        if self.phase_cap_usd is not None:
            left.append(self.phase_cap_usd - self.spent)
        if self.settings.max_cost_usd is not None:
            left.append(self.settings.max_cost_usd - self.campaign_spent)
        return min(left)

    def exhausted(self) -> str | None:
        """Why training must stop now, or None."""
        if self.phase_cap_usd is not None and self.spent >= self.phase_cap_usd:
            return f"{self.scope} spent ${self.spent:.2f} of its ${self.phase_cap_usd:.2f} cap"
        cap = self.settings.max_cost_usd
        if cap is not None and self.campaign_spent >= cap:
            return f"the campaign spent ${self.campaign_spent:.2f} of its ${cap:.2f} cap"
        return None

    def cannot_afford(self, seconds: float) -> str | None:
        """Why `seconds` more of training cannot be paid for, or None."""
        cost = seconds / 3600 * self.settings.hourly_price_usd
        remaining = self._remaining()
        if cost > remaining:
            return (f"{self.scope}: one checkpoint interval (~{seconds:.0f} s, ${cost:.2f}) costs more than "
                    f"the ${max(remaining, 0):.2f} left")
        return None

    def write_ledger(self, run: Store, step: int) -> None:
        run.put_json(ledger_key(self.scope), {"scope": self.scope, "usd": self.spent, "step": step,
                                              "hourly_price_usd": self.settings.hourly_price_usd})
