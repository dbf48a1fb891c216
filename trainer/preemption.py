"""Preemption notices: SIGTERM/SIGINT, and on AWS the IMDSv2 spot `instance-action` endpoint.

SkyPilot forwards neither the cloud's notice nor SIGTERM to the job, so on AWS a background thread
polls the instance metadata service (a 2-minute notice, best effort). Either way the trainer
finishes its current step, checkpoints and exits with the retryable code.
"""

from __future__ import annotations

import logging
import signal
import threading
import urllib.error
from collections.abc import Callable
from typing import Any

from infra.price import AWS_IMDS, imds_get, imds_token, imds_url_for  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


class StopRequest:
    """A flag set by a signal handler or the notice poller and read by the training loop."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, lambda signum, _f: self.set(f"signal {signum}"))

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def spot_notice(base_url: str, timeout_s: float = 2.0) -> str | None:
    """The pending spot action ("terminate at ..."), or None. IMDSv2: token first, then the read."""
    token = imds_token(base_url, timeout_s)
    try:
        return imds_get(base_url, "spot/instance-action", token, timeout_s) or "instance-action"
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # no interruption scheduled
            return None
        raise


class NoticePoller:
    """Polls `spot_notice` every `interval_s` in a daemon thread and sets `stop` when one appears."""

    def __init__(self, base_url: str, interval_s: float, stop: StopRequest,
                 check: Callable[[str], str | None] = spot_notice):
        self.base_url, self.interval_s, self.stop, self.check = base_url, interval_s, stop, check
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spot-notice", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                notice = self.check(self.base_url)
            except (OSError, urllib.error.URLError) as exc:
                log.debug("spot notice poll failed: %s", exc)
                notice = None
            if notice:
                log.warning("spot interruption notice: %s", notice)
                self.stop.set(f"spot notice {notice}")
                return
            self._done.wait(self.interval_s)
