"""Money spent, counted across restarts, and the caps that stop a phase.

Spend = hours since the attempt started paying (infra/ledger.py `paid_since`: its provisioning,
then its first command or the process's start) x the instance's hourly price (infra/price.py). It is stored
in every checkpoint and in the run's ledger (infra/ledger.py) refreshed every `heartbeat_s`, so a
restart after a preemption also counts the time since the last checkpoint that it threw away.
The campaign total is the sum of every scope's ledger entry in the run, preprocessing included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.ledger import entries, read_ledger, write_entry  # noqa: F401 - read_ledger re-exported
from infra.settings import BudgetSettings, Settings
from infra.storage import Store


@dataclass
class BudgetGuard:
    """Counts this scope's spend from `spent_before` on, by `clock` (seconds; injectable for tests)."""

    settings: BudgetSettings
    scope: str
    phase_cap_usd: float | None
    spent_before: float  # this scope, from earlier attempts
    spent_elsewhere: float  # the run's other scopes
    clock: Callable[[], float] = time.monotonic
    started_at: float | None = None  # when this attempt began paying (default: now)

    def __post_init__(self) -> None:
        self._start = self.clock() if self.started_at is None else self.started_at

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

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self._start

    def write_ledger(self, run: Store, step: int, startup_s: float | None = None) -> None:
        extra = {"startup_s": startup_s} if startup_s is not None else {}
        write_entry(run, self.scope, self.spent, self.settings.hourly_price_usd, step=step, **extra)


def precheck(settings: Settings, scope: str, phase_cap_usd: float | None, checkpoint_every: int) -> str | None:
    """Why a phase must not start, judged from the ledger alone, before anything heavy is loaded
    (a refused start still pays for its own start-up). None when it may start."""
    run = Store.for_run(settings)
    entries_by_scope = {e["scope"]: e for e in entries(run)}
    own = entries_by_scope.get(scope, {})
    guard = BudgetGuard(settings.budget, scope, phase_cap_usd, float(own.get("usd", 0.0)),
                        sum(float(e["usd"]) for k, e in entries_by_scope.items() if k != scope))
    # Starting costs the start-up (model download and load: measured by an earlier attempt, else
    # the settings' estimate) before the first interval of training.
    startup_s = float(own.get("startup_s", settings.budget.startup_seconds_estimate))
    return guard.exhausted() or guard.cannot_afford(
        startup_s + settings.budget.seconds_per_step_estimate * checkpoint_every)
