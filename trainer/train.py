"""The phase trainer: one class, a loop you can read top to bottom.

    trainer = PhaseTrainer(settings, phase=2)
    trainer.setup()          # model + adapter, optimizer, schedule, data, fence, budget; resumes
    code = trainer.train()   # an exit code (trainer/exit_codes.py)
    trainer.cleanup()

The same command starts or resumes a phase: setup() restores the newest complete checkpoint of
the scope (weights, optimizer, scheduler, RNG states, data position, step, spend, W&B run id), so
a resumed run ends with the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from infra.settings import Settings
from infra.storage import Store
from preprocess.shards import dataset_prefix, read_data_manifest
from trainer import exit_codes
from trainer.budget import BudgetGuard, read_ledger
from trainer.checkpoint import Checkpoints, fetch_adapter, publish_adapter
from trainer.data import ShardStream, first_samples
from trainer.fence import Fence, Fenced
from trainer.logger import RunLogger
from trainer.loss import build_batch, csm_parts, weighted_csm_loss
from trainer.model import (
    backend,
    base_model_source,
    check_codec_fits,
    load_trainable,
    make_optimizer,
    trainable_parameters,
)
from trainer.preemption import NoticePoller, StopRequest

log = logging.getLogger(__name__)
# Validation categories: (name, dataset phase, which frames count).
VAL_CATEGORIES = (("single_language", 1, "all"), ("code_switched", 2, "all"), ("particle", 3, "particle"))
# Fixed prompts for audio samples: Malay, English, code-switched, and each common particle.
AUDIO_PROMPTS = {
    "malay": "Selamat pagi, apa khabar hari ini?",
    "english": "I want to go shopping this weekend.",
    "code_switched": "Saya nak go to the kedai sekejap.",
    **{f"particle_{p}": f"Okay {p}, I go first." for p in ("lah", "leh", "lor", "meh", "mah", "loh", "hor")},
}


class PhaseTrainer:
    def __init__(self, settings: Settings, phase: int, speaker: str | None = None,
                 max_steps: int | None = None, checkpoint_every: int | None = None, progress: bool = True,
                 clock: Callable[[], float] = time.monotonic, started_at: float | None = None):
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
        self.scope = f"phase{phase}" + (f"/{speaker}" if speaker else "")
        self.step = 0
        self.losses: list[float] = []  # total loss of each step this process ran
        self.stop = StopRequest()
        self.adapter_uri: str | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        self.run = Store.for_run(s)
        self.workdir = Path(tempfile.mkdtemp(prefix="suara-train-"))
        data = read_data_manifest(self.run)
        self.speaker_index = {spk: i for i, spk in enumerate(data["speakers"])}
        if self.speaker is not None and self.speaker not in self.speaker_index:
            raise ValueError(f"speaker {self.speaker!r} is not in the data (speakers: {data['speakers']})")
        self.checkpoints = Checkpoints(self.run, self.scope, s.train.keep_last_checkpoints)

        _seed_everything(s.seed + self.phase)
        restored = self.checkpoints.restore_latest(self.workdir)
        if restored is not None:
            weights: Path | None = restored.directory / "weights"
            self._log_setting_changes(restored.state)
        elif self.phase == 1:
            weights = None
        else:
            weights = self.workdir / "previous"
            previous = fetch_adapter(self.run, self.phase - 1, None, weights)
            if previous.get("mode", "lora") != s.train.mode:
                raise ValueError(f"phase {self.phase - 1} was trained in {previous.get('mode', 'lora')} mode but "
                                 f"train.mode is {s.train.mode}; use one mode for every phase of a run")
        self.model, self.tokenizer = load_trainable(s, weights)
        check_codec_fits(self.model, data["codec"])
        self.device = next(self.model.parameters()).device
        self.model.train()

        params = trainable_parameters(self.model)
        self.optimizer = make_optimizer(s, params, self.plan.lr)
        self.backend = backend(s)
        log.info("%s: %s backend, %s mode, %d trainable parameters", self.scope, self.backend, s.train.mode,
                 sum(p.numel() for p in params))
        from transformers import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, self.warmup_steps, self.max_steps)
        self.stream = ShardStream(self.run, self._streams(data), self.plan.batch_size, s.seed + self.phase,
                                  s.cache_dir / "streaming", window_batches=s.train.bucket_window_batches,
                                  frame_budget=s.train.frame_budget)
        state: dict[str, Any] = {}
        if restored is not None:
            state = restored.state
            training = torch.load(restored.directory / "training_state.pt", weights_only=True)
            self.optimizer.load_state_dict(training["optimizer"])
            self.scheduler.load_state_dict(training["scheduler"])
            self.stream.load_state_dict(state["loader"])
            _set_rng_state(torch.load(restored.directory / "rng.pt", weights_only=False))
            self.step = restored.step
            log.info("resumed %s from step %d", self.scope, self.step)
        self._batches = self.stream.batches()
        self.seconds_per_step = state.get("seconds_per_step")

        # Only the newest instance may write; claim after reading, before any write.
        self.fence = Fence(self.run, self.scope)
        self.fence.claim()
        ledger = read_ledger(self.run)
        self.budget = BudgetGuard(
            settings=s.budget, scope=self.scope, phase_cap_usd=self.plan.max_cost_usd,
            spent_before=max(float(state.get("spent_usd", 0.0)), ledger.get(self.scope, 0.0)),
            spent_elsewhere=sum(v for k, v in ledger.items() if k != self.scope), clock=self.clock,
            started_at=self.started_at,
        )
        self.startup_s = self.budget.elapsed_s
        self.budget.write_ledger(self.run, self.step, self.startup_s)  # paid for even if killed next
        self.logger = RunLogger(s, self.scope, state.get("wandb_run_id"))
        self.validation = self._load_validation(data)

    def _streams(self, data: dict[str, Any]) -> list[tuple[str, float]]:
        own = dataset_prefix(self.phase, "train", self.speaker)
        share = self.plan.replay_share
        earlier = [dataset_prefix(p, "train") for p in range(1, min(self.phase, 4))
                   if f"phase{p}/train" in data["buckets"]] if self.phase in (2, 3) else []
        if share == 0 or not earlier:
            return [(own, 1.0)]
        return [(own, 1.0 - share)] + [(prefix, share / len(earlier)) for prefix in earlier]

    def _load_validation(self, data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        if self.settings.logging.val_every == 0:
            return {}
        count = self.settings.logging.val_batches * self.plan.batch_size
        cache = self.settings.cache_dir / "streaming"
        return {name: samples for name, phase, _ in VAL_CATEGORIES
                if (samples := first_samples(self.run, dataset_prefix(phase, "val"), count, cache))}

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
        estimate = (self.seconds_per_step or self.settings.budget.seconds_per_step_estimate) * self.checkpoint_every
        refusal = self.budget.cannot_afford(estimate)
        if refusal:
            log.error("budget: %s; not starting", refusal)
            return exit_codes.BUDGET_EXHAUSTED

        self.stop.install_signal_handlers()
        poller = None
        if self.settings.preemption.imds_url:
            poller = NoticePoller(self.settings.preemption.imds_url, self.settings.preemption.imds_poll_s, self.stop)
            poller.start()
        bar = tqdm(total=self.max_steps, initial=self.step, desc=f"train {self.scope}", unit="step",
                   disable=not self.progress)
        try:
            return self._loop(bar)
        except Fenced as exc:
            log.error("%s", exc)
            return exit_codes.FENCED
        finally:
            bar.close()
            if poller is not None:
                poller.close()
            self.stop.restore_signal_handlers()

    def _loop(self, bar: tqdm) -> int:
        s = self.settings
        last_saved, last_heartbeat = self.step, self.clock()
        while self.step < self.max_steps:
            t0 = time.perf_counter()
            samples = next(self._batches)
            batch = build_batch(samples, self.tokenizer, self.model.config, self.speaker_index,
                                self.plan.particle_weight, self.plan.switch_weight,
                                contexts=self._contexts(samples)).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                parts = weighted_csm_loss(self.model, batch, s.train.depth_decoder_frame_ratio)
            parts.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable_parameters(self.model), s.train.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            seconds = time.perf_counter() - t0
            self.seconds_per_step = seconds if self.seconds_per_step is None else (
                0.9 * self.seconds_per_step + 0.1 * seconds)
            self.losses.append(parts.loss.item())
            metrics = {
                "loss": self.losses[-1], "loss/backbone": parts.backbone.item(), "loss/depth": parts.depth.item(),
                "loss_unweighted/backbone": parts.backbone_unweighted.item(),
                "loss_unweighted/depth": parts.depth_unweighted.item(),
                "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                "samples_per_s": len(samples) / seconds,
                "audio_s_per_s": batch.num_frames / self.model.config.codec_config.frame_rate / seconds,
                "spend_usd": self.budget.spent,
            }
            if self.device.type == "cuda":
                metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            if self.step % s.train.log_every == 0 or self.step == self.max_steps:
                self.logger.log(self.step, metrics)
                log.info("%s step %d/%d loss %.4f lr %.2e grad_norm %.3f spend $%.2f", self.scope, self.step,
                         self.max_steps, metrics["loss"], metrics["lr"], metrics["grad_norm"], metrics["spend_usd"])
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.1e}",
                            gnorm=f"{metrics['grad_norm']:.2f}", sps=f"{metrics['samples_per_s']:.1f}",
                            usd=f"{metrics['spend_usd']:.2f}")
            if s.logging.val_every and self.step % s.logging.val_every == 0:
                self.logger.log(self.step, self.validate())
            if s.logging.audio_every and self.step % s.logging.audio_every == 0:
                self._log_audio()

            if self.stop.reason is not None:
                self.save_checkpoint()
                log.warning("stopped by %s at step %d after a checkpoint; run again to resume",
                            self.stop.reason, self.step)
                return exit_codes.PREEMPTED
            exhausted = self.budget.exhausted()
            if exhausted:
                self.save_checkpoint()
                self.publish()
                log.error("budget exhausted: %s; stopped at step %d with a checkpoint and the adapter so far "
                          "at %s", exhausted, self.step, self.adapter_uri)
                return exit_codes.BUDGET_EXHAUSTED
            if self.step % self.checkpoint_every == 0:
                self.save_checkpoint()
                last_saved, last_heartbeat = self.step, self.clock()
            elif self.clock() - last_heartbeat >= s.budget.heartbeat_s:
                # Spend since the last checkpoint survives a preemption through the ledger.
                self.fence.check()
                self.budget.write_ledger(self.run, self.step, self.startup_s)
                last_heartbeat = self.clock()
        if last_saved != self.step:
            self.save_checkpoint(final=True)
        else:
            self.checkpoints.mark_final(self.step)
        self.publish()
        return exit_codes.FINISHED

    def _contexts(self, samples: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """A reference clip of the same speaker before some targets (voice-cloning-style turns)."""
        share = self.settings.train.context_share
        if share == 0:
            return [None] * len(samples)
        contexts: list[dict[str, Any] | None] = []
        for i, sample in enumerate(samples):
            others = [o for j, o in enumerate(samples) if j != i and o["speaker_id"] == sample["speaker_id"]]
            use = others and torch.rand(()).item() < share
            contexts.append(others[int(torch.randint(len(others), ()).item())] if use else None)
        return contexts

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
        """Mean unweighted loss per category on fixed validation samples; particle: particle frames."""
        results = {}
        with self._evaluating():
            for name, _, frames in VAL_CATEGORIES:
                samples = self.validation.get(name)
                if not samples:
                    continue
                if frames == "particle":
                    samples = [_particle_only(s) for s in samples]
                losses = []
                for i in range(0, len(samples), self.plan.batch_size):
                    chunk = samples[i : i + self.plan.batch_size]
                    batch = build_batch(chunk, self.tokenizer, self.model.config, self.speaker_index)
                    parts = weighted_csm_loss(self.model, batch.to(self.device))
                    losses.append(parts.loss.item())
                results[f"val/{name}"] = float(np.mean(losses))
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
    def save_checkpoint(self, final: bool = False) -> str:
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
                "loader": self.stream.state_dict(),
                "spent_usd": self.budget.spent,
                "seconds_per_step": self.seconds_per_step,
                "wandb_run_id": self.logger.run_id,
                "fence_generation": self.fence.generation,
                "settings": self.settings.model_dump(mode="json"),
            }
            (local / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
            uri = self.checkpoints.save(self.step, local, fence=self.fence, final=final)
            self.budget.write_ledger(self.run, self.step, self.startup_s)
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
        self.adapter_uri = publish_adapter(self.run, local, self.phase, self.speaker, info)
        return self.adapter_uri

    def cleanup(self) -> None:
        if hasattr(self, "logger"):
            self.logger.close()
        if hasattr(self, "stream"):
            self.stream.close()
        if hasattr(self, "workdir"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def _particle_only(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with loss weight only on particle frames (the whole clip until masks exist)."""
    mask = sample.get("particle_mask")
    if mask is None:
        return sample
    return {**sample, "frame_weights": np.asarray(mask, dtype=np.float32)}


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
    run = Store.for_run(settings)
    return list(read_data_manifest(run)["speakers"])

