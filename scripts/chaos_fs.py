"""``flaky://``: the local filesystem, but reads fail at random (for ``scripts/chaos.py``).

``flaky:///abs/path.tar`` reads ``/abs/path.tar``; each ``read()`` raises
``ConnectionResetError`` with probability ``$CHAOS_READ_FAIL_P`` (unset or 0: never), the
way a network filesystem drops a connection mid-shard. Listing and ``info`` never fail.

Dask worker processes are fresh interpreters, so a registration made in the driver is
invisible to them. fsspec reads the ``fsspec.specs`` entry points when it is imported;
:func:`install` writes a tiny ``.dist-info`` that declares this module as the ``flaky``
protocol, and every process whose ``PYTHONPATH`` holds that folder and this one finds it.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "flaky"
RATE_VAR = "CHAOS_READ_FAIL_P"


class _FlakyFile:
    """A file whose every ``read`` may raise ``ConnectionResetError`` first."""

    def __init__(self, fh: Any, rate: float):
        self._fh, self._rate = fh, rate

    def read(self, size: int = -1) -> bytes:
        if self._rate and random.random() < self._rate:
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer (injected by chaos_fs)")
        return self._fh.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> "_FlakyFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


class FlakyFileSystem(LocalFileSystem):
    """Local files under ``flaky://``; reads fail with probability ``$CHAOS_READ_FAIL_P``."""

    protocol = (PROTOCOL,)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        fh = super()._open(path, mode, **kwargs)
        rate = float(os.environ.get(RATE_VAR) or 0)
        return _FlakyFile(fh, rate) if "r" in mode and rate else fh

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self._strip_protocol(name)}"


def install(folder: Path) -> list[str]:
    """Declare the ``flaky`` protocol in ``folder``; returns the ``PYTHONPATH`` entries a
    process needs (``folder`` and the folder of this module)."""
    info = folder / "mmcurate_chaos_fs-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmcurate-chaos-fs\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[fsspec.specs]\n{PROTOCOL} = {__name__}:FlakyFileSystem\n")
    return [str(folder), str(Path(__file__).resolve().parent)]
