"""Exit codes of `python -m trainer train`, shared with the SkyPilot task files.

Managed jobs retry the codes in `job_recovery.recover_on_exit_codes` (RETRYABLE) and nothing else
(`max_restarts_on_errors: 0`): a finished phase, a bad configuration, an exhausted budget or a
fenced (superseded) instance must not be restarted.
"""

FINISHED = 0
USAGE_ERROR = 2  # bad settings or arguments: fix and relaunch
PREEMPTED = 75  # stopped by SIGTERM/SIGINT after a checkpoint; resume by running again (EX_TEMPFAIL)
BUDGET_EXHAUSTED = 76  # the cost cap was reached; checkpoint and adapter written
FENCED = 77  # a newer instance owns this run; this one stopped without writing

RETRYABLE = (PREEMPTED,)
FINAL = (FINISHED, USAGE_ERROR, BUDGET_EXHAUSTED, FENCED)
