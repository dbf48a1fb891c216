"""A local stand-in for SkyPilot's managed-job recovery, for chaos tests of the trainer.

It runs a command, preempts it at random times the way spot clouds do (SIGTERM with a short grace
before SIGKILL, or SIGKILL with no notice), and restarts it as a managed job would: after a
preemption, or an exit code listed as retryable; never after success or another code. Spend is
simulated as the wall time of every attempt x an hourly price.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from dataclasses import dataclass, field


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
                 preemptions: int, window_s: tuple[float, float], seed: int, grace_s: float = 10.0,
                 hourly_price_usd: float = 0.0, max_attempts: int = 20, timeout_s: float = 600.0):
        self.cmd, self.env, self.retryable = cmd, env, retryable
        self.rng = random.Random(seed)
        self.preemptions_left = preemptions
        self.window_s, self.grace_s = window_s, grace_s
        self.hourly_price_usd, self.max_attempts, self.timeout_s = hourly_price_usd, max_attempts, timeout_s

    def run(self) -> SupervisedRun:
        result = SupervisedRun(hourly_price_usd=self.hourly_price_usd)
        deadline = time.monotonic() + self.timeout_s
        while len(result.attempts) < self.max_attempts:
            attempt = self._attempt(deadline)
            result.attempts.append(attempt)
            if attempt.preempted_by is None and attempt.returncode not in self.retryable:
                return result  # finished, or a final error: a managed job stops here
        raise RuntimeError(f"still not finished after {self.max_attempts} attempts")

    def _attempt(self, deadline: float) -> Attempt:
        preempt_at = None
        kind = None
        if self.preemptions_left > 0:
            preempt_at = self.rng.uniform(*self.window_s)
            kind = self.rng.choice(["SIGTERM", "SIGKILL"])
        start = time.monotonic()
        with subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as proc:
            try:
                _, err = proc.communicate(timeout=preempt_at if preempt_at is not None else
                                          max(1.0, deadline - time.monotonic()))
                return Attempt(time.monotonic() - start, proc.returncode, None, err)
            except subprocess.TimeoutExpired:
                if preempt_at is None:
                    proc.kill()
                    raise
            self.preemptions_left -= 1
            if kind == "SIGTERM":
                proc.send_signal(signal.SIGTERM)
                try:
                    _, err = proc.communicate(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()  # the notice window closed: the instance is gone
                    _, err = proc.communicate()
            else:
                proc.kill()
                _, err = proc.communicate()
            return Attempt(time.monotonic() - start, proc.returncode, kind, err)
