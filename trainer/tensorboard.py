"""TensorBoard event files beside W&B, kept in the run's store so they outlive the cluster.

Each process writes its own event file (TensorBoard names it by time, host and process) into a
local folder and copies it to `tensorboard/<scope>/` of the run's store at every checkpoint and
when it closes. A preempted attempt thus leaves exactly the steps up to its last checkpoint in the
store, and the attempt that resumes from that checkpoint writes the steps after it into a new file
beside it: TensorBoard merges a folder's files, so every phase reads as one unbroken run.

    python -m trainer pull-logs --to ./tb && tensorboard --logdir ./tb
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from infra.storage import Store, StoreError

log = logging.getLogger(__name__)
PREFIX = "tensorboard"


class EventLog:
    """Scalars, audio, figures and notes of one scope as TensorBoard events."""

    def __init__(self, run: Store, scope: str):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.prefix = f"{PREFIX}/{scope}"
        self.local = Path(tempfile.mkdtemp(prefix="tensorboard-"))
        # No background flushes on a timer: what reaches the store is decided by sync().
        self.writer = SummaryWriter(log_dir=str(self.local), flush_secs=10**9)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, float(value), step)

    def audio(self, step: int, clips: dict[str, np.ndarray], sample_rate: int) -> None:
        import torch

        for name, clip in clips.items():
            wave = torch.as_tensor(np.clip(np.asarray(clip, np.float32), -1.0, 1.0)).reshape(1, -1)
            self.writer.add_audio(f"audio/{name}", wave, step, sample_rate=sample_rate)

    def figures(self, step: int, figures: dict[str, object]) -> None:
        for name, figure in figures.items():
            self.writer.add_figure(name, figure, step, close=False)

    def note(self, step: int, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, step)

    def sync(self) -> None:
        """Flush and copy this process's event file(s) to the store (replacing the earlier copy)."""
        self.writer.flush()
        for path in sorted(self.local.rglob("events.out.tfevents.*")):
            try:
                self.run.put_file(path, f"{self.prefix}/{path.relative_to(self.local).as_posix()}")
            except StoreError as exc:  # logs must never stop training; the next sync retries
                log.warning("TensorBoard events not uploaded: %s", exc)

    def close(self, sync: bool = True) -> None:
        if sync:
            self.sync()
        self.writer.close()
        shutil.rmtree(self.local, ignore_errors=True)


def pull_events(run: Store, local: Path) -> list[str]:
    """Download every scope's event files of the run into `local` (one folder per scope, as
    `tensorboard --logdir` expects); the scopes found."""
    keys = [k for k in run.list(PREFIX) if "/events.out.tfevents." in k]
    if not keys:
        raise FileNotFoundError(f"no TensorBoard events under {run.uri(PREFIX)}; train a phase first "
                                "(with logging.tensorboard on)")
    for key in keys:
        run.get_file(key, local / key.removeprefix(f"{PREFIX}/"))
    return sorted({k.removeprefix(f"{PREFIX}/").rsplit("/", 1)[0] for k in keys})
