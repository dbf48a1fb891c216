"""Checkpoints and published adapters in the store, each committed by a manifest written last.

A checkpoint lives under `checkpoints/<scope>/step_000500/` and holds:
    weights/              the LoRA adapter (peft format), or the full model in full fine-tune mode
    training_state.pt     optimizer and LR-scheduler state
    rng.pt                python, numpy, torch (and CUDA) RNG states
    state.json            step, seed, phase, speaker, data-loader position, resolved settings
    manifest.json         sha256 of every object above: written last, so its presence commits
and then `checkpoints/<scope>/latest.json` points at it (the small pointer object, last of all).

S3 has no atomic rename, so "complete" means "manifest present and every checksum matches".
Resume starts from the pointer's checkpoint and falls back to the newest other one that verifies.
Objects are never overwritten in place: each step gets a new zero-padded prefix. The last N
checkpoints are kept, plus the scope's final one (`final.json` names it).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.storage import Store, StoreError, sha256_file
from trainer.fence import Fence

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
STEP_PREFIX = "step_"


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

    def __init__(self, run: Store, scope: str, keep_last: int):
        self.run = run
        self.prefix = f"checkpoints/{scope}"
        self.keep_last = keep_last

    def steps(self) -> list[int]:
        digits = [n.removeprefix(STEP_PREFIX) for n in self.run.list_dirs(self.prefix) if n.startswith(STEP_PREFIX)]
        return sorted(int(d) for d in digits if d.isdigit())

    def save(self, step: int, local: Path, fence: Fence | None = None, final: bool = False) -> str:
        """Commit the files in `local` as checkpoint `step`, move the pointer, prune old ones.
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
        self._prune(keep=step)
        return self.run.uri(prefix)

    def mark_final(self, step: int) -> None:
        """Keep checkpoint `step` past pruning as the scope's final one."""
        self.run.put_json(f"{self.prefix}/final.json", {"step": step})

    def _pointer(self, name: str) -> int | None:
        try:
            return int(self.run.get_json(f"{self.prefix}/{name}")["step"])
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            return None

    def _prune(self, keep: int) -> None:
        final = self._pointer("final.json")
        steps = [s for s in self.steps() if s != final]
        for old in steps[: -self.keep_last]:
            if old != keep:
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


def pull_adapter(run: Store, phase: int, speaker: str | None, target: Path) -> dict[str, Any]:
    """Download and verify a published adapter into `target`, all or nothing: into a staging
    folder beside it first, then renamed. On any failure `target` is as it was and the staging
    folder is gone. A folder that holds an earlier pull (its manifest.json) is replaced; any other
    non-empty folder is refused rather than overwritten."""
    target = Path(target).absolute()
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).is_file())):
        raise CheckpointError(f"{target} exists and is not an adapter pulled before (no {MANIFEST}); "
                              "choose an empty or new folder for --to")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.pull-", dir=target.parent))
    try:
        manifest = fetch_adapter(run, phase, speaker, staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


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
