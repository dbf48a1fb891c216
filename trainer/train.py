"""The phase trainer: one class, a loop you can read top to bottom.

    trainer = PhaseTrainer(settings, phase=2)
    trainer.setup()          # model + adapter, optimizer, schedule, data, fence, budget; resumes
    code = trainer.train()   # an exit code (trainer/exit_codes.py)
    trainer.cleanup()

The same command starts or resumes a phase: setup() restores the newest complete checkpoint of
the scope (weights, optimizer, scheduler, RNG states, data position, step, spend, W&B run id,
early-stopping progress), so a resumed run ends with the same adapter as an uninterrupted one.

A step is one optimizer step over the phase's `batch_size` samples, forwarded as
`gradient_accumulation_steps` micro-batches whose gradients add up to the whole batch's. Everything
else (logging, validation, checkpoints, budget checks, preemption stops) happens between steps,
never between micro-batches: a checkpoint never holds half-accumulated gradients.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infra.settings import Settings
from infra.storage import Store
from preprocess.shards import ShardSample, dataset_prefix, read_data_manifest
from trainer import exit_codes
from trainer.budget import BudgetGuard, read_ledger
from trainer.checkpoint import (
    EARLY_STOPPING_PIN,
    CheckpointError,
    Checkpoints,
    Restored,
    fetch_adapter,
    is_incomplete,
    publish_adapter,
)
from trainer.data import Drawn, Position, Prefetcher, ShardStream, first_samples, micro_batches
from trainer.early_stopping import EarlyStopping, Verdict
from trainer.fence import Fence, Fenced
from trainer.logger import RunLogger
from trainer.loss import IGNORE, Batch, LossParts, build_batch, csm_parts, turn_ids, weighted_csm_loss
from trainer.model import (
    backend,
    base_model_source,
    check_codec_fits,
    load_trainable,
    make_optimizer,
    trainable_parameters,
)
from trainer.monitor import Monitor, StepResult
from trainer.preemption import NoticePoller, StopRequest
from trainer.validation import CATEGORIES, category_loss
from trainer.watchdog import Watchdog

log = logging.getLogger(__name__)
# Validation categories: (name, dataset phase, which frames count); see trainer/validation.py.
VAL_CATEGORIES = tuple((c.name, c.phase, c.frames) for c in CATEGORIES)
# What a validation logs, and what early stopping can watch: val/loss is the categories' mean.
VALIDATION_FIGURES = ("val/loss", *(f"val/{name}" for name, _, _ in VAL_CATEGORIES), "val/mcd")
# Fixed prompts for audio samples: Malay, English, code-switched, and each common particle.
AUDIO_PROMPTS = {
    "malay": "Selamat pagi, apa khabar hari ini?",
    "english": "I want to go shopping this weekend.",
    "code_switched": "Saya nak go to the kedai sekejap.",
    **{f"particle_{p}": f"Okay {p}, I go first." for p in ("lah", "leh", "lor", "meh", "mah", "loh", "hor")},
}


@dataclass
class Prepared:
    """A step's batch built ahead of it, one `Batch` per micro-batch (a single one without gradient
    accumulation), and where the data stream stands once it is trained on."""

    batches: list[Batch]
    position: Position


class PhaseTrainer:
    def __init__(self, settings: Settings, phase: int, speaker: str | None = None,
                 max_steps: int | None = None, checkpoint_every: int | None = None, progress: bool = True,
                 clock: Callable[[], float] = time.monotonic, started_at: float | None = None,
                 allow_incomplete: bool = False):
        if phase not in (1, 2, 3, 4):
            raise ValueError(f"phase must be 1, 2, 3 or 4, got {phase}")
        if (phase == 4) != (speaker is not None):
            raise ValueError("phase 4 trains one adapter per speaker: give a speaker (and only for phase 4)")
        self.settings = settings
        self.phase = phase
        self.speaker = speaker
        self.plan = settings.train.phases[phase]
        self.max_steps = max_steps or self.plan.max_steps
        self.warmup_steps = min(self.plan.warmup_steps, self.max_steps // 10)
        if self.warmup_steps != self.plan.warmup_steps:
            log.info("warmup %d of %d steps is too long: warming up for %d", self.plan.warmup_steps,
                     self.max_steps, self.warmup_steps)
        self.checkpoint_every = checkpoint_every or settings.train.checkpoint_every
        self.progress = progress
        self.clock = clock
        self.started_at = started_at  # process start: model loading is paid for too
        self.allow_incomplete = allow_incomplete  # may start from a previous phase that stopped early
        self.scope = f"phase{phase}" + (f"/{speaker}" if speaker else "")
        self.micro_batch_size = self.plan.micro_batch_size
        self.early_stopping = EarlyStopping.from_settings(self.plan.early_stopping) \
            if self.plan.early_stopping else None
        if self.early_stopping and self.early_stopping.metric not in VALIDATION_FIGURES:
            raise ValueError(
                f"train.phases.{phase}.early_stopping.metric {self.early_stopping.metric!r} is not a figure "
                f"validation produces; use one of {', '.join(VALIDATION_FIGURES)}")
        self.step = 0
        self.stop = StopRequest()
        self.adapter_uri: str | None = None
        self.monitor: Monitor | None = None
        # The loop holds the lock while it changes training state; a stalled job is checkpointed
        # by the watchdog only when the stall is outside it (waiting for data), never half a step.
        self._state_lock = threading.Lock()
        self.watchdog = Watchdog(settings.train.stall_timeout_s, self._emergency_checkpoint)

    @property
    def losses(self) -> list[torch.Tensor]:
        """The total loss of each step this process ran."""
        return self.monitor.losses if self.monitor else []

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build the phase's objects in dependency order; each needs the ones before it.

        1. the run: its data manifest, speakers and checkpoints (nothing written yet);
        2. the RNGs seeded, then the weights to start from: the newest complete checkpoint, else the
           previous phase's adapter (a fresh LoRA adapter draws its initial values from the torch
           RNG, so seeding comes first);
        3. the model with those weights, then its optimizer and LR schedule, then the data stream;
        4. on resume, the saved optimizer, schedule, data position and RNG states (after 3 exists;
           the RNGs last, so nothing built after them draws from them);
        5. the fence, claimed after every read and before the first write;
        6. the budget (it writes the ledger), the logger and the validation samples.
        """
        self._open_run()
        restored, weights = self._starting_point()
        self._build_model(weights)
        self._build_optimizer()
        self._build_data()
        state = self._resume(restored)
        self._claim_fence()
        self._open_budget(state)
        self.logger = RunLogger(self.settings, self.scope, state.get("wandb_run_id"), upload_to=self.run.child("wandb"))
        self.validation = self._load_validation()
        self._check_early_stopping_data()

    def _open_run(self) -> None:
        self.run = Store.for_run(self.settings)
        self.workdir = Path(tempfile.mkdtemp(prefix="suara-train-"))
        self.data = read_data_manifest(self.run)
        self.speaker_index = {spk: i for i, spk in enumerate(self.data["speakers"])}
        if self.speaker is not None and self.speaker not in self.speaker_index:
            raise ValueError(f"speaker {self.speaker!r} is not in the data (speakers: {self.data['speakers']})")
        t = self.settings.train
        self.checkpoints = Checkpoints(self.run, self.scope, t.keep_last_checkpoints, t.keep_best_checkpoints,
                                       t.best_metric)

    def _starting_point(self) -> tuple[Restored | None, Path | None]:
        """The checkpoint to resume (if any) and the weights to load: its own, the previous phase's
        adapter, or none (phase 1 starts from the base with a fresh adapter)."""
        _seed_everything(self.settings.seed + self.phase)
        restored = self.checkpoints.restore_latest(self.workdir)
        if restored is not None:
            self._log_setting_changes(restored.state)
            return restored, restored.directory / "weights"
        if self.phase == 1:
            return None, None
        weights = self.workdir / "previous"
        previous = fetch_adapter(self.run, self.phase - 1, None, weights)
        if is_incomplete(previous):
            if not self.allow_incomplete:
                raise ValueError(
                    f"phase {self.phase - 1}'s adapter is incomplete ({previous.get('steps')} steps: its run stopped "
                    f"early, e.g. at a budget cap); finish it (python -m trainer train --phase {self.phase - 1} with "
                    "more budget) or start from it anyway with --allow-incomplete")
            log.warning("starting from phase %d's incomplete adapter (%s steps), as asked", self.phase - 1,
                        previous.get("steps"))
        mode = self.settings.train.mode
        if previous.get("mode", "lora") != mode:
            raise ValueError(f"phase {self.phase - 1} was trained in {previous.get('mode', 'lora')} mode but "
                             f"train.mode is {mode}; use one mode for every phase of a run")
        return None, weights

    def _build_model(self, weights: Path | None) -> None:
        self.model, self.tokenizer = load_trainable(self.settings, weights)
        check_codec_fits(self.model, self.data["codec"])
        self.device = next(self.model.parameters()).device
        self.model.train()
        self.params = trainable_parameters(self.model)
        self.backend = backend(self.settings)
        log.info("%s: %s backend, %s mode, %d trainable parameters", self.scope, self.backend,
                 self.settings.train.mode, sum(p.numel() for p in self.params))

    def _build_optimizer(self) -> None:
        from transformers import get_cosine_schedule_with_warmup

        self.optimizer = make_optimizer(self.settings, self.params, self.plan.lr)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, self.warmup_steps, self.max_steps)

    def _build_data(self) -> None:
        s = self.settings
        # Batches are drawn and built on the prefetch thread, with a tokenizer of its own (a fast
        # tokenizer is not meant to be shared between threads).
        self._data_tokenizer = copy.deepcopy(self.tokenizer) if s.train.prefetch_batches else self.tokenizer
        # frame_budget bounds one forward pass (a micro-batch); a step's batch holds k of them.
        budget = s.train.frame_budget and s.train.frame_budget * self.plan.gradient_accumulation_steps
        self.stream = ShardStream(self.run, self._streams(), self.plan.batch_size, s.seed + self.phase,
                                  s.cache_dir / "streaming", window_batches=s.train.bucket_window_batches,
                                  frame_budget=budget, length=self._row_length,
                                  context_share=s.train.context_share)

    def _row_length(self, sample: ShardSample) -> int:
        """Sequence positions a sample takes as a target turn: its prompt tokens, frames, audio EOS."""
        speaker = self.speaker_index[sample.speaker_id]
        return len(turn_ids(self._data_tokenizer, self.model.config, speaker, sample.normalized)) + sample.frames + 1

    def _prepare(self, drawn: Drawn) -> Prepared:
        """A drawn batch as model inputs on the host (pinned on CUDA, for an asynchronous copy): one
        built batch per micro-batch of <= micro_batch_size rows within frame_budget, in the drawn
        order. The contexts were drawn for the whole batch, so any split trains on the same rows."""
        def row(pair: tuple[ShardSample, ShardSample | None]) -> int:  # a context turn lengthens its row
            target, context = pair
            return self._row_length(target) + (self._row_length(context) if context is not None else 0)

        batches = []
        rows = list(zip(drawn.samples, drawn.contexts, strict=True))
        for chunk in micro_batches(rows, self.micro_batch_size, self.settings.train.frame_budget, row):
            batch = build_batch([target for target, _ in chunk], self._data_tokenizer, self.model.config,
                                self.speaker_index, self.plan.particle_weight, self.plan.switch_weight,
                                contexts=[context for _, context in chunk])
            batches.append(batch.pin_memory() if self.device.type == "cuda" else batch)
        return Prepared(batches, drawn.position)

    def _resume(self, restored: Restored | None) -> dict[str, Any]:
        """Restore the training state saved with the checkpoint; its state.json (empty when fresh)."""
        if restored is not None:
            training = torch.load(restored.directory / "training_state.pt", weights_only=True)
            self.optimizer.load_state_dict(training["optimizer"])
            self.scheduler.load_state_dict(training["scheduler"])
            self.stream.load_state_dict(restored.state["loader"])
            _set_rng_state(torch.load(restored.directory / "rng.pt", weights_only=False))
            self.step = restored.step
            log.info("resumed %s from step %d", self.scope, self.step)
        # The prefetch thread runs ahead; checkpoints record the position of the last batch trained on.
        self._position = self.stream.state_dict()
        self._batches = Prefetcher(self.stream.drawn(), self._prepare, self.settings.train.prefetch_batches)
        state = restored.state if restored is not None else {}
        if self.early_stopping is not None:
            self.early_stopping.load_state_dict(state.get("early_stopping"))
        self.seconds_per_step = state.get("seconds_per_step")
        return state

    def _claim_fence(self) -> None:
        # Only the newest instance may write; claim after reading, before any write.
        self.fence = Fence(self.run, self.scope)
        self.fence.claim()

    def _open_budget(self, state: dict[str, Any]) -> None:
        ledger = read_ledger(self.run)
        self.budget = BudgetGuard(
            settings=self.settings.budget, scope=self.scope, phase_cap_usd=self.plan.max_cost_usd,
            spent_before=max(float(state.get("spent_usd", 0.0)), ledger.get(self.scope, 0.0)),
            spent_elsewhere=sum(v for k, v in ledger.items() if k != self.scope), clock=self.clock,
            started_at=self.started_at,
        )
        self.startup_s = self.budget.elapsed_s
        self.budget.write_ledger(self.run, self.step, self.startup_s)  # paid for even if killed next

    def _streams(self) -> list[tuple[str, float]]:
        own = dataset_prefix(self.phase, "train", self.speaker)
        share = self.plan.replay_share
        earlier = [dataset_prefix(p, "train") for p in range(1, min(self.phase, 4))
                   if f"phase{p}/train" in self.data["buckets"]] if self.phase in (2, 3) else []
        if share == 0 or not earlier:
            return [(own, 1.0)]
        return [(own, 1.0 - share)] + [(prefix, share / len(earlier)) for prefix in earlier]

    def _load_validation(self) -> dict[str, list[ShardSample]]:
        if self.settings.logging.val_every == 0 and not self.settings.train.keep_best_checkpoints:
            return {}
        count = self.settings.logging.val_batches * self.plan.batch_size
        cache = self.settings.cache_dir / "streaming"
        return {name: samples for name, phase, _ in VAL_CATEGORIES
                if (samples := first_samples(self.run, dataset_prefix(phase, "val"), count, cache))}

    def _check_early_stopping_data(self) -> None:
        """Early stopping on a figure this run cannot produce would silently never stop."""
        metric = self.early_stopping.metric if self.early_stopping else None
        if metric is None or metric in ("val/loss", "val/mcd") and self.validation:
            return
        if metric.removeprefix("val/") not in self.validation:
            raise ValueError(f"early stopping watches {metric}, but this run has no validation samples for it "
                             f"(categories with data: {', '.join(self.validation) or 'none'}); pick another "
                             f"train.phases.{self.phase}.early_stopping.metric")

    def _log_setting_changes(self, state: dict[str, Any]) -> None:
        then = state.get("settings", {}).get("train", {})
        now = self.settings.model_dump(mode="json")["train"]
        if then and then != now:
            log.warning("training settings differ from the checkpoint's; the current settings win")

    # -- train ---------------------------------------------------------------------------------
    def train(self) -> int:
        """Train to the phase's last step, or until stopped; an exit code (trainer/exit_codes.py)."""
        if self.early_stopping is not None and self.early_stopping.stopped_at is not None:
            log.info("%s stopped early at step %d: %s", self.scope, self.early_stopping.stopped_at,
                     self.early_stopping.summary())
            self.publish_best()
            return exit_codes.FINISHED
        if self.step >= self.max_steps:
            log.info("%s already trained to step %d", self.scope, self.step)
            self.publish()
            return exit_codes.FINISHED
        estimate = (self.seconds_per_step or self.settings.budget.seconds_per_step_estimate) * self.checkpoint_every
        refusal = self.budget.cannot_afford(estimate)
        if refusal:
            log.error("budget: %s; not starting", refusal)
            return exit_codes.BUDGET_EXHAUSTED

        self.monitor = Monitor(self.scope, self.step, self.max_steps, self.settings.train.log_every, self.logger,
                               self.budget, self.model.config.codec_config.frame_rate, self.device,
                               self.seconds_per_step, self.progress)
        self._last_saved, self._last_heartbeat = self.step, self.clock()
        try:
            with self._listening_for_stops(), self._watched():
                while self.step < self.max_steps:
                    prepared = self.next_batch()
                    with self._state_lock:
                        result = self.train_step(prepared.batches)
                        self._position = prepared.position.as_dict()
                        self.step += 1
                        self.monitor.record(self.step, result)
                        verdict = self._side_trips()
                        code = self._stopped()
                        if code is not None:
                            return code
                        if verdict is Verdict.STOP:
                            return self._stop_early()
                        self._checkpoint_or_heartbeat(now=verdict is Verdict.IMPROVED)
                        self._progressed()
                with self._state_lock:
                    return self._finish()
        except Fenced as exc:
            log.error("%s", exc)
            return exit_codes.FENCED
        finally:
            self.monitor.close()

    def next_batch(self) -> Prepared:
        """The next step's micro-batches, built ahead on the prefetch thread (or now, with prefetch off)."""
        return next(self._batches)

    def train_step(self, batches: list[Batch]) -> StepResult:
        """One optimizer step on a step's built micro-batches: forward and backward each, clip, update,
        schedule."""
        started = time.perf_counter()
        parts, rows, frames = self.accumulate_gradients(batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(parts, grad_norm, self.scheduler.get_last_lr()[0], rows, frames,
                          time.perf_counter() - started)

    def accumulate_gradients(self, batches: list[Batch]) -> tuple[LossParts, int, int]:
        """The gradient of the whole batch's loss, in `.grad`, a built micro-batch at a time; the
        batch's loss parts, its rows and its target frames.

        The loss divides by the batch's target positions (trainer/loss.py), so micro-batch i's loss,
        divided by its own n_i, is scaled by n_i / sum(n): the summed gradients are then those of
        the whole batch in one pass, up to float rounding and padding. (With
        depth_decoder_frame_ratio < 1 the depth term's random frame subset is drawn per micro-batch.)
        One micro-batch is the plain step, unscaled.
        """
        # Counted on the host copies: reading them back from the device would wait for it.
        positions = [_target_positions(batch) for batch in batches] if len(batches) > 1 else [1]
        total = max(sum(positions), 1)
        scaled: list[LossParts] = []
        for i, (batch, n) in enumerate(zip(batches, positions, strict=True), 1):
            batch = batch.to(self.device, non_blocking=self.device.type == "cuda")
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                parts = weighted_csm_loss(self.model, batch, self.settings.train.depth_decoder_frame_ratio)
            if len(batches) == 1:
                parts.loss.backward()
                scaled.append(parts)
            else:
                share = n / total
                (parts.loss * share).backward()
                scaled.append(_scaled(parts, share))
            self._fault_after_micro_batch(i)
        return _summed(scaled), sum(b.rows for b in batches), sum(b.num_frames for b in batches)

    def _fault_after_micro_batch(self, index: int) -> None:
        faults = self.settings.faults
        if faults.sigkill_at_step == self.step + 1 and faults.sigkill_after_micro_batch == index:
            log.warning("fault injection: SIGKILL after micro-batch %d of step %d", index, self.step + 1)
            os.kill(os.getpid(), signal.SIGKILL)

    def _side_trips(self) -> Verdict | None:
        """Validation (and early stopping's verdict on it) and audio samples, when due."""
        every = self.settings.logging
        verdict = None
        if every.val_every and self.step % every.val_every == 0:
            self._validation_at = (self.step, self.validate())
            figures = _with_mean(self._validation_at[1])
            if self.early_stopping is not None and self.early_stopping.metric == "val/mcd":
                figures["val/mcd"] = self._validation_mcd()
            figures = {k: v for k, v in figures.items() if v is not None}
            self.logger.log(self.step, figures)
            if self.early_stopping is not None:
                verdict = self.early_stopping.observe(self.step, figures)
        if every.audio_every and self.step % every.audio_every == 0:
            self._log_audio()
        return verdict

    def _stopped(self) -> int | None:
        """A preemption notice or an exhausted budget: checkpoint, say so, and the exit code."""
        if self.stop.reason is not None:
            self.save_checkpoint(score=False)  # no time to score: the instance is going away
            log.warning("stopped by %s at step %d after a checkpoint; run again to resume", self.stop.reason, self.step)
            return exit_codes.PREEMPTED
        exhausted = self.budget.exhausted()
        if exhausted:
            self.save_checkpoint(score=False)
            self.publish()
            log.error("budget exhausted: %s; stopped at step %d with a checkpoint and the adapter so far at %s",
                      exhausted, self.step, self.adapter_uri)
            return exit_codes.BUDGET_EXHAUSTED
        return None

    def _checkpoint_or_heartbeat(self, now: bool = False) -> None:
        """A checkpoint every `checkpoint_every` steps (and `now`: a new best for early stopping);
        between them, the ledger every `heartbeat_s` so spend since the last checkpoint survives a
        preemption."""
        if now or self.step % self.checkpoint_every == 0:
            self.save_checkpoint()
            self._last_saved, self._last_heartbeat = self.step, self.clock()
        elif self.clock() - self._last_heartbeat >= self.settings.budget.heartbeat_s:
            self.fence.check()
            self.budget.write_ledger(self.run, self.step, self.startup_s)
            self._last_heartbeat = self.clock()

    def _stop_early(self) -> int:
        """The watched figure stopped improving: checkpoint where training stopped (final, so a rerun
        finds the phase done), publish the best step's checkpoint as the adapter, say so."""
        stopping = self.early_stopping
        message = (f"early stopping at step {self.step} of {self.max_steps}: {stopping.summary()}; "
                   f"step {stopping.best_step}'s checkpoint is the phase's adapter")
        self.logger.log(self.step, {"early_stopping/stopped_at": self.step, "early_stopping/best_step":
                                    stopping.best_step, "early_stopping/best_value": stopping.best_value})
        self.logger.note(self.step, "early_stopping", message,
                         {"early_stopping/stopped_at": self.step, "early_stopping/best_step": stopping.best_step})
        self.save_checkpoint(final=True, score=False)
        self.publish_best()
        log.warning("%s %s, published at %s", self.scope, message, self.adapter_uri)
        return exit_codes.FINISHED

    def _progressed(self) -> None:
        """A step finished: tell the watchdog."""
        self.watchdog.progress()

    @contextmanager
    def _watched(self) -> Iterator[None]:
        self.watchdog.start()
        try:
            yield
        finally:
            self.watchdog.close()

    def _emergency_checkpoint(self) -> None:
        """Called by the watchdog from its own thread while the loop is stuck. Between steps (waiting
        for data) the state is whole: save it, and keep the lock so the loop cannot move on. Inside
        a step or a write it is not: save only the spend."""
        if not self._state_lock.acquire(blocking=False):
            log.error("stalled inside a step or a write: no consistent state to checkpoint")
            self.budget.write_ledger(self.run, self.step, self.startup_s)
            return
        if self._last_saved == self.step:  # nothing new since the last checkpoint (or the start)
            self.budget.write_ledger(self.run, self.step, self.startup_s)
            return
        # No scoring: the loop is stuck and scoring would run the model from this thread.
        uri = self.save_checkpoint(score=False)
        log.warning("emergency checkpoint %s at step %d", uri, self.step)

    def _finish(self) -> int:
        if self._last_saved != self.step:
            self.save_checkpoint(final=True)
        else:
            self.checkpoints.mark_final(self.step)
        self.publish()
        return exit_codes.FINISHED

    @contextmanager
    def _listening_for_stops(self) -> Iterator[None]:
        """SIGTERM/SIGINT and, on AWS, the spot notice set `self.stop` while training runs."""
        self.stop.install_signal_handlers()
        poller = None
        if self.settings.preemption.imds_url:
            poller = NoticePoller(self.settings.preemption.imds_url, self.settings.preemption.imds_poll_s, self.stop)
            poller.start()
        try:
            yield
        finally:
            if poller is not None:
                poller.close()
            self.stop.restore_signal_handlers()

    # -- evaluation ----------------------------------------------------------------------------
    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode and a forked RNG for a side trip (validation, audio samples), so the training
        run's randomness and dropout continue exactly as without it."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                yield
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean unweighted loss per category over exactly its frames (trainer/validation.py)."""
        results = {}
        with self._evaluating():
            for name, _, frames in VAL_CATEGORIES:
                samples = self.validation.get(name)
                if not samples:
                    continue
                loss = category_loss(self.model, self.tokenizer, samples, self.speaker_index, frames,
                                     self.micro_batch_size, self.device)
                if loss is not None:
                    results[f"val/{name}"] = loss
        return results

    def _log_audio(self) -> None:
        from trainer.synth import generate

        with self._evaluating():
            clips = {name: generate(csm_parts(self.model), self.tokenizer, text,
                                    self.speaker_index.get(self.speaker, 0) if self.speaker else 0,
                                    self.settings.logging.audio_max_seconds, self.settings.seed)
                     for name, text in AUDIO_PROMPTS.items()}
        self.logger.log_audio(self.step, clips, csm_parts(self.model).codec_model.config.sampling_rate)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint_score(self) -> float | None:
        """The current weights' value of `train.best_metric` (lower is better), or None when best
        checkpoints are not kept. val_loss: the mean of the validation categories (reused when
        validation just ran at this step); mcd: MCD of generated validation clips."""
        t = self.settings.train
        if not t.keep_best_checkpoints:
            return None
        if t.best_metric == "val_loss":
            at, results = getattr(self, "_validation_at", (None, {}))
            if at != self.step:
                results = self.validate()
                self.logger.log(self.step, results)
                self._validation_at = (self.step, results)
            return float(np.mean(list(results.values()))) if results else None
        mcd = self._validation_mcd()
        if mcd is not None:
            self.logger.log(self.step, {"val/mcd": mcd})
        return mcd

    def _validation_mcd(self) -> float | None:
        """MCD of clips generated for validation samples (trainer/evaluate.py)."""
        from trainer.evaluate import validation_mcd

        clips = [s for samples in self.validation.values() for s in samples][: self.settings.evaluation.mcd_clips]
        with self._evaluating():
            return validation_mcd(self.model, self.tokenizer, clips, self.speaker_index,
                                  self.settings.evaluation.max_seconds, self.settings.seed)

    def save_checkpoint(self, final: bool = False, score: bool = True) -> str:
        value = self.checkpoint_score() if score else None
        local = Path(tempfile.mkdtemp(prefix="ckpt-", dir=self.workdir))
        try:
            self.model.save_pretrained(local / "weights")
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       local / "training_state.pt")
            torch.save(_get_rng_state(), local / "rng.pt")
            state = {
                "step": self.step,
                "phase": self.phase,
                "speaker": self.speaker,
                "seed": self.settings.seed,
                "max_steps": self.max_steps,
                "loader": self._position,  # after the last step taken (the prefetcher runs ahead)
                "spent_usd": self.budget.spent,
                "seconds_per_step": self.monitor.seconds_per_step if self.monitor else self.seconds_per_step,
                "wandb_run_id": self.logger.run_id,
                "fence_generation": self.fence.generation,
                "settings": self.settings.model_dump(mode="json"),
                "score": None if value is None else {"metric": self.settings.train.best_metric, "value": value},
                "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            }
            (local / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
            uri = self.checkpoints.save(self.step, local, fence=self.fence, final=final, score=value)
            if self.early_stopping is not None and self.early_stopping.best_step == self.step:
                self.checkpoints.pin(self.step, EARLY_STOPPING_PIN)  # kept past pruning: it may be published
            self.budget.write_ledger(self.run, self.step, self.startup_s)
            self.logger.sync()  # TensorBoard events up to this checkpoint
            log.info("checkpoint %s", uri)
            return uri
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def publish(self) -> str:
        """Publish this scope's adapter under adapters/ (the final one, or the one so far)."""
        self.fence.check()
        local = self.workdir / "final-adapter"
        shutil.rmtree(local, ignore_errors=True)
        self.model.save_pretrained(local)
        self.adapter_uri = publish_adapter(self.run, local, self.phase, self.speaker, self._adapter_info())
        return self.adapter_uri

    def publish_best(self) -> str:
        """Publish the checkpoint of early stopping's best step as this scope's adapter; its
        metadata says the phase stopped early, where, and on which figure."""
        self.fence.check()
        stopping = self.early_stopping
        local = self.workdir / "best-adapter"
        shutil.rmtree(local, ignore_errors=True)
        try:
            self.checkpoints.fetch_weights(stopping.best_step, local)
        except CheckpointError as exc:
            raise CheckpointError(f"early stopping's best checkpoint (step {stopping.best_step}) cannot be "
                                  f"published: {exc}") from None
        info = {**self._adapter_info(), "steps": stopping.best_step, "complete": True,
                "early_stopping": {**stopping.state_dict(), "published_step": stopping.best_step}}
        self.adapter_uri = publish_adapter(self.run, local, self.phase, self.speaker, info)
        return self.adapter_uri

    def _adapter_info(self) -> dict[str, Any]:
        info = {
            "base_model": self.settings.model,
            "base_model_source": base_model_source(self.settings),
            "mode": self.settings.train.mode,
            "steps": self.step,
            "complete": self.step >= self.max_steps,
            "seed": self.settings.seed,
            "speakers": self.speaker_index,
            "run_id": self.settings.run_id,
            "spent_usd": round(self.budget.spent, 4),
        }
        return info

    def cleanup(self) -> None:
        if hasattr(self, "logger"):
            self.logger.close(sync=False)  # events after the last checkpoint: its resumption logs them
        if hasattr(self, "_batches"):
            self._batches.close()
        if hasattr(self, "stream"):
            self.stream.close()
        if hasattr(self, "workdir"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def _target_positions(batch: Batch) -> int:
    """The positions the loss divides by (trainer/loss.py): target frames and audio-EOS frames."""
    return int((batch.labels[:, 1:, 0] != IGNORE).sum())


def _scaled(parts: LossParts, share: float) -> LossParts:
    return LossParts(parts.loss.detach() * share, parts.backbone * share, parts.depth * share,
                     parts.backbone_unweighted * share, parts.depth_unweighted * share, parts.frames)


def _summed(parts: list[LossParts]) -> LossParts:
    """The loss parts of a whole batch from its micro-batches' (each already scaled by its share)."""
    if len(parts) == 1:
        return parts[0]
    return LossParts(*(torch.stack([getattr(p, name) for p in parts]).sum()
                       for name in ("loss", "backbone", "depth", "backbone_unweighted", "depth_unweighted")),
                     sum(p.frames for p in parts))


def _with_mean(results: dict[str, float]) -> dict[str, float]:
    """A validation's per-category figures plus val/loss, their mean (train.best_metric val_loss)."""
    return {**results, "val/loss": float(np.mean(list(results.values())))} if results else {}


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
    return list(read_data_manifest(Store.for_run(settings))["speakers"])

