"""Exit codes of `python -m trainer train`: the one table lives in infra/exit_codes.py (the
preflight below the trainer uses it too); this module keeps the trainer's imports short."""

from infra.exit_codes import (  # noqa: F401 - re-exported
    BUDGET_EXHAUSTED,
    ERROR,
    FENCED,
    FINAL,
    FINISHED,
    MAX_RESTARTS_ON_ERRORS,
    MEANING,
    PREEMPTED,
    PREFLIGHT_FAILED,
    RETRYABLE,
    STALLED,
    USAGE_ERROR,
)
