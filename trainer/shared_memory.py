"""Opening a `StreamingDataset` safely when other processes on the machine stream too.

mosaicml-streaming names each dataset's shared memory `/dev/shm/<prefix>_<name>` and picks the
first free prefix by looking, then creating: two processes that open a dataset at the same moment
pick the same prefix and the second dies with `FileExistsError`. Its `clean_stale_shared_memory()`
unlinks every prefix, including those of datasets that are still running in other processes.

So datasets are opened here under one host-wide file lock, and only the shared memory of datasets
whose owner is gone is removed: each local folder we give streaming holds an owner file with the
process id, and a prefix is stale when each of its local folders is missing or names a dead process.
Shared memory of anything else (folders without our owner file) is left alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from infra.file_lock import exclusive

OWNER_FILE = ".suara-owner"
_LOCK = Path(tempfile.gettempdir()) / "suara-streaming.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(local: str) -> bool:
    folder = Path(local)
    if not folder.exists():
        return True
    try:
        pid = int((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False  # not one of ours, or being written: leave it
    return not _alive(pid)


def reap_stale() -> int:
    """Unlink the shared memory of streaming datasets whose owners have exited; returns how many.

    Segments are read and removed as the files they are under /dev/shm: attaching through
    `SharedMemory` would register them with this process's resource tracker, which unlinks them
    when we exit, live or not.
    """
    from streaming.base.constant import LOCALS, SHM_TO_CLEAN
    from streaming.base.shared.prefix import _get_path, _unpack_locals

    shm_root = Path("/dev/shm")
    reaped = 0
    for segment in sorted(shm_root.glob(f"*_{LOCALS}")) if shm_root.is_dir() else []:
        prefix = segment.name.split("_", 1)[0]
        if not prefix.isdigit():
            continue
        try:
            locals_, _ = _unpack_locals(segment.read_bytes())
        except Exception:  # noqa: BLE001 - gone meanwhile, or being written by its owner: leave it
            continue
        if not locals_ or not all(_owner_gone(local) for local in locals_):
            continue
        for name in SHM_TO_CLEAN:
            (shm_root / _get_path(int(prefix), name)).unlink(missing_ok=True)
        reaped += 1
    return reaped


def claim(local: str | Path) -> None:
    """Mark a local folder as this process's, so its shared memory is reaped once we are gone."""
    folder = Path(local)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER_FILE).write_text(str(os.getpid()))


def open_dataset(**kwargs: Any) -> Any:
    """`StreamingDataset(**kwargs)`, opened under the host lock after reaping dead owners' memory."""
    from streaming import StreamingDataset

    locals_ = [kwargs["local"]] if kwargs.get("local") else [s.local for s in kwargs.get("streams") or []]
    for local in locals_:
        claim(local)
    with exclusive(_LOCK):
        reap_stale()
        return StreamingDataset(**kwargs)
