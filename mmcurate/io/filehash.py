"""SHA-256 of local files (model weights), computed once per file version.

Hashes are cached in ``$XDG_CACHE_HOME/mmcurate/weight-hashes.json`` (``~/.cache`` by default),
keyed by the file's real path and valid while its size, modification time, change time and
inode stay the same. Rewriting a file changes its change time even when its modification time
is set back (``os.utime`` cannot set ``st_ctime``), so a rewritten file is always hashed again;
an unchanged 1 GB checkpoint is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..store.runstore import atomic_write_bytes

__all__ = ["cache_path", "sha256_file"]

_CHUNK = 1 << 20


def cache_path() -> Path:
    """The JSON file holding the cached hashes."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmcurate" / "weight-hashes.json"


def _stamp(stat: os.stat_result) -> dict[str, int]:
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}


def _load(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: hash again
    return found if isinstance(found, dict) else {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file at ``path`` (symlinks followed), from the cache when the file
    is unchanged since it was last hashed, else streamed and recorded in the cache."""
    real = os.path.realpath(path)
    stamp = _stamp(os.stat(real))
    cache = cache_path()
    entries = _load(cache)
    entry = entries.get(real)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    if _stamp(os.stat(real)) == stamp:  # not rewritten while it was read
        entries = _load(cache)  # re-read: another process may have added entries meanwhile
        entries[real] = {**stamp, "sha256": digest.hexdigest()}
        try:
            atomic_write_bytes(cache, json.dumps(entries, indent=1, sort_keys=True).encode())
        except OSError:
            pass  # a read-only cache folder only costs hashing again next time
    return digest.hexdigest()
