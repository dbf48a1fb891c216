"""The phase trainer: one class, a loop you can read top to bottom.

    trainer = PhaseTrainer(settings, phase=2)
    trainer.setup()          # model + adapter, optimizer, schedule, data; resumes if it can
    code = trainer.train()   # exit code (trainer.exit_codes)
    trainer.cleanup()

The same command starts or resumes a phase: setup() restores the newest complete checkpoint of
the phase (adapter, optimizer, scheduler, RNG states, data position, step), so a resumed run ends
with the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from infra.settings import Settings
from infra.storage import Store
from preprocess.shards import dataset_prefix, read_data_manifest
from trainer import exit_codes
from trainer.checkpoint import Checkpoints, fetch_adapter, publish_adapter
from trainer.data import ShardStream
from trainer.loss import build_batch, weighted_csm_loss
from trainer.model import (
    base_model_source,
    check_codec_fits,
    load_base,
    trainable_parameters,
    with_adapter,
    with_new_adapter,
)

log = logging.getLogger(__name__)


class PhaseTrainer:
    def __init__(self, settings: Settings, phase: int, speaker: str | None = None,
                 max_steps: int | None = None, checkpoint_every: int | None = None, progress: bool = True):
        if phase not in (1, 2, 3, 4):
            raise ValueError(f"phase must be 1, 2, 3 or 4, got {phase}")
        if (phase == 4) != (speaker is not None):
            raise ValueError("phase 4 trains one adapter per speaker: give a speaker (and only for phase 4)")
        self.settings = settings
        self.phase = phase
        self.speaker = speaker
        self.plan = settings.train.phases[phase]
        self.max_steps = max_steps or self.plan.max_steps
        if self.plan.warmup_steps >= self.max_steps:
            log.info("warmup %d >= %d steps: warming up for %d", self.plan.warmup_steps, self.max_steps,
                     self.max_steps // 10)
        self.warmup_steps = self.plan.warmup_steps if self.plan.warmup_steps < self.max_steps else self.max_steps // 10
        self.checkpoint_every = checkpoint_every or settings.train.checkpoint_every
        self.progress = progress
        self.scope = f"phase{phase}" + (f"/{speaker}" if speaker else "")
        self.step = 0
        self.losses: list[float] = []  # total loss of each step this process ran
        self._stop_signal: int | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        self.run = Store.from_settings(s).child(s.run_prefix)
        self.workdir = Path(tempfile.mkdtemp(prefix="suara-train-"))
        data = read_data_manifest(self.run)
        self.speaker_index = {spk: i for i, spk in enumerate(data["speakers"])}
        if self.speaker is not None and self.speaker not in self.speaker_index:
            raise ValueError(f"speaker {self.speaker!r} is not in the data (speakers: {data['speakers']})")
        self.checkpoints = Checkpoints(self.run, self.scope, s.train.keep_last_checkpoints)

        _seed_everything(s.seed + self.phase)
        base, self.tokenizer = load_base(s)
        check_codec_fits(base, data["codec"])
        self.device = next(base.parameters()).device
        restored = self.checkpoints.restore_latest(self.workdir)
        if restored is not None:
            self.model = with_adapter(base, restored.directory / "adapter", trainable=True)
            self._log_setting_changes(restored.state)
        elif self.phase == 1:
            self.model = with_new_adapter(base, s)
        else:
            previous = self.workdir / "previous-adapter"
            fetch_adapter(self.run, self.phase - 1, None, previous)
            self.model = with_adapter(base, previous, trainable=True)
        self.model.train()

        params = trainable_parameters(self.model)
        self.optimizer = torch.optim.AdamW(params, lr=self.plan.lr, weight_decay=s.train.weight_decay)
        from transformers import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, self.warmup_steps, self.max_steps)
        self.stream = ShardStream(self.run, dataset_prefix(self.phase, "train", self.speaker),
                                  self.plan.batch_size, s.seed + self.phase, s.cache_dir / "streaming")
        if restored is not None:
            training = torch.load(restored.directory / "training_state.pt", weights_only=True)
            self.optimizer.load_state_dict(training["optimizer"])
            self.scheduler.load_state_dict(training["scheduler"])
            self.stream.load_state_dict(restored.state["loader"])
            _set_rng_state(torch.load(restored.directory / "rng.pt", weights_only=False))
            self.step = restored.step
            log.info("resumed %s from step %d", self.scope, self.step)
        self._batches = self.stream.batches()
        self.n_trainable = sum(p.numel() for p in params)

    def _log_setting_changes(self, state: dict[str, Any]) -> None:
        then = state.get("settings", {}).get("train", {})
        now = self.settings.model_dump(mode="json")["train"]
        if then and then != now:
            log.warning("training settings differ from the checkpoint's; the current settings win")

    # -- train ---------------------------------------------------------------------------------
    def train(self) -> int:
        if self.step >= self.max_steps:
            log.info("%s already trained to step %d", self.scope, self.step)
            self.publish()
            return exit_codes.FINISHED
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=self.max_steps, initial=self.step, desc=f"train {self.scope}", unit="step",
                   disable=not self.progress)
        try:
            last_saved = self.step
            while self.step < self.max_steps:
                t0 = time.perf_counter()
                samples = next(self._batches)
                batch = build_batch(samples, self.tokenizer, self.model.config, self.speaker_index).to(self.device)
                parts = weighted_csm_loss(self.model, batch, self.settings.train.depth_decoder_frame_ratio)
                parts.loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable_parameters(self.model),
                                                           self.settings.train.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.losses.append(parts.loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{self.losses[-1]:.3f}", c0=f"{parts.backbone.item():.3f}",
                                lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                gnorm=f"{float(grad_norm):.2f}", sps=f"{len(samples) / (time.perf_counter() - t0):.1f}")
                if self.step % self.settings.train.log_every == 0:
                    log.debug("step %d loss %.4f", self.step, parts.loss.item())
                if self._stop_signal is not None:
                    self.save_checkpoint()
                    log.warning("stopped by signal %d at step %d after a checkpoint; run again to resume",
                                self._stop_signal, self.step)
                    return exit_codes.PREEMPTED
                if self.step % self.checkpoint_every == 0:
                    self.save_checkpoint()
                    last_saved = self.step
            if last_saved != self.step:
                self.save_checkpoint()
            self.publish()
            return exit_codes.FINISHED
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request_stop(self, signum: int, _frame: Any) -> None:
        # Finish the current step, checkpoint, exit: the loop checks this after each step.
        self._stop_signal = signum

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> str:
        local = Path(tempfile.mkdtemp(prefix="ckpt-", dir=self.workdir))
        try:
            self.model.save_pretrained(local / "adapter")
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       local / "training_state.pt")
            torch.save(_get_rng_state(), local / "rng.pt")
            state = {
                "step": self.step,
                "phase": self.phase,
                "speaker": self.speaker,
                "seed": self.settings.seed,
                "max_steps": self.max_steps,
                "loader": self.stream.state_dict(),
                "settings": self.settings.model_dump(mode="json"),
            }
            (local / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
            uri = self.checkpoints.save(self.step, local)
            log.info("checkpoint %s", uri)
            return uri
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def publish(self) -> str:
        """Publish the final adapter of this phase (or speaker) under adapters/."""
        local = self.workdir / "final-adapter"
        shutil.rmtree(local, ignore_errors=True)
        self.model.save_pretrained(local)
        info = {
            "base_model": self.settings.model if self.settings.model != "tiny" else "tiny",
            "base_model_source": base_model_source(self.settings),
            "steps": self.step,
            "seed": self.settings.seed,
            "speakers": self.speaker_index,
            "run_id": self.settings.run_id,
        }
        uri = publish_adapter(self.run, local, self.phase, self.speaker, info)
        self.adapter_uri = uri
        return uri

    def cleanup(self) -> None:
        if hasattr(self, "stream"):
            self.stream.close()
        if hasattr(self, "workdir"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _get_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def speakers_of(settings: Settings) -> list[str]:
    run = Store.from_settings(settings).child(settings.run_prefix)
    return list(read_data_manifest(run)["speakers"])
