"""Checkpoints and published adapters in the store, each committed by a manifest written last.

A checkpoint lives under `checkpoints/<scope>/step_000500/` and holds:
    weights/              the LoRA adapter (peft format), or the full model in full fine-tune mode
    training_state.pt     optimizer and LR-scheduler state
    rng.pt                python, numpy, torch (and CUDA) RNG states
    state.json            step, seed, phase, speaker, data-loader position, resolved settings
    manifest.json         sha256 of every object above: written last, so its presence commits
and then `checkpoints/<scope>/latest.json` points at it (the small pointer object, last of all).
A checkpoint scored by the chosen metric (validation loss or MCD) then enters `best.json` if it is
among the best K; pruning, last, never deletes the final checkpoint or a best one.

S3 has no atomic rename, so "complete" means "manifest present and every checksum matches".
Resume starts from the pointer's checkpoint and falls back to the newest other one that verifies.
Objects are never overwritten in place: each step gets a new zero-padded prefix. The last N
checkpoints are kept, plus the scope's final one (`final.json` names it) and the best K
(`best.json`: metric, and step + value of each, best first).
A checkpoint can also be pinned by name (`early_stopping.json`: the best step so far by the
early-stopping figure, which the phase may publish when it stops); pruning keeps pinned ones too.
A phase's final adapter is published the same way under `adapters/phase<N>[/<speaker>]/`; its
manifest says `complete: false` when the run stopped before its last step (a budget cap).
Pulling one to a local folder is atomic: the files go to a staging folder beside the target and
are verified there, and only then does the staging folder take the target's name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.storage import Store, StoreError, sha256_file
from trainer.fence import Fence

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
STEP_PREFIX = "step_"
BEST = "best.json"
EARLY_STOPPING_PIN = "early_stopping.json"
PINS = (EARLY_STOPPING_PIN,)


class CheckpointError(RuntimeError):
    """A checkpoint or adapter is missing or fails verification."""


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:06d}"


def upload_dir(local: Path, store: Store, prefix: str, extra_manifest: dict[str, Any]) -> dict[str, Any]:
    """Upload every file under `local` to `prefix`, then the manifest with their sha256 (last)."""
    objects = {}
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        name = path.relative_to(local).as_posix()
        if name == MANIFEST:
            raise CheckpointError(f"{local} already contains {MANIFEST}")
        objects[name] = sha256_file(path)
        store.put_file(path, f"{prefix}/{name}")
    manifest = {**extra_manifest, "objects": objects}
    store.put_json(f"{prefix}/{MANIFEST}", manifest)
    return manifest


def download_verified(store: Store, prefix: str, local: Path) -> dict[str, Any]:
    """Download a committed prefix into `local`, verifying every checksum. Raises CheckpointError."""
    try:
        manifest = store.get_json(f"{prefix}/{MANIFEST}")
    except FileNotFoundError:
        raise CheckpointError(f"{store.uri(prefix)} has no {MANIFEST} (incomplete or absent)") from None
    except (ValueError, StoreError) as exc:
        raise CheckpointError(f"{store.uri(prefix)}/{MANIFEST} is unreadable: {exc}") from None
    for name, expected in manifest.get("objects", {}).items():
        target = local / name
        try:
            store.get_file(f"{prefix}/{name}", target)
        except FileNotFoundError:
            raise CheckpointError(f"{store.uri(prefix)}/{name} is listed but missing") from None
        actual = sha256_file(target)
        if actual != expected:
            raise CheckpointError(f"{store.uri(prefix)}/{name}: sha256 {actual[:12]} != manifest {expected[:12]}")
    return manifest


@dataclass
class Restored:
    step: int
    directory: Path  # local copy of the checkpoint's files
    state: dict[str, Any]  # state.json


class Checkpoints:
    """The checkpoints of one training scope (a phase, or a phase-4 speaker) of a run."""

    def __init__(self, run: Store, scope: str, keep_last: int, keep_best: int = 0, metric: str = "val_loss"):
        self.run = run
        self.scope = scope
        self.prefix = f"checkpoints/{scope}"
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.metric = metric  # lower is better (a loss, MCD)

    def steps(self) -> list[int]:
        digits = [n.removeprefix(STEP_PREFIX) for n in self.run.list_dirs(self.prefix) if n.startswith(STEP_PREFIX)]
        return sorted(int(d) for d in digits if d.isdigit())

    def save(self, step: int, local: Path, fence: Fence | None = None, final: bool = False,
             score: float | None = None) -> str:
        """Commit the files in `local` as checkpoint `step`, move the pointer, record its `score` (the
        metric's value; None = not scored) among the best, prune old ones.
        Raises trainer.fence.Fenced (before writing anything it can avoid) if superseded."""
        prefix = f"{self.prefix}/{step_name(step)}"
        if fence is not None:
            fence.check()
        # A leftover incomplete prefix for this step (a crash mid-upload) is replaced, never merged.
        self.run.delete(prefix)
        upload_dir(local, self.run, prefix, {"step": step})
        if fence is not None:
            fence.check()
        self.run.put_json(f"{self.prefix}/latest.json",
                          {"step": step, "generation": fence.generation if fence else None})
        if final:
            self.mark_final(step)
        if score is not None and self.keep_best:
            self._record_best(step, score)
        self._prune(keep=step)
        return self.run.uri(prefix)

    def pin(self, step: int, name: str) -> None:
        """Keep checkpoint `step` past pruning under the pointer `name` (one of PINS), replacing the
        step it pinned before (which then ages out like any other)."""
        if name not in PINS:
            raise ValueError(f"unknown checkpoint pin {name!r}; known: {', '.join(PINS)}")
        self.run.put_json(f"{self.prefix}/{name}", {"step": step})

    def fetch_weights(self, step: int, local: Path) -> None:
        """Download and verify checkpoint `step`, and put its weights (a peft adapter, or a full
        model) in `local`. Raises CheckpointError."""
        with tempfile.TemporaryDirectory(prefix="weights-") as tmp:
            download_verified(self.run, f"{self.prefix}/{step_name(step)}", Path(tmp))
            local.mkdir(parents=True, exist_ok=True)
            for path in sorted((Path(tmp) / "weights").rglob("*")):
                if path.is_file():
                    target = local / path.relative_to(Path(tmp) / "weights")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)

    def mark_final(self, step: int) -> None:
        """Keep checkpoint `step` past pruning as the scope's final one."""
        self.run.put_json(f"{self.prefix}/final.json", {"step": step})

    def _pointer(self, name: str) -> int | None:
        try:
            return int(self.run.get_json(f"{self.prefix}/{name}")["step"])
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            return None

    def best(self) -> list[dict[str, Any]]:
        """The best checkpoints by this scope's metric, best first: [{"step", "value"}]; empty when
        none was scored (or they were scored by another metric)."""
        try:
            record = self.run.get_json(f"{self.prefix}/{BEST}")
        except (FileNotFoundError, ValueError):
            return []
        if record.get("metric") != self.metric:
            return []
        return list(record.get("checkpoints", []))

    def best_record(self) -> dict[str, Any] | None:
        """best.json as written, whatever its metric (for listings)."""
        try:
            return self.run.get_json(f"{self.prefix}/{BEST}")
        except (FileNotFoundError, ValueError):
            return None

    def _record_best(self, step: int, value: float) -> None:
        record = self.best_record()
        if record is not None and record.get("metric") != self.metric:
            log.warning("%s: best checkpoints were ranked by %s; ranking by %s from now on (the old ones may be "
                        "pruned)", self.scope, record.get("metric"), self.metric)
        entries = [e for e in self.best() if e["step"] != step] + [{"step": step, "value": float(value)}]
        entries.sort(key=lambda e: (e["value"], -e["step"]))
        self.run.put_json(f"{self.prefix}/{BEST}", {"metric": self.metric, "lower_is_better": True,
                                                    "checkpoints": entries[: self.keep_best]})

    def _prune(self, keep: int) -> None:
        steps = self.steps()
        protected = {self._pointer("final.json"), keep, *steps[-self.keep_last :]} | {e["step"] for e in self.best()}
        protected |= {self._pointer(name) for name in PINS}
        for old in steps:
            if old not in protected:
                self.run.delete(f"{self.prefix}/{step_name(old)}")

    def restore_latest(self, workdir: Path) -> Restored | None:
        """The pointer's checkpoint, else the newest that verifies, downloaded into `workdir`."""
        pointer = self._pointer("latest.json")
        order = sorted(self.steps(), reverse=True)
        if pointer in order:
            order.remove(pointer)
            order.insert(0, pointer)
        for step in order:
            target = Path(tempfile.mkdtemp(prefix=f"{step_name(step)}-", dir=workdir))
            try:
                download_verified(self.run, f"{self.prefix}/{step_name(step)}", target)
                state = json.loads((target / "state.json").read_text())
            except (CheckpointError, FileNotFoundError, ValueError) as exc:
                log.warning("skipping checkpoint %s: %s", step_name(step), exc)
                shutil.rmtree(target, ignore_errors=True)
                continue
            return Restored(step=step, directory=target, state=state)
        return None


def fetch_best(run: Store, scope: str, metric: str, local: Path, rank: int = 1) -> dict[str, Any]:
    """Download and verify the `rank`-th best checkpoint of `scope` and put its weights (a peft
    adapter, or a full model) in `local`; returns {"scope", "step", "metric", "value", "rank"}."""
    checkpoints = Checkpoints(run, scope, keep_last=1, metric=metric)
    best = checkpoints.best()
    if len(best) < rank:
        record = checkpoints.best_record()
        other = f" (they are ranked by {record['metric']}: set train.best_metric={record['metric']})" \
            if record and record.get("metric") != metric else ""
        raise CheckpointError(
            f"no best checkpoint #{rank} by {metric} for {scope} at {run.uri(checkpoints.prefix)}{other}; "
            "checkpoints are ranked when train.keep_best_checkpoints > 0")
    entry = best[rank - 1]
    checkpoints.fetch_weights(entry["step"], local)
    return {"scope": scope, "step": entry["step"], "metric": metric, "value": entry["value"], "rank": rank}


def adapter_prefix(phase: int, speaker: str | None = None) -> str:
    return f"adapters/phase{phase}" + (f"/{speaker}" if speaker else "")


def publish_adapter(run: Store, adapter_dir: Path, phase: int, speaker: str | None,
                    info: dict[str, Any]) -> str:
    prefix = adapter_prefix(phase, speaker)
    run.delete(prefix)
    upload_dir(adapter_dir, run, prefix, {"phase": phase, "speaker": speaker, **info})
    return run.uri(prefix)


def fetch_adapter(run: Store, phase: int, speaker: str | None, local: Path) -> dict[str, Any]:
    """Download and verify a published adapter into `local`; returns its manifest."""
    prefix = adapter_prefix(phase, speaker)
    if not run.exists(f"{prefix}/{MANIFEST}"):
        hint = f" --speaker {speaker}" if speaker else ""
        raise CheckpointError(
            f"no adapter for phase {phase}{' speaker ' + speaker if speaker else ''} at {run.uri(prefix)}; "
            f"train it first: python -m trainer train --phase {phase}{hint}"
        )
    return download_verified(run, prefix, local)


def published_speakers(run: Store) -> list[str]:
    """Speakers with a committed phase-4 adapter."""
    return [name for name in run.list_dirs(adapter_prefix(4)) if run.exists(f"{adapter_prefix(4, name)}/{MANIFEST}")]


def list_adapters(run: Store) -> list[dict[str, Any]]:
    """The manifest of every committed adapter of the run, phase then speaker order, each with its
    `prefix`."""
    found = []
    for key in run.list("adapters"):
        if key.endswith(f"/{MANIFEST}"):
            manifest = run.get_json(key)
            found.append({**manifest, "prefix": key.rsplit("/", 1)[0]})
    return sorted(found, key=lambda m: (m.get("phase", 0), m.get("speaker") or ""))


def is_incomplete(manifest: dict[str, Any]) -> bool:
    """Published by a run that stopped early (manifests older than the flag count as complete)."""
    return manifest.get("complete") is False


PULLED_BEST = "pulled.json"  # in a folder `pull --best` filled: which checkpoint it holds


def pull_adapter(run: Store, phase: int, speaker: str | None, target: Path) -> dict[str, Any]:
    """Download and verify a published adapter into `target`, all or nothing (see `_pull_into`);
    returns its manifest, which is also written to `target`."""

    def fill(staging: Path) -> dict[str, Any]:
        manifest = fetch_adapter(run, phase, speaker, staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest

    return _pull_into(target, fill)


def pull_best(run: Store, scope: str, metric: str, target: Path, rank: int = 1) -> dict[str, Any]:
    """`fetch_best` into `target`, all or nothing as `pull_adapter`; the record (step, metric,
    value, rank) is also written to `target`/pulled.json."""

    def fill(staging: Path) -> dict[str, Any]:
        record = fetch_best(run, scope, metric, staging, rank)
        (staging / PULLED_BEST).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return record

    return _pull_into(target, fill)


def _pull_into(target: Path, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """`fill(staging)` downloads and verifies into a staging folder beside `target`, which is then
    renamed to `target`. On any failure `target` is as it was and the staging folder is gone. A
    folder that holds an earlier pull (its manifest.json or pulled.json) is replaced; any other
    non-empty folder is refused rather than overwritten."""
    target = Path(target).absolute()
    earlier = (target / MANIFEST).is_file() or (target / PULLED_BEST).is_file()
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not earlier)):
        raise CheckpointError(f"{target} exists and is not an adapter pulled before (no {MANIFEST}); "
                              "choose an empty or new folder for --to")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.pull-", dir=target.parent))
    try:
        record = fill(staging)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record


def _swap_in(staging: Path, target: Path) -> None:
    """Give `staging` the name `target`; an existing `target` is moved aside first and removed
    only after the rename, so an interruption leaves one of the two whole."""
    if not target.exists():
        os.rename(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / "previous")
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old / "previous", target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
