"""Per-shard decision state: kept by workers in the run directory, so the driver holds none per sample.

While a run decides, ``OUT/state/NAME-ID.parquet`` holds one row per sample of an input shard,
in tar order (row ``i`` is ``pos`` ``i``): ``pos``, ``key``, ``nbytes`` (the sample's bytes in an
output tar), and ``step``/``reason`` (null while the sample is alive). The first group task
writes it from the shard's manifest, anew in every call, so it is scratch (renamed into place,
never fsync'd); every later stage reads the alive positions from it and records its drops in it
(:func:`alive_positions`, :func:`record_drops`: the seam global steps use). Tasks return only a
:class:`ShardSummary`. At the end :func:`finish` turns a shard's state into its file of the
decisions dataset (``OUT/decisions.parquet/``) and removes the state file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.inputs import ShardRef
from ..io.location import Location, read_table
from ..store.runstore import RunStore, atomic_write_table
from .plan import READ_STEP, digest

__all__ = [
    "DECISIONS_SCHEMA",
    "STATE_SCHEMA",
    "RunState",
    "ShardSummary",
    "alive_positions",
    "create_state",
    "drop_groups",
    "finish",
    "kept_rows",
    "read_state",
    "record_drops",
    "record_verdicts",
    "state_path",
]

STATE_DIR = "state"
STATE_SCHEMA = pa.schema(
    [("pos", pa.int64()), ("key", pa.string()), ("nbytes", pa.int64()), ("step", pa.string()), ("reason", pa.string())]
)
DECISIONS_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("key", pa.string()),
        ("pos", pa.int64()),
        ("kept", pa.bool_()),
        ("step", pa.string()),
        ("reason", pa.string()),
        ("output_shard", pa.string()),
    ]
)
GROUPS_SCHEMA = pa.schema([("step", pa.string()), ("reason", pa.string()), ("count", pa.int64()), ("first", pa.int64())])


@dataclass(frozen=True)
class ShardSummary:
    """What a task tells the driver about one input shard: counts, never samples."""

    samples: int
    kept: int
    groups: pa.Table
    """Drops per (step, reason category): ``count`` and ``first`` (the lowest pos), see :func:`drop_groups`."""
    keys: tuple[str, str] | None = None
    """The lowest and highest key of the kept samples (``None`` when none is kept)."""

    def offset(self, rows: int) -> pa.Table:
        """``groups`` with ``first`` counted from the shard's first row in the whole run, ``rows``."""
        return self.groups.set_column(3, "first", pc.add(self.groups["first"], rows))

    @classmethod
    def empty(cls) -> "ShardSummary":
        return cls(0, 0, GROUPS_SCHEMA.empty_table())


def state_path(store: RunStore, shard: ShardRef) -> Location:
    return store.root / STATE_DIR / f"{shard.name}-{digest([shard.url, shard.identity])}.parquet"


def create_state(
    store: RunStore, shard: ShardRef, keys: Sequence[str], nbytes: Sequence[int], errors: Sequence[str | None], drops: Mapping[int, tuple[str, str]]
) -> ShardSummary:
    """Write the state of a shard as read (samples with a read error are dropped by ``read``)
    with the first group's ``drops`` (pos -> (step, reason)), in one write; return its summary."""
    steps = [READ_STEP if e else None for e in errors]
    reasons = list(errors)
    for pos, (step, reason) in drops.items():
        steps[pos], reasons[pos] = step, reason
    table = pa.table(
        {
            "pos": pa.array(np.arange(len(keys)), pa.int64()),
            "key": pa.array(keys, pa.string()),
            "nbytes": pa.array(nbytes, pa.int64()),
            "step": pa.array(steps, pa.string()),
            "reason": pa.array(reasons, pa.string()),
        },
        schema=STATE_SCHEMA,
    )
    atomic_write_table(state_path(store, shard), table, durable=False)
    return summarise(table)


def read_state(store: RunStore, shard: ShardRef, columns: list[str] | None = None) -> pa.Table:
    return read_table(state_path(store, shard), columns=columns)


def alive_positions(store: RunStore, shard: ShardRef) -> np.ndarray:
    """Positions (int64, ascending) of the samples of ``shard`` no stage has dropped yet."""
    table = read_state(store, shard, ["pos", "step"])
    return table.filter(pc.is_null(table["step"]))["pos"].to_numpy()


def record_drops(
    store: RunStore, shard: ShardRef, positions: np.ndarray | Sequence[int], steps: str | Sequence[str], reasons: Sequence[str] | pa.Array
) -> ShardSummary:
    """Drop the samples at ``positions`` of ``shard``, each by its step (or all by ``steps``)
    with its reason; return the shard's summary after them. (Arrow columns throughout: no
    Python object per sample.)"""
    table = read_state(store, shard)
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions):
        n = table.num_rows
        at = np.full(n, -1, dtype=np.int64)
        at[positions] = np.arange(len(positions))
        picks = pa.array(at, pa.int64(), mask=at < 0)
        dropped = pa.array(at >= 0)
        step = pa.array([steps] * len(positions) if isinstance(steps, str) else steps, pa.string())
        reason = reasons if isinstance(reasons, pa.Array) else pa.array(reasons, pa.string())
        table = table.set_column(3, "step", pc.if_else(dropped, step.take(picks), table["step"]))
        table = table.set_column(4, "reason", pc.if_else(dropped, reason.cast(pa.string()).take(picks), table["reason"]))
        atomic_write_table(state_path(store, shard), table, durable=False)
    return summarise(table)


def summarise(table: pa.Table) -> ShardSummary:
    alive = pc.is_null(table["step"])
    bounds = pc.min_max(table["key"].filter(alive)).as_py()
    return ShardSummary(
        samples=table.num_rows,
        kept=pc.sum(alive).as_py() or 0,
        groups=drop_groups(table),
        keys=None if bounds["min"] is None else (bounds["min"], bounds["max"]),
    )


def drop_groups(table: pa.Table, offset: int = 0) -> pa.Table:
    """Drops of a decisions (or state) table per (step, reason category: the reason up to its
    first colon): ``count``, and ``first``, the lowest row number (plus ``offset``) among them."""
    dropped = pc.is_valid(table["step"])
    reason = pc.fill_null(table["reason"].filter(dropped), "")
    category = pc.list_element(pc.split_pattern(reason, ":", max_splits=1), 0)
    rows = pa.array(np.arange(offset, offset + table.num_rows), pa.int64()).filter(dropped)
    grouped = (
        pa.table({"step": table["step"].filter(dropped), "reason": category, "row": rows})
        .group_by(["step", "reason"])
        .aggregate([("row", "count"), ("row", "min")])
    )
    return pa.table(
        {"step": grouped["step"], "reason": grouped["reason"], "count": grouped["row_count"], "first": grouped["row_min"]}, schema=GROUPS_SCHEMA
    )


def kept_rows(store: RunStore, shard: ShardRef) -> pa.Table:
    """``pos``, ``key`` and ``nbytes`` of the samples of ``shard`` that are still alive, in order."""
    table = read_state(store, shard, ["pos", "key", "nbytes", "step"])
    return table.filter(pc.is_null(table["step"])).drop_columns(["step"])


def finish(store: RunStore, shard: ShardRef, index: int, outputs: Sequence[tuple[str, int, int]], failed: bool = False) -> None:
    """Write the shard's file of the decisions dataset from its state, then remove the state.

    ``outputs``: (output shard name, start, stop) of the ranges of its kept samples (numbered in
    input order) that each output shard took. A shard that ``failed`` gets an empty file: its
    samples are in no count.
    """
    path = state_path(store, shard)
    table = STATE_SCHEMA.empty_table() if failed or not path.exists() else read_table(path)
    kept = pc.is_null(table["step"])
    mask = kept.to_numpy(zero_copy_only=False)
    by_rank = np.full(int(mask.sum()), None, dtype=object)  # by the kept sample's number among the kept
    for name, start, stop in outputs:
        by_rank[start:stop] = name
    output = np.full(table.num_rows, None, dtype=object)
    output[mask] = by_rank
    decisions = pa.table(
        {
            "shard": pa.array(np.full(table.num_rows, shard.url, dtype=object), pa.string()),
            "key": table["key"],
            "pos": table["pos"],
            "kept": kept,
            "step": table["step"],
            "reason": table["reason"],
            "output_shard": pa.array(output, pa.string()),
        },
        schema=DECISIONS_SCHEMA,
    )
    atomic_write_table(store.decisions_file(index, shard.name), decisions)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the last shard's leaves the folder empty
        path.parent.rmdir()


class RunState:
    """The run's state as the driver's global-step runners see it: per shard its number of alive
    samples (from the shards' summaries, when given), positions read from its state file on
    demand (nothing is held per sample)."""

    def __init__(self, store: RunStore, shards: Sequence[ShardRef], kept: Mapping[str, int] | None = None):
        self.store = store
        self.refs = {ref.url: ref for ref in shards}
        self.kept = kept

    def alive(self, url: str) -> np.ndarray:
        return alive_positions(self.store, self.refs[url])

    def count(self, url: str) -> int:
        """How many samples of ``url`` are alive."""
        return self.kept[url] if self.kept is not None and url in self.kept else len(self.alive(url))


def record_verdicts(store: RunStore, shard: ShardRef, drops: Mapping[int, tuple[str, str]]) -> ShardSummary:
    """:func:`record_drops` of ``pos -> (step, reason)``."""
    order = sorted(drops)
    return record_drops(store, shard, order, [drops[p][0] for p in order], [drops[p][1] for p in order])

