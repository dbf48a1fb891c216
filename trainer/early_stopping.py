"""Early stopping: end a phase once a validation figure has stopped improving.

The trainer shows it every validation's figures (every `logging.val_every` steps). An improvement
makes that step the best (the trainer checkpoints it and keeps the checkpoint); once the best is
`patience_steps` or more behind the current step, the phase stops and publishes the best step's
checkpoint as its adapter. The state (best value and step, and where it stopped) travels in every
checkpoint, so a resumed phase keeps counting from where the killed one was, and a stopped phase
stays stopped when its command is run again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from infra.settings import EarlyStopping as EarlyStoppingSettings


class Verdict(Enum):
    ABSENT = "absent"  # the figure was not among these (a category with no data this time)
    IMPROVED = "improved"  # a new best: checkpoint this step
    WAITING = "waiting"  # no better, patience left
    STOP = "stop"  # no better for patience_steps steps


@dataclass
class EarlyStopping:
    metric: str
    mode: str  # "min" or "max"
    patience_steps: int
    best_value: float | None = None
    best_step: int | None = None
    stopped_at: int | None = None  # the step the phase stopped at, once it has

    @classmethod
    def from_settings(cls, settings: EarlyStoppingSettings) -> EarlyStopping:
        return cls(settings.metric, settings.mode, settings.patience_steps)

    def observe(self, step: int, figures: dict[str, float]) -> Verdict:
        """Judge the figures of a validation at `step`."""
        value = figures.get(self.metric)
        if value is None or not math.isfinite(value):
            # A NaN loss is never an improvement, but it does use up patience.
            return self._waited(step) if value is not None else Verdict.ABSENT
        if self.best_value is None or self._better(value, self.best_value):
            self.best_value, self.best_step = float(value), step
            return Verdict.IMPROVED
        return self._waited(step)

    def _waited(self, step: int) -> Verdict:
        if self.best_step is not None and step - self.best_step >= self.patience_steps:
            self.stopped_at = step
            return Verdict.STOP
        return Verdict.WAITING

    def _better(self, value: float, best: float) -> bool:
        return value < best if self.mode == "min" else value > best

    def summary(self) -> str:
        return (f"{self.metric} has not improved for {self.patience_steps} steps (best {self.best_value:.4g} "
                f"at step {self.best_step}, mode {self.mode})")

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Take over a checkpoint's progress, if it watched the same figure the same way (a changed
        metric or mode starts afresh; a changed patience applies to the saved best)."""
        if not state or (state.get("metric"), state.get("mode")) != (self.metric, self.mode):
            return
        self.best_value, self.best_step = state.get("best_value"), state.get("best_step")
        self.stopped_at = state.get("stopped_at")
