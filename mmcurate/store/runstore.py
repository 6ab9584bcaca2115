"""The run directory is the annotation store: atomic Parquet parts, run.json, decisions.

Layout::

    OUT/run.json                         recipe, inputs, versions, status, counts, output names
    OUT/.mmcurate.store.lock                   held while a run writes here (see :mod:`mmcurate.store.lock`)
    OUT/annotations/read/NAME-FP.parquet one row per sample of an input shard: pos, key, members, sizes
    OUT/annotations/STEP/NAME-FP.parquet pos, key + the step's columns (+ error) for one input shard
    OUT/state/NAME-ID.parquet            while a run decides: each input shard's samples, alive or dropped
    OUT/reference/                       a store of this layout for reference shards (``--against``)
    OUT/order/                           while an ``output.order`` is written: which samples go where
    OUT/decisions.parquet/NNNNNNNN-NAME.parquet  a dataset, one file per input shard (in input order):
                                         every input sample, kept or dropped, by which step, why
    OUT/decisions.parquet/_shards.parquet  url, identity and file of each input shard
    OUT/shards/PREFIX-000000.tar ...     the curated set, with shards/index.json (wids format)
    OUT/shards/.pieces/                  pieces of output shards while they are written

``pos`` (the sample's place in its shard, from 0) identifies a sample inside a shard; its key
is data, and may repeat.

``OUT`` may be a local folder or a URL on an fsspec object store (``s3://bucket/run``, see
:mod:`mmcurate.io.location`): there every file is one whole object, written once, never renamed.

Every file but the lock is written through :func:`mmcurate.io.atomic.atomic_file`. mmcurate
deletes only what run.json records it wrote (``outputs``: names in ``shards/``), their pieces
and temporary files, and a replaced run's decisions files and report.html; annotation parts
are never deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from typing import Any, ContextManager, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..io.atomic import atomic_file, atomic_write_bytes, tmp_target
from ..io.inputs import ShardRef
from ..io.location import Location, file_names, inside, location, read_whole
from .lock import LOCK_NAME, hold

__all__ = ["RunConflict", "RunStore", "atomic_write_bytes", "atomic_write_table", "rows_to_table"]

_log = logging.getLogger("mmcurate")

INDEX = "index.json"
_INDEX_SCHEMA = pa.schema([("url", pa.string()), ("identity", pa.string()), ("file", pa.string())])
PIECES = ".pieces"
_PIECE = re.compile(r"(.+)\.\d{6}\.piece")


class RunConflict(RuntimeError):
    """The output directory cannot take this run: it holds a different run (and --overwrite was
    not given), files of its own, or the inputs; or another run holds it."""


def atomic_write_table(path: Location, table: pa.Table, durable: bool = True) -> None:
    """``table`` as Parquet at ``path``, atomically; ``durable=False`` for scratch (not fsync'd)."""
    with atomic_file(path, durable) as fh:
        pq.write_table(table, fh, compression="zstd")


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

    def __init__(self, root: str | os.PathLike | Location):
        self.root = location(root)
        """Absolute (or a URL), so tasks on workers with another working directory find the same run."""

    @property
    def run_json(self) -> Location:
        return self.root / "run.json"

    @property
    def decisions_path(self) -> Location:
        return self.root / "decisions.parquet"

    def begin_decisions(self) -> None:
        """Make way for this run's decisions dataset: the single decisions file an earlier version
        of mmcurate wrote for this run (run.json matched) is removed."""
        if self.decisions_path.is_file():
            self.decisions_path.unlink()

    @property
    def decisions_index(self) -> Location:
        """``decisions.parquet/_shards.parquet``: url, identity and file of every input shard
        (readers of the dataset skip names starting with ``_``)."""
        return self.decisions_path / "_shards.parquet"

    def write_decisions_index(self, urls: Sequence[str], identities: Sequence[str]) -> None:
        files = [self.decisions_file(i, ShardRef(url, "").name).name for i, url in enumerate(urls)]
        atomic_write_table(self.decisions_index, pa.table({"url": urls, "identity": identities, "file": files}, schema=_INDEX_SCHEMA))

    def decisions_file(self, index: int, shard_name: str) -> Location:
        """The file of input shard number ``index`` in the decisions dataset (names sort in input order)."""
        return self.decisions_path / f"{index:08d}-{shard_name}.parquet"

    @property
    def shards_dir(self) -> Location:
        return self.root / "shards"

    def part_path(self, step_id: str, part_name: str) -> Location:
        return self.root / "annotations" / step_id / part_name

    def piece_path(self, shard_name: str, segment: int) -> Location:
        """Where segment ``segment`` of output shard ``shard_name`` is written before joining."""
        return self.shards_dir / PIECES / f"{shard_name}.{segment:06d}.piece"

    def read_part_if_readable(self, path: Location) -> pa.Table | None:
        """The stored part at ``path``; None when it does not exist or cannot be read (left
        damaged by a crash or a full disk), so the caller recomputes it. An unreadable part is
        logged as a warning naming it and the error. It is read from one open file, so a part
        replaced meanwhile (in a shared cache) reads whole, old or new."""
        try:
            return read_whole(path)
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowException) as exc:
            _log.warning("mmcurate: warning: %s: stored part unreadable (%s: %s); recomputing it", path, type(exc).__name__, exc)
            return None

    def read_rows(self, path: Location) -> dict[int, dict[str, Any]]:
        """pos -> row (key, columns, error) of a stored part; empty when the part does not exist or is unreadable."""
        table = self.read_part_if_readable(path)
        if table is None:
            return {}
        return {row.pop("pos"): row for row in table.to_pylist()}

    def write_rows(
        self, path: Location, positions: Sequence[int], keys: Sequence[str], rows: Sequence[Mapping[str, Any]], columns: Mapping[str, pa.DataType]
    ) -> None:
        atomic_write_table(path, rows_to_table(positions, keys, rows, columns))

    def load_run_info(self) -> dict[str, Any] | None:
        if not self.run_json.exists():
            return None
        return json.loads(self.run_json.read_text())

    def save_run_info(self, info: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.run_json, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())

    def lock(self) -> ContextManager[None]:
        """Hold the directory's lock (see :func:`mmcurate.store.lock.hold`); creates the directory."""
        return hold(self.root)

    def refuse_inputs_inside(self, urls: Iterable[str]) -> None:
        """Raise :class:`RunConflict` if an input lies inside this directory."""
        for url in urls:
            if inside(self.root, url):
                raise RunConflict(f"{self.root}: contains the input {url}; choose an --out outside the input data")

    def prepare(self, identity: str, describe: str, overwrite: bool, keep_outputs: bool = False) -> list[str]:
        """Make the directory ready for the run ``identity``: resume it, or refuse another run.

        Returns the names in ``shards/`` that run.json records mmcurate wrote here (a resumed
        run keeps them in its record). With ``overwrite``, a different run's recorded output
        shards, decisions and report are removed; its stored annotations stay and are reused
        wherever their fingerprints still match. With ``keep_outputs`` (a run that writes
        shards) its output shards stay recorded instead, and only its index is removed: the
        write keeps those whose bytes would not change and removes the rest. A directory that
        holds files but no run is always refused: nothing proves mmcurate wrote them.
        """
        info = self.load_run_info()
        if info is None:
            others = sorted(p.name for p in self.root.iterdir() if p.name != LOCK_NAME) if self.root.is_dir() else []
            if others:
                raise RunConflict(
                    f"{self.root}: is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
                    f"and holds no mmcurate run; choose a new or empty --out"
                )
            return []
        recorded = self._recorded_outputs(info)
        if info.get("identity") == identity:
            return recorded
        if not overwrite:
            raise RunConflict(
                f"{self.root}: holds a different run ({info.get('describe', 'unknown')}); "
                f"pass --overwrite to replace it (only files that run wrote are removed; its stored "
                f"annotations are reused where they still match), or choose another --out"
            )
        self.remove_outputs([INDEX] if keep_outputs else recorded)
        self.remove_decisions(info)
        (self.root / "report.html").unlink(missing_ok=True)
        return recorded if keep_outputs else []

    def written(self, names: Iterable[str]) -> dict[str, Any]:
        """What run.json records about each output shard of ``names`` it wrote (see
        :func:`mmcurate.io.output.unchanged`), before a new run replaces the record."""
        records = (self.load_run_info() or {}).get("written") or {}
        return {name: records[name] for name in names if name in records}

    def remove_decisions(self, info: Mapping[str, Any]) -> None:
        """Delete the decisions of the run ``info`` records: the files its inputs named in the
        dataset (and their temporary files), or the single file runs before it wrote."""
        if not self.decisions_path.is_dir():
            self.decisions_path.unlink(missing_ok=True)
            return
        names = {self.decisions_file(i, ShardRef(url, "").name).name for i, url in enumerate(info.get("inputs", []))}
        names.add(self.decisions_index.name)
        self._remove(self.decisions_path, names)
        with contextlib.suppress(OSError):  # only if empty
            self.decisions_path.rmdir()

    def _recorded_outputs(self, info: Mapping[str, Any]) -> list[str]:
        if "outputs" in info:
            return list(info["outputs"])
        index = self.shards_dir / INDEX  # a run written before run.json recorded its outputs
        if not index.exists():
            return []
        return [INDEX] + [e["url"] for e in json.loads(index.read_text())["shardlist"] if "/" not in e["url"]]

    def begin_outputs(self, info: dict[str, Any], names: list[str]) -> None:
        """Record in run.json (``info``) that output shards ``names`` are about to be written,
        before any is; clear pieces that an interrupted write of recorded shards left behind.

        Raises :class:`RunConflict` if a file of one of those names exists that no record shows
        mmcurate wrote.
        """
        recorded = set(info.get("outputs", []))
        for name in names + [INDEX]:
            path = self.shards_dir / name
            if name not in recorded and (path.exists() or path.is_symlink()):
                raise RunConflict(f"{path}: exists, and nothing shows mmcurate wrote it; move it away or choose another --out")
        info["outputs"] = sorted(recorded | set(names) | {INDEX})
        self.save_run_info(info)
        self._remove(self.shards_dir, info["outputs"], temporary_only=True)
        self._remove(self.shards_dir / PIECES, info["outputs"])

    def finish_outputs(self, info: dict[str, Any], names: list[str]) -> None:
        """After output shards ``names`` and the index are written: delete the recorded outputs
        that are no longer part of the run, and record exactly ``names`` (and the index)."""
        current = set(names) | {INDEX}
        self.remove_outputs(set(info.get("outputs", [])) - current)
        with contextlib.suppress(OSError):  # only if empty: it is never deleted with content
            (self.shards_dir / PIECES).rmdir()
        info["outputs"] = sorted(current)
        self.save_run_info(info)

    def remove_outputs(self, names: Iterable[str]) -> None:
        """Delete the output files ``names`` in ``shards/`` (names run.json recorded), with their
        pieces and temporary files; nothing else."""
        names = list(names)
        self._remove(self.shards_dir, names)
        self._remove(self.shards_dir / PIECES, names)

    def _remove(self, folder: Location, names: Iterable[str], temporary_only: bool = False) -> None:
        """Delete the files in ``folder`` that belong to output ``names``: the files themselves,
        their pieces (in ``.pieces``) and temporary files (only those with ``temporary_only``)."""
        names = set(names)
        pieces = folder.name == PIECES
        for entry in file_names(folder):
            target = tmp_target(entry)
            if temporary_only and target is None:
                continue
            name = target or entry
            if pieces:
                piece = _PIECE.fullmatch(name)
                name = piece.group(1) if piece else ""
            if name in names:
                (folder / entry).unlink()

