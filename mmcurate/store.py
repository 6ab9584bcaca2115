"""The run directory is the annotation store: atomic Parquet parts, run.json, decisions.

Layout::

    OUT/run.json                         recipe, inputs, versions, status, counts
    OUT/annotations/read/NAME-FP.parquet one row per sample of an input shard: pos, key, members, sizes
    OUT/annotations/STEP/NAME-FP.parquet pos, key + the step's columns (+ error) for one input shard

``pos`` (the sample's place in its shard, from 0) identifies a sample inside a shard; its key is
data, and may repeat.
    OUT/decisions.parquet                every input sample: kept or dropped, by which step, why
    OUT/shards/PREFIX-000000.tar ...     the curated set, with shards/index.json (wids format)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["RunConflict", "RunStore", "atomic_write_bytes", "rows_to_table"]


class RunConflict(RuntimeError):
    """The output directory holds a different run (or other files) and --overwrite was not given."""


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_table(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def rows_to_table(
    positions: Sequence[int], keys: Sequence[str], rows: Sequence[Mapping[str, Any]], columns: Mapping[str, pa.DataType]
) -> pa.Table:
    """A table with ``pos``, ``key``, the declared ``columns`` and ``error``, one row per sample."""
    data = {"pos": pa.array(positions, pa.int64()), "key": pa.array(keys, pa.string())}
    for name, dtype in columns.items():
        data[name] = pa.array([r.get(name) for r in rows], type=dtype)
    data["error"] = pa.array([r.get("error") for r in rows], pa.string())
    return pa.table(data)


class RunStore:
    """Paths and atomic reads/writes inside one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def decisions_path(self) -> Path:
        return self.root / "decisions.parquet"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    def part_path(self, step_id: str, part_name: str) -> Path:
        return self.root / "annotations" / step_id / part_name

    def read_rows(self, path: Path) -> dict[int, dict[str, Any]]:
        """pos -> row (key, columns, error) of a stored part; empty when the part does not exist."""
        if not path.exists():
            return {}
        return {row.pop("pos"): row for row in pq.read_table(path).to_pylist()}

    def write_rows(
        self, path: Path, positions: Sequence[int], keys: Sequence[str], rows: Sequence[Mapping[str, Any]], columns: Mapping[str, pa.DataType]
    ) -> None:
        atomic_write_table(path, rows_to_table(positions, keys, rows, columns))

    def load_run_info(self) -> dict[str, Any] | None:
        if not self.run_json.exists():
            return None
        return json.loads(self.run_json.read_text())

    def save_run_info(self, info: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.run_json, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())

    def prepare(self, identity: str, describe: str, overwrite: bool) -> None:
        """Make the directory ready for the run ``identity``: resume it, or refuse another run.

        With ``overwrite``, a different run's decisions, shards and report are removed; its
        stored annotations stay and are reused wherever their fingerprints still match.
        """
        info = self.load_run_info()
        if info is not None and info.get("identity") == identity:
            return
        if info is None and self.root.exists() and any(self.root.iterdir()) and not overwrite:
            raise RunConflict(f"{self.root}: exists, is not empty and holds no mmcurate run; choose another --out or pass --overwrite")
        if info is not None and not overwrite:
            raise RunConflict(
                f"{self.root}: holds a different run ({info.get('describe', 'unknown')}); "
                f"pass --overwrite to replace it (stored annotations are reused where they still match), "
                f"or choose another --out"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        for path in (self.run_json, self.decisions_path, self.root / "report.html"):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.shards_dir, ignore_errors=True)

    def write_decisions(self, table: pa.Table) -> None:
        atomic_write_table(self.decisions_path, table)


def remove_stale(folder: Path, keep: Iterable[str], pattern: str) -> None:
    """Delete files matching ``pattern`` in ``folder`` whose names are not in ``keep``."""
    keep = set(keep)
    for path in folder.glob(pattern):
        if path.name not in keep:
            path.unlink()
