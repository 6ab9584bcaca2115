"""One run at a time per output directory: an exclusive lock on ``OUT/.mmcurate.store.lock``.

On a local filesystem the lock is an ``fcntl.flock`` on that file, which the kernel releases
when its holder exits, however it exits, so a lock left by a killed run is free and simply
taken over. The file holds the holder's pid, host and start time for the message a second run
gets; it is removed on release.

On an object store there is no ``flock``: the lock is the object itself, created only if absent
(``pipe_file(mode="create")``: S3's ``If-None-Match: *``, atomic; other filesystems check, then
write). Its holder rewrites its ``renewed`` time every :data:`RENEW_S` seconds; a lock object not
renewed for :data:`STALE_S` seconds, or left on this host by a process that no longer runs, is
taken over (deleted, then created again, which is atomic only on S3-like stores). See
docs/cluster.md for the limits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from ..io.location import Location, ObjectPath, naming

__all__ = ["LOCK_NAME", "RunLocked", "hold"]

LOCK_NAME = ".mmcurate.store.lock"
RENEW_S = 60
"""How often the holder of a lock object renews it."""
STALE_S = 600
"""A lock object not renewed for this long is taken over: its holder is presumed dead."""
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


def hold(root: Location) -> contextlib.AbstractContextManager[None]:
    """Hold the lock on ``root`` (created if missing) until the block ends, also on exceptions.

    Raises :class:`RunLocked` naming the holder (pid, host, start time) if another run holds it.
    """
    return _hold_object(root) if isinstance(root, ObjectPath) else _hold_file(root)


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@contextlib.contextmanager
def _hold_file(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = _open_locked(path)
    try:
        previous = _holder(fd)
        if previous:
            _log.warning("mmcurate: note: %s: taking over the lock of a run that no longer holds it (%s)", path, previous)
        me = _me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a run waiting on this file then retries
        os.close(fd)


def _describe(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"


def _read(path: ObjectPath) -> dict[str, Any] | None:
    """The lock object's content; None when there is none (or it is not ours to parse)."""
    try:
        info = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _stale(info: dict[str, Any]) -> bool:
    """Whether the holder ``info`` describes is gone: not renewed for :data:`STALE_S` seconds, or
    a process of this host that no longer runs."""
    if time.time() - float(info.get("renewed", 0)) > STALE_S:
        return True
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return False


def _create(path: ObjectPath, me: dict[str, Any]) -> bool:
    """Create the lock object unless one exists; whether it was created."""
    try:
        with naming(path):
            path.fs.pipe_file(path.path, json.dumps(me).encode(), mode="create")
    except FileExistsError:
        return False
    return True


def _take(path: ObjectPath, me: dict[str, Any]) -> None:
    """Create the lock object, taking over a stale one; raise :class:`RunLocked` if it is held."""
    if _create(path, me):
        return
    holder = _read(path)
    if holder is not None and not _stale(holder):
        raise RunLocked(
            f"{path.parent}: another mmcurate run is writing here ({_describe(holder)}); wait for it to end or choose "
            f"another --out (a lock not renewed for {STALE_S} s is taken over; remove {path} only if you know that run is gone)"
        )
    if holder is not None:
        _log.warning("mmcurate: note: %s: taking over the lock of a run that no longer holds it (%s)", path, _describe(holder))
        path.unlink(missing_ok=True)
    if not _create(path, me):
        raise RunLocked(f"{path.parent}: another mmcurate run took this directory's lock just now; choose another --out")


def _renew(path: ObjectPath, me: dict[str, Any], stop: threading.Event) -> None:
    """Rewrite the lock's ``renewed`` time every :data:`RENEW_S` seconds while it is still ours."""
    while not stop.wait(RENEW_S):
        try:
            if (_read(path) or {}).get("token") != me["token"]:
                _log.warning("mmcurate: warning: %s: this run's lock was taken over by another run", path)
                return
            me["renewed"] = time.time()
            path.fs.pipe_file(path.path, json.dumps(me).encode())
        except Exception as exc:  # a failed renewal is retried at the next one
            _log.warning("mmcurate: warning: %s: renewing the lock failed (%s: %s)", path, type(exc).__name__, exc)


@contextlib.contextmanager
def _hold_object(root: ObjectPath) -> Iterator[None]:
    path = root / LOCK_NAME
    me = {**_me(), "renewed": time.time(), "token": uuid.uuid4().hex}
    _take(path, me)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(path, me, stop), name="mmcurate-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if (_read(path) or {}).get("token") == me["token"]:
            path.unlink(missing_ok=True)
