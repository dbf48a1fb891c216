"""Streaming datasets opened side by side on one machine: a killed owner's memory is reaped, a live one's never."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.shared_memory import open_dataset, reap_stale

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="POSIX shared memory under /dev/shm")


def _write_dataset(folder: Path) -> None:
    from streaming import MDSWriter

    with MDSWriter(out=str(folder), columns={"x": "int"}) as writer:
        for i in range(8):
            writer.write({"x": i})


def _segments(prefix: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"{prefix:06}_*"))


_HOLD_OPEN = """
import signal, sys
from trainer.shared_memory import open_dataset
dataset = open_dataset(local=sys.argv[1], batch_size=1)
print(dataset._shm_prefix_int, flush=True)
signal.pause()
"""


def test_a_killed_owners_memory_is_reaped_and_a_live_one_is_kept(tmp_path):
    killed_dir, live_dir = tmp_path / "killed", tmp_path / "live"
    _write_dataset(killed_dir)
    _write_dataset(live_dir)
    # Its own session, killed as a group like a preempted or OOM-killed trainer: Python's resource
    # tracker dies with it and cannot clean up either.
    child = subprocess.Popen([sys.executable, "-c", _HOLD_OPEN, str(killed_dir)], stdout=subprocess.PIPE,
                             text=True, start_new_session=True, cwd=Path(__file__).parents[1])
    killed_prefix = int(child.stdout.readline())
    live = open_dataset(local=str(live_dir), batch_size=1)  # beside a running one: its own prefix
    live_prefix = live._shm_prefix_int
    assert live_prefix != killed_prefix
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert _segments(killed_prefix), "SIGKILL leaves the dataset's shared memory behind"

    assert reap_stale() >= 1
    assert not _segments(killed_prefix)
    assert _segments(live_prefix), "the memory of a dataset still open in a live process is left alone"
    assert sorted(live[i]["x"] for i in range(len(live))) == list(range(8))


def test_shared_memory_of_folders_that_are_not_ours_is_left_alone(tmp_path):
    from streaming import StreamingDataset

    foreign = tmp_path / "foreign"
    _write_dataset(foreign)
    dataset = StreamingDataset(local=str(foreign), batch_size=1)  # no owner file: someone else's
    reap_stale()
    assert _segments(dataset._shm_prefix_int)
