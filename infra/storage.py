"""One object-store interface for every stage: a local directory or any S3 endpoint.

Keys are `/`-separated paths relative to the store's root, the same on both backends. The local
directory is the embedded default (persistent, like SQLite is for a database); `s3://bucket/prefix`
talks to AWS S3 or any S3-compatible server through s3fs/boto3 with the configured endpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import fsspec

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreError(RuntimeError):
    """A store operation failed; the message names the store and key."""


class Store:
    """A root URL (`file:///dir` or `s3://bucket/prefix`) and the filesystem that serves it."""

    def __init__(self, url: str, endpoint_url: str | None = None, limits: Any = None):
        if url.startswith("s3://"):
            import s3fs

            from infra.settings import StorageSettings

            limits = limits or StorageSettings()
            self.scheme = "s3"
            self.root = url.removeprefix("s3://").rstrip("/")
            # No listing cache: checkpoints and pointers are read right after other writers wrote them.
            # botocore's "standard" retry mode backs off exponentially on throttling, 5xx, dropped
            # connections and timeouts; the timeouts turn a hanging endpoint into a retried error.
            self.fs = s3fs.S3FileSystem(
                endpoint_url=endpoint_url, use_listings_cache=False, skip_instance_cache=True,
                config_kwargs={
                    "connect_timeout": limits.connect_timeout_s, "read_timeout": limits.read_timeout_s,
                    "retries": {"max_attempts": limits.max_attempts, "mode": "standard"},
                },
            )
            self.fs.retries = 1  # one retry policy (botocore's, above), not s3fs's five tries of it
        elif url.startswith("file://"):
            self.scheme = "file"
            self.root = str(Path(url.removeprefix("file://")).resolve())
            self.fs = fsspec.filesystem("file", auto_mkdir=True)
        else:
            raise StoreError(f"store {url!r}: expected file:///dir or s3://bucket/prefix")
        self.endpoint_url = endpoint_url
        self.url = f"{self.scheme}://{self.root}"

    @classmethod
    def from_settings(cls, settings: Any) -> Store:
        return cls(settings.store, settings.s3_endpoint_url, settings.storage)

    @classmethod
    def for_run(cls, settings: Any) -> Store:
        """This run's prefix (`runs/<run_id>/`) of the configured store: where every stage of a run
        reads and writes."""
        return cls.from_settings(settings).child(settings.run_prefix)

    def child(self, prefix: str) -> Store:
        """A view of the store under `prefix` (same filesystem, new root)."""
        sub = Store.__new__(Store)
        sub.scheme, sub.fs, sub.endpoint_url = self.scheme, self.fs, self.endpoint_url
        sub.root = self._path(prefix)
        sub.url = f"{self.scheme}://{sub.root}"
        return sub

    def _path(self, key: str) -> str:
        key = key.strip("/")
        if ".." in key.split("/"):
            raise StoreError(f"key {key!r} escapes the store root {self.url}")
        return f"{self.root}/{key}" if key else self.root

    def uri(self, key: str = "") -> str:
        """The full address of a key, for libraries that take URLs (s3://... or a local path)."""
        path = self._path(key)
        return f"s3://{path}" if self.scheme == "s3" else path

    # -- objects -----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            if self.scheme == "file":
                # Write then rename: a reader never sees half an object, as on S3.
                tmp = f"{path}.tmp-{os.getpid()}"
                self.fs.pipe_file(tmp, data)
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.uri(key)}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot read {self.uri(key)}: {exc}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` only if no object has that key; False if one exists. Atomic on both backends:
        O_EXCL on a local folder, a conditional PUT (`If-None-Match: *`) on S3."""
        path = self._path(key)
        if self.scheme == "file":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(path, "xb") as fh:
                    fh.write(data)
            except FileExistsError:
                return False
            return True
        bucket, _, name = path.partition("/")
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data, IfNoneMatch="*")
        except FileExistsError:  # s3fs's mapping of 412 Precondition Failed
            return False
        except OSError as exc:
            if "NotImplemented" not in str(exc):
                raise StoreError(f"cannot write {self.uri(key)}: {exc}") from exc
            # A server without conditional writes: read-check-write, which narrows but cannot close
            # the race; fencing re-checks after writing.
            if self.exists(key):
                return False
            self.put_bytes(key, data)
        return True

    def put_text(self, key: str, text: str) -> None:
        self.put_bytes(key, text.encode("utf-8"))

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def put_file(self, local: Path | str, key: str) -> None:
        try:
            self.fs.put_file(str(local), self._path(key))
        except OSError as exc:
            raise StoreError(f"cannot upload {local} to {self.uri(key)}: {exc}") from exc

    def get_file(self, key: str, local: Path | str) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self._path(key), str(local))

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def list(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix` (recursive), relative to the store root, sorted."""
        base = self._path(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.root + "/"
        return sorted(p[len(root) :] for p in found if p.startswith(root) and not _is_temp(p))

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-prefixes of `prefix`, sorted."""
        base = self._path(prefix)
        try:
            entries = self.fs.ls(base, detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")

    def delete(self, prefix: str) -> None:
        """Delete a key or everything under a prefix; a missing one is not an error."""
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def sha256(self, key: str) -> str:
        with self.fs.open(self._path(key), "rb") as fh:
            return _sha256_stream(fh)

    @contextmanager
    def library_env(self) -> Iterator[None]:
        """Environment for libraries that reach S3 through boto3 themselves (mosaicml-streaming)."""
        if self.scheme != "s3" or not self.endpoint_url:
            yield
            return
        saved = os.environ.get("S3_ENDPOINT_URL")
        os.environ["S3_ENDPOINT_URL"] = self.endpoint_url
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("S3_ENDPOINT_URL", None)
            else:
                os.environ["S3_ENDPOINT_URL"] = saved

    def __repr__(self) -> str:
        return f"Store({self.url!r})"


def _is_temp(path: str) -> bool:
    return ".tmp-" in path.rsplit("/", 1)[-1]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as fh:
        return _sha256_stream(fh)


def _sha256_stream(fh: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def with_retries(call: Callable[[], T], what: str, attempts: int = 5, first_wait_s: float = 1.0,
                 transient: tuple[type[BaseException], ...] = (OSError,),
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried on a transient error with exponential backoff and jitter (1, 2, 4, ... s).

    For the calls botocore's own retries do not cover (the Hugging Face Hub, a library's own
    client); the last error is raised with `what` named."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except transient as exc:
            if attempt == attempts:
                raise
            wait = first_wait_s * 2 ** (attempt - 1) * (0.5 + random.random())
            log.warning("%s failed (%s); retry %d of %d in %.1f s", what, exc, attempt, attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")
