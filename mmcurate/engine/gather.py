"""Input of a global step: keys and a few stored columns of every alive sample, never bytes.

Each shard's rows are read by a worker task (:func:`read_rows`) from the shard's state (its
alive positions) and its stored parts, as Arrow and numpy arrays; the driver only lists what to
read (:class:`ShardSpec`: the shard, its number of alive samples and the parts' columns).
Rows are numbered globally: reference rows (``--against``, read per reference shard by
:mod:`.reference`) first, then the alive samples of every shard in input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..io.inputs import ShardRef
from ..io.location import location, read_table
from ..store.runstore import RunStore
from .state import RunState, alive_positions
from .plan import AnnotatePlan, GlobalPlan

__all__ = ["ShardRows", "ShardSpec", "read_columns", "read_rows", "shard_specs"]


@dataclass
class ShardSpec:
    """What a worker reads for one shard: its alive positions, and per stored part the columns."""

    index: int
    ref: ShardRef
    root: str
    first_row: int
    count: int
    """Alive samples (the worker reads their positions from the shard's state)."""
    parts: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.ref.url


@dataclass
class ShardRows:
    """One shard's alive rows: global row numbers, positions, keys and the step's columns (arrays:
    a task's memory is the arrays' size, not a Python object per row)."""

    index: int
    ref: ShardRef
    rows: np.ndarray
    pos: np.ndarray
    keys: pa.Array
    columns: dict[str, pa.Array]

    @property
    def url(self) -> str:
        return self.ref.url


def shard_specs(store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], first_row: int) -> list[ShardSpec]:
    """One spec per shard with alive samples, rows numbered from ``first_row``."""
    by_source: dict[str, tuple[AnnotatePlan, list[str]]] = {}
    for col in plan.columns:
        source = plan.sources[col]
        by_source.setdefault(source.id, (source, []))[1].append(col)
    specs = []
    for index, ref in enumerate(shards):
        count = ledger.count(ref.url)
        if not count:
            continue
        parts = [(str(store.part_path(source.id, source.part_name(ref))), cols) for source, cols in by_source.values()]
        specs.append(ShardSpec(index, ref, str(store.root), first_row, count, parts))
        first_row += count
    return specs


def read_rows(spec: ShardSpec) -> ShardRows:
    """The alive rows of one shard, read from its state and stored parts (a worker task)."""
    alive = alive_positions(RunStore(spec.root), spec.ref)
    if len(alive) != spec.count:
        raise RuntimeError(f"{spec.url}: {len(alive)} alive samples in its state, {spec.count} expected")
    keys, columns = read_columns(spec.parts, alive, spec.url)
    n = len(alive)
    return ShardRows(spec.index, spec.ref, np.arange(spec.first_row, spec.first_row + n, dtype=np.int64), alive, keys, columns)


def read_columns(parts: list[tuple[str, list[str]]], positions: np.ndarray, url: str) -> tuple[pa.Array, dict[str, pa.Array]]:
    """The keys and, per stored part ``(path, columns)``, those columns of the samples of shard
    ``url`` at ``positions`` (ascending), as Arrow arrays."""
    columns: dict[str, pa.Array] = {}
    keys = pa.array([], pa.string())
    for path, cols in parts:
        table = read_table(location(path), columns=["pos", "key", *cols])
        stored = table.column("pos").to_numpy()
        order = np.argsort(stored, kind="stable")
        rows = order[np.minimum(np.searchsorted(stored, positions, sorter=order), max(len(stored) - 1, 0))] if len(stored) else order
        if len(rows) != len(positions) or not np.array_equal(stored[rows], positions):
            raise ValueError(f"{path}: the stored part lacks alive samples of {url}")
        picked = table.take(rows)
        keys = picked.column("key").combine_chunks()
        for col in cols:
            columns[col] = picked.column(col).combine_chunks()
    return keys, columns
