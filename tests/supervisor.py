"""A local stand-in for SkyPilot's managed-job recovery, for chaos tests of the trainer.

It runs a command, preempts it the way spot clouds do (SIGTERM, after which the job may finish its
step and checkpoint; or SIGKILL with no notice), and restarts it as a managed job would: after a
preemption, or an exit code listed as retryable; never after success or another code. Spend is
simulated as the wall time of every attempt x an hourly price.

Preemptions are driven by the job's progress, never by a clock: the supervisor reads the job's log
as it is written and preempts when a planned event appears (the model loaded, a step logged), so a
run means the same thing on a fast machine and on a loaded one.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

STEP = re.compile(r"step (\d+)/")
STARTED = re.compile(r"trainable parameters")  # the trainer's line once its model is loaded


@dataclass(frozen=True)
class Preemption:
    at_step: int  # preempt once the job logs this step (0: as soon as its model is loaded)
    kind: str  # "SIGTERM" or "SIGKILL"


def random_plan(seed: int, count: int, steps: int, startup: bool = True) -> list[Preemption]:
    """`count` preemptions at distinct random steps of a `steps`-step run, in order, each a random
    kind; with `startup`, the first one lands while the job is still loading (before any step)."""
    rng = random.Random(seed)
    at = sorted(rng.sample(range(1, steps), count - int(startup)))
    return [Preemption(s, rng.choice(["SIGTERM", "SIGKILL"])) for s in ([0] if startup else []) + at]


@dataclass
class Attempt:
    seconds: float
    returncode: int
    preempted_by: str | None  # "SIGTERM" or "SIGKILL" when the supervisor preempted it
    stderr: str


@dataclass
class SupervisedRun:
    attempts: list[Attempt] = field(default_factory=list)
    hourly_price_usd: float = 0.0

    @property
    def spend_usd(self) -> float:
        return sum(a.seconds for a in self.attempts) / 3600 * self.hourly_price_usd

    @property
    def returncode(self) -> int:
        return self.attempts[-1].returncode


class Supervisor:
    def __init__(self, cmd: list[str], env: dict[str, str], retryable: tuple[int, ...],
                 plan: list[Preemption] = (), hourly_price_usd: float = 0.0, max_attempts: int = 20,
                 hang_timeout_s: float = 1800.0):
        self.cmd, self.env, self.retryable = cmd, env, retryable
        self.plan = list(plan)
        self.hourly_price_usd, self.max_attempts = hourly_price_usd, max_attempts
        self.hang_timeout_s = hang_timeout_s  # only to fail a hung test, never to time an event

    def run(self) -> SupervisedRun:
        result = SupervisedRun(hourly_price_usd=self.hourly_price_usd)
        while len(result.attempts) < self.max_attempts:
            attempt = self.attempt(self.plan[0] if self.plan else None)
            result.attempts.append(attempt)
            if attempt.preempted_by is not None:
                self.plan.pop(0)
            elif attempt.returncode not in self.retryable:
                return result  # finished, or a final error: a managed job stops here
        raise RuntimeError(f"still not finished after {self.max_attempts} attempts")

    def attempt(self, preemption: Preemption | None = None,
                on_line: Callable[[str], object] | None = None) -> Attempt:
        """Run the command once, preempting it as planned; no restart. `on_line` sees every log line
        as it is written (to break something at a point of the job's progress)."""
        start = time.monotonic()
        lines: list[str] = []
        fired: list[str] = []
        with subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) as proc:

            def read() -> None:
                for line in proc.stderr:
                    lines.append(line)
                    if on_line is not None:
                        on_line(line)
                    if preemption is not None and not fired and _due(line, preemption.at_step):
                        fired.append(preemption.kind)
                        proc.send_signal(signal.SIGTERM if preemption.kind == "SIGTERM" else signal.SIGKILL)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            try:
                proc.wait(timeout=self.hang_timeout_s)
            finally:
                # Whatever ended the wait (the hang guard, an interrupted test), no job outlives its
                # attempt: a trainer stuck in a hung request would wait on SIGTERM for its step.
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            # The log ends when the last holder of its pipe exits: a process the job left behind
            # would keep it open, which is a defect of the job, reported instead of waited for.
            reader.join(self.hang_timeout_s)
            if reader.is_alive():
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this job started
                reader.join()
                raise RuntimeError(f"{' '.join(self.cmd)} exited {proc.returncode} but left a process holding its log")
        return Attempt(time.monotonic() - start, proc.returncode, fired[0] if fired else None, "".join(lines))


def _due(line: str, at_step: int) -> bool:
    if at_step == 0:
        return STARTED.search(line) is not None
    found = STEP.search(line)
    return found is not None and int(found.group(1)) >= at_step
