"""One run at a time per output directory: an exclusive lock on ``OUT/.mmcurate.store.lock``.

The lock is an ``fcntl.flock`` on that file, which the kernel releases when its holder exits,
however it exits, so a lock left by a killed run is free and simply taken over. The file holds
the holder's pid, host and start time for the message a second run gets; it is removed on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_NAME", "RunLocked", "hold"]

LOCK_NAME = ".mmcurate.store.lock"
_log = logging.getLogger("mmcurate")


class RunLocked(RuntimeError):
    """Another run is writing to the output directory."""


def _holder(fd: int) -> str:
    """The holder a lock file describes, e.g. ``pid 123 on host a, started 2026-01-02T03:04:05Z``."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, TypeError, KeyError):
        return ""


def _open_locked(path: Path) -> int:
    """Open and lock ``path`` (created if missing); raise :class:`RunLocked` if it is held."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or "holder unknown"
            os.close(fd)
            raise RunLocked(f"{path.parent}: another mmcurate run is writing here ({holder}); wait for it to end or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.fstat(fd).st_ino == path.stat().st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed the file as we locked it: lock the new one


@contextlib.contextmanager
def hold(root: Path) -> Iterator[None]:
    """Hold the lock on ``root`` (created if missing) until the block ends, also on exceptions.

    Raises :class:`RunLocked` naming the holder (pid, host, start time) if another run holds it.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = _open_locked(path)
    try:
        previous = _holder(fd)
        if previous:
            _log.warning("mmcurate: note: %s: taking over the lock of a run that no longer holds it (%s)", path, previous)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a run waiting on this file then retries
        os.close(fd)
