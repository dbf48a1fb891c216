"""Reading one row's audio file from the input: inside the input, regular files only, bounded in
size, never stalled for long, hashed on the way.

- The path is resolved inside the input folder: a symbolic link may point anywhere within it, but
  one that leads out of it is `path_outside_input` and is not opened (the manifest check has
  already refused absolute paths and `..` that leave the folder).
- Only regular files are opened: `stat` is checked before `open`, and again on the opened
  descriptor (opened with O_NONBLOCK, so a FIFO swapped in between cannot block the open): a
  folder, FIFO, device or socket is `unreadable_audio`, as is a symlink loop or a name too long.
- A local file's header is probed in place (`probe`: sample rate, length) before it is copied, so
  a file over the length bound is refused having read only its header; a file larger than
  `max_audio_mb` is refused from its size (`file_too_large`). (An object in S3 is probed after it is
  copied: probing some formats in place would fetch them whole in small ranges.)
- The bytes are read in blocks by a helper thread; when no block arrives for `read_timeout_s` (a
  stalled network filesystem or object-store read), the read is abandoned (the helper is left to
  finish or hang on its own, as a blocked system call cannot be interrupted) and the row is
  quarantined as `read_timeout`. The timeout measures progress, so a large file on a slow link
  is fine as long as bytes keep arriving.
- The bytes go to a spooled temporary file (memory up to SPOOL_MEMORY_BYTES, then local disk) and
  into a sha256 (duplicate detection) on the way; decoding reads that copy, so the input is read
  once and a decoder never waits on the network.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from infra.settings import PreprocessSettings
from infra.storage import Store
from preprocess.quarantine import RowError, is_run_fault

BLOCK_BYTES = 1 << 20
SPOOL_MEMORY_BYTES = 32 << 20


@dataclass
class Fetched:
    file: IO[bytes]  # a local copy of the file, positioned at its start
    sha256: str
    size: int
    uri: str  # where it was read from, for messages

    def close(self) -> None:
        self.file.close()


def fetch(source: Store, key: str, pre: PreprocessSettings,
          probe: Callable[[IO[bytes], str], None] | None = None) -> Fetched:
    """A local copy of the input's file `key` (a normalised relative path). `probe(file, uri)` may
    refuse a local file from its header, by raising RowError, before it is copied. Raises RowError."""
    uri = source.uri(key)
    limit = int(pre.max_audio_mb * (1 << 20))
    opener: Callable[[], Any]
    if source.scheme == "file":
        opener = lambda: _open_local(source.root, key, uri, limit, probe)  # noqa: E731
    else:
        opener = lambda: _open_object(source, uri, limit)  # noqa: E731
    blocks: queue.Queue[Any] = queue.Queue(maxsize=4)
    abandoned = threading.Event()
    threading.Thread(target=_read, args=(opener, blocks, abandoned), daemon=True, name="suara-fetch").start()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 (handed to the caller)
    digest, size = hashlib.sha256(), 0
    try:
        while True:
            try:
                item = blocks.get(timeout=pre.read_timeout_s)
            except queue.Empty:
                raise RowError("read_timeout", f"reading {uri} made no progress for {pre.read_timeout_s:g} s "
                                               f"(after {size} bytes) and was abandoned: a stalled network "
                                               "filesystem or object store? (preprocess.read_timeout_s)") from None
            if isinstance(item, BaseException):
                raise _row_error(item, uri)
            if not item:
                break
            size += len(item)
            if size > limit:
                raise _too_large(uri, size, pre)
            digest.update(item)
            spool.write(item)
    except BaseException:
        abandoned.set()
        spool.close()
        raise
    spool.seek(0)
    return Fetched(spool, digest.hexdigest(), size, uri)


def _read(opener: Callable[[], Any], blocks: queue.Queue[Any], abandoned: threading.Event) -> None:
    """The helper thread: open, then hand over blocks until the end (b"") or an exception."""
    try:
        with opener() as fh:
            while not abandoned.is_set():
                block = fh.read(BLOCK_BYTES)
                if not _put(blocks, block, abandoned) or not block:
                    return
    except BaseException as exc:  # handed to the reading side, which decides what it means
        _put(blocks, exc, abandoned)


def _put(blocks: queue.Queue[Any], item: Any, abandoned: threading.Event) -> bool:
    while not abandoned.is_set():
        try:
            blocks.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


def _open_local(root: str, key: str, uri: str, limit: int,
                probe: Callable[[IO[bytes], str], None] | None) -> IO[bytes]:
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, key))
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        raise RowError("path_outside_input", f"{uri} leads to {real}, outside the input folder {real_root}, "
                                             "through a symbolic link; copy the file into the input folder")
    _regular(os.stat(real).st_mode, uri)  # before open: a FIFO or device is never opened
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        _regular(st.st_mode, uri)  # the same file that was checked, not one swapped in since
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    try:
        if probe is not None:
            probe(fh, uri)
            fh.seek(0)
        if st.st_size > limit:
            raise RowError("file_too_large", f"{uri} is {st.st_size / (1 << 20):.1f} MiB, over "
                                             f"preprocess.max_audio_mb ({limit / (1 << 20):g} MiB)")
    except BaseException:
        fh.close()
        raise
    return fh


def _open_object(source: Store, uri: str, limit: int) -> IO[bytes]:
    info = source.fs.info(uri)
    if info.get("type") != "file":
        raise RowError("unreadable_audio", f"{uri} is a prefix (a folder of objects), not an object")
    size = int(info.get("size") or 0)
    if size > limit:
        raise RowError("file_too_large", f"{uri} is {size / (1 << 20):.1f} MiB, over preprocess.max_audio_mb "
                                         f"({limit / (1 << 20):g} MiB)")
    return source.fs.open(uri, "rb", block_size=BLOCK_BYTES)


def _regular(mode: int, uri: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise RowError("unreadable_audio", f"{uri} is {kind}; only regular files are read")


def _too_large(uri: str, size: int, pre: PreprocessSettings) -> RowError:
    return RowError("file_too_large", f"{uri} grew past preprocess.max_audio_mb ({pre.max_audio_mb:g} MiB) "
                                      f"while it was read ({size} bytes so far)")


def _row_error(exc: BaseException, uri: str) -> BaseException:
    """What a failure to open or read means for the row; faults of the run stay as they are."""
    if isinstance(exc, RowError) or is_run_fault(exc):
        return exc
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return RowError("missing_audio", f"audio file {uri} does not exist")
    if isinstance(exc, OSError):
        return RowError("unreadable_audio", f"cannot read {uri}: {exc.strerror or exc}")
    return exc
