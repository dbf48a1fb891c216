"""Weights & Biases logging: online when asked for (logging.wandb_mode, `online` in the task files)
and WANDB_API_KEY is set, offline otherwise; one run id per training scope for life; and the same
figures as TensorBoard events in the run's store (trainer/tensorboard.py).

The run id is stored in every checkpoint, so a resumed phase appends to the same W&B run. An
offline run's files are uploaded to the store (`runs/<run_id>/wandb/<scope>/`) when the logger
closes, so they outlive the cloud instance (`wandb sync` them from a copy). WANDB_DIR is honoured.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

import numpy as np

from infra.settings import Settings
from infra.storage import Store

log = logging.getLogger(__name__)
RETRIES = 5
RETRY_WAIT_S = 2.0


class RunLogger:
    def __init__(self, settings: Settings, scope: str, run_id: str | None, upload_to: Store | None = None,
                 environ: dict[str, str] | None = None):
        environ = dict(os.environ) if environ is None else environ
        mode = settings.logging.wandb_mode
        self.run = None
        self.upload_to, self.scope = upload_to, scope
        self.events = None
        if settings.logging.tensorboard:
            from trainer.tensorboard import EventLog

            self.events = EventLog(Store.for_run(settings), scope)
        if mode == "disabled":
            # Importing W&B costs seconds of start-up (instance time after every preemption).
            self.run_id = run_id or secrets.token_hex(4)
            return
        import wandb

        self._wandb = wandb
        # Online when asked for (the task files do) and a key is given; offline without one. Never
        # fail a training job over logging.
        if mode == "online" and not environ.get("WANDB_API_KEY"):
            mode = "offline"
        self.mode = mode
        run_id = run_id or wandb.util.generate_id()
        # Offline runs stay on disk for `wandb sync` (WANDB_DIR, else cache_dir, /wandb/offline-run-*).
        wandb_dir = Path(environ.get("WANDB_DIR") or settings.cache_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(RETRIES + 1):
            try:
                self.run = wandb.init(
                    project=settings.logging.wandb_project, name=f"{settings.run_id}/{scope}", id=run_id,
                    resume="allow", mode=mode if attempt < RETRIES else "disabled", dir=str(wandb_dir),
                    config=settings.model_dump(mode="json"), settings=wandb.Settings(silent=True, console="off"),
                )
                break
            except Exception as exc:  # noqa: BLE001 - logging must never stop training
                # After a hard kill the old process's W&B service may hold the run id for a moment.
                log.warning("W&B init failed (%s); retrying in %.0f s", exc, RETRY_WAIT_S)
                time.sleep(RETRY_WAIT_S)
        if attempt == RETRIES:
            log.warning("W&B logging disabled for this attempt: run id %s stayed unavailable", run_id)
        self.run_id = run_id

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(values, step=step)
        if self.events is not None:
            self.events.scalars(step, values)

    def note(self, step: int, tag: str, text: str, summary: dict[str, float | int] | None = None) -> None:
        """An event worth a sentence (early stopping): TensorBoard text, and the W&B run's summary."""
        if self.events is not None:
            self.events.note(step, tag, text)
        if self.run is not None:
            self.run.summary[tag] = text
            for key, value in (summary or {}).items():
                self.run.summary[key] = value

    def log_audio(self, step: int, clips: dict[str, np.ndarray], sample_rate: int) -> None:
        if self.events is not None:
            self.events.audio(step, clips, sample_rate)
        if self.run is not None:
            self.run.log({f"audio/{name}": self._wandb.Audio(audio, sample_rate=sample_rate)
                          for name, audio in clips.items()}, step=step)

    def log_figures(self, step: int, figures: dict[str, object]) -> None:
        """Matplotlib figures as W&B images (the evaluation report's plots)."""
        if self.events is not None:
            self.events.figures(step, figures)
        if self.run is not None:
            self.run.log({name: self._wandb.Image(fig) for name, fig in figures.items()}, step=step)

    def sync(self) -> None:
        """Copy the TensorBoard events so far to the store (the trainer calls it at each checkpoint)."""
        if self.events is not None:
            self.events.sync()

    def close(self, sync: bool = True) -> None:
        """`sync=False`: drop events logged since the last sync (a trainer's steps after its last
        checkpoint, which the attempt that resumes from it will log again)."""
        if self.events is not None:
            if sync:
                self.events.sync()
            self.events.close(sync=False)
        if self.run is None:
            return
        run_dir = Path(self.run.dir).parent  # .../wandb/offline-run-<time>-<id>
        self.run.finish(quiet=True)
        if self.mode == "offline" and self.upload_to is not None:
            self.upload_offline_run(run_dir)

    def upload_offline_run(self, run_dir: Path) -> None:
        """Copy the offline run's files to the store; a failure is logged, never raised."""
        target = self.upload_to.child(self.scope.replace("/", "__")).child(run_dir.name)
        try:
            files = [p for p in run_dir.rglob("*") if p.is_file()]
            for path in files:
                target.put_file(path, str(path.relative_to(run_dir)))
            log.info("offline W&B run (%d files) uploaded to %s; `wandb sync` a copy to publish it", len(files),
                     target.url)
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            log.warning("could not upload the offline W&B run %s: %s", run_dir, exc)


