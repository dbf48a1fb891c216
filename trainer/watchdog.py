"""The stall watchdog: a job that stops making progress is ended, not paid for by the hour.

A read from a hanging endpoint, a download that never finishes or a step stuck on the device
would keep a GPU instance (and the managed job) alive forever: nothing in SkyPilot times a job
out. The training loop reports progress after every finished step; when none comes for
`timeout_s`, a daemon thread runs `on_stall` (the trainer's emergency checkpoint) for at most
`grace_s`, then exits the process with STALLED, a code the task files list as retryable, so the
managed job restarts on a fresh instance and resumes.

`os._exit` is deliberate: the main thread is stuck and would never run a normal shutdown.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from infra.exit_codes import STALLED

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, timeout_s: float, on_stall: Callable[[], None], grace_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, poll_s: float | None = None,
                 exit: Callable[[int], None] = os._exit):
        self.timeout_s = timeout_s
        self.grace_s = min(120.0, timeout_s) if grace_s is None else grace_s
        self.on_stall, self.clock, self.exit = on_stall, clock, exit
        self.poll_s = poll_s if poll_s is not None else min(5.0, timeout_s / 10)
        self.fired = threading.Event()
        self._last = clock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def progress(self) -> None:
        """Something finished: the stall clock starts again."""
        self._last = self.clock()

    def start(self) -> None:
        self._last = self.clock()
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.poll_s + 1)

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            idle = self.clock() - self._last
            if idle >= self.timeout_s:
                self._fire(idle)
                return

    def _fire(self, idle: float) -> None:
        self.fired.set()
        log.error("no progress for %.0f s (train.stall_timeout_s=%.0f): trying an emergency checkpoint, then "
                  "exiting with %d so the job restarts and resumes", idle, self.timeout_s, STALLED)
        helper = threading.Thread(target=self._attempt, name="emergency-checkpoint", daemon=True)
        helper.start()
        helper.join(self.grace_s)
        if helper.is_alive():
            log.error("the emergency checkpoint did not finish within %.0f s; the last checkpoint stands",
                      self.grace_s)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.exit(STALLED)

    def _attempt(self) -> None:
        try:
            self.on_stall()
        except Exception:  # noqa: BLE001 - the exit must happen whatever the attempt raised
            log.exception("emergency checkpoint failed; the last checkpoint stands")
