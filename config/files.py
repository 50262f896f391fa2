"""Small files that must never be torn, and the locks that keep two processes from writing them at once.

Every metadata file (aliases, index specs, checkpoints) is written through :func:`atomic_write_text`: a
temporary file with a unique name in the same folder, fsynced, then renamed over the target, so a reader
sees the old file or the new one and never half of either, and two writers never share a temporary name.
:func:`read_json_file` turns a file that does not parse into one ``ConfigError`` naming the file and what
to do. :class:`FileLock` is an OS lock (``flock``) that the kernel releases when its process dies, so a
lock can never outlive its holder; the file records who holds it so the refusal can say so.
This module must never import anything heavy; it knows nothing of indexes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hybrid_search.config.errors import ConfigError, IndexLocked

__all__ = ["FileLock", "atomic_write_text", "describe_holder", "holder_info", "read_json_file"]


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably (unique temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself is durable once the folder is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_json_file(path: Path, *, expect: type, fix: str) -> Any:
    """The JSON value in ``path``, which must be a ``expect`` (dict or list); ``ConfigError`` naming the file
    and ``fix`` (what the user should do) when it cannot be read, does not parse or has another shape."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text (damaged?): {fix}") from None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        why = f"{exc.msg} at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ConfigError(f"{path} is damaged (not valid JSON: {why}): {fix}") from None
    if not isinstance(value, expect):
        raise ConfigError(
            f"{path} is damaged (it holds a JSON {type(value).__name__}, not a {expect.__name__}): {fix}"
        ) from None
    return value


def holder_info() -> dict[str, Any]:
    """Who this process is, for a lock's record: pid, host and when it took the lock."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat(timespec="seconds")}


def describe_holder(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "another process"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('since', '?')}"


class FileLock:
    """An exclusive, non-blocking (or briefly waiting) OS lock on ``path``, recording its holder inside.

    ``acquire`` raises :class:`IndexLocked` built by ``refusal(holder)`` when another process holds it.
    The kernel drops the lock when the holding process exits, however it exits, so no lock is ever stale.
    """

    def __init__(self, path: Path, refusal: Callable[[dict[str, Any] | None], str], *, wait: float = 0.0) -> None:
        self.path = path
        self.refusal = refusal
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = self._read(fd)
                    os.close(fd)
                    raise IndexLocked(self.refusal(holder)) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info()).encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> dict[str, Any] | None:
        try:
            raw = os.pread(fd, 4096, 0)
            value = json.loads(raw) if raw else None
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @property
    def held_now(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
