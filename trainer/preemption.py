"""Preemption notices: SIGTERM/SIGINT, and on AWS the IMDSv2 spot `instance-action` endpoint.

SkyPilot forwards neither the cloud's notice nor SIGTERM to the job, so on AWS a background thread
polls the instance metadata service (a 2-minute notice, best effort). Either way the trainer
finishes its current step, checkpoints and exits with the retryable code.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
TOKEN_TTL_S = 300
AWS_IMDS = "http://169.254.169.254"


def imds_url_for(environ: dict[str, str]) -> str | None:
    """AWS's metadata endpoint when SkyPilot says this job runs on AWS, else None.
    SkyPilot exports SKYPILOT_CLUSTER_INFO, a JSON object with the cluster's `cloud`."""
    try:
        cloud = json.loads(environ.get("SKYPILOT_CLUSTER_INFO", "{}")).get("cloud", "")
    except (ValueError, AttributeError):
        return None
    return AWS_IMDS if str(cloud).lower() == "aws" else None


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
    base = base_url.rstrip("/")
    request = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - configured URL
        token = resp.read().decode()
    request = urllib.request.Request(f"{base}/latest/meta-data/spot/instance-action",
                                     headers={"X-aws-ec2-metadata-token": token})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310
            return resp.read().decode() or "instance-action"
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
