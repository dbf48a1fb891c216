"""Exit codes of every Suara job (`python -m infra preflight`, `python -m preprocess run`,
`python -m trainer train`), shared with the SkyPilot task files.

A managed job always restarts the codes in `job_recovery.recover_on_exit_codes` (RETRYABLE); every
other non-zero code counts against `job_recovery.max_restarts_on_errors` (MAX_RESTARTS_ON_ERRORS),
since SkyPilot cannot exempt a code from it. So a final code may be restarted that many times, each
restart paying a new instance's start-up and then stopping within seconds: bad settings fail at
load, the budget check reads the ledger before any model is loaded, the preflight runs first (and
may pass on another host). A fenced instance's restart claims the run again: never run two jobs on
one run id.
"""

FINISHED = 0
ERROR = 1  # an unexpected error (Python's own exit code for an uncaught exception)
USAGE_ERROR = 2  # bad settings or arguments: fix and relaunch
PREEMPTED = 75  # stopped by SIGTERM/SIGINT or a spot notice after a checkpoint; run again (EX_TEMPFAIL)
BUDGET_EXHAUSTED = 76  # the cost cap was reached; checkpoint and adapter written
FENCED = 77  # a newer instance owns this run; this one stopped without writing
STALLED = 78  # no progress for train.stall_timeout_s (a hung read or step): emergency checkpoint tried
PREFLIGHT_FAILED = 79  # this machine or this account cannot run the job (CUDA, store, model access)

RETRYABLE = (PREEMPTED, STALLED)
FINAL = (FINISHED, USAGE_ERROR, BUDGET_EXHAUSTED, FENCED, PREFLIGHT_FAILED)
# Restarts SkyPilot grants to any other non-zero exit (a crash, a transient error that outlived the
# in-process retries): enough for a flaky network, bounded so a deterministic crash stops.
MAX_RESTARTS_ON_ERRORS = 2

MEANING = {
    FINISHED: "finished",
    ERROR: "crashed (see the log); restarted up to max_restarts_on_errors times",
    USAGE_ERROR: "bad settings or arguments",
    PREEMPTED: "preempted after a checkpoint; resumes",
    BUDGET_EXHAUSTED: "budget exhausted; checkpoint and adapter so far written",
    FENCED: "a newer instance owns the run",
    STALLED: "no progress (hung read or step); emergency checkpoint tried; resumes",
    PREFLIGHT_FAILED: "preflight failed: CUDA, store or model access",
}
