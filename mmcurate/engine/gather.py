"""Input of a global step: keys and a few stored columns of every alive sample, never bytes.

Each shard's rows are read by a worker task (:func:`read_rows`) from the stored parts; the
driver only lists what to read (:class:`ShardSpec`: the shard's alive positions as one array).
Rows are numbered globally: an earlier run's kept rows (``--against``) first, then the alive
samples of every shard in input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.inputs import ShardRef
from ..io.location import location, read_table
from ..steps.dedup.results import PriorRows
from ..store.runstore import RunStore
from .state import RunState
from .plan import AnnotatePlan, GlobalPlan

__all__ = ["PRIOR", "ShardRows", "ShardSpec", "prior_rows", "read_rows", "shard_specs"]

PRIOR = -1
"""The shard index of an earlier run's rows."""


@dataclass
class ShardSpec:
    """What a worker reads for one shard: its alive positions, and per stored part the columns."""

    index: int
    url: str
    first_row: int
    alive: np.ndarray  # int64 positions, ascending
    parts: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass
class ShardRows:
    """One shard's alive rows: global row numbers, positions, keys and the step's columns."""

    index: int
    url: str
    rows: np.ndarray
    pos: np.ndarray
    keys: list[str]
    columns: dict[str, list[Any]]


def shard_specs(store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], first_row: int) -> list[ShardSpec]:
    """One spec per shard with alive samples, rows numbered from ``first_row``."""
    by_source: dict[str, tuple[AnnotatePlan, list[str]]] = {}
    for col in plan.columns:
        source = plan.sources[col]
        by_source.setdefault(source.id, (source, []))[1].append(col)
    specs = []
    for index, ref in enumerate(shards):
        alive = np.asarray(ledger.alive(ref.url), dtype=np.int64)
        if not len(alive):
            continue
        parts = [(str(store.part_path(source.id, source.part_name(ref))), cols) for source, cols in by_source.values()]
        specs.append(ShardSpec(index, ref.url, first_row, alive, parts))
        first_row += len(alive)
    return specs


def read_rows(spec: ShardSpec) -> ShardRows:
    """The alive rows of one shard, read from its stored parts (a worker task)."""
    columns: dict[str, list[Any]] = {}
    keys: list[str] = []
    for path, cols in spec.parts:
        table = read_table(location(path), columns=["pos", "key", *cols])
        stored = table.column("pos").to_numpy()
        order = np.argsort(stored, kind="stable")
        rows = order[np.minimum(np.searchsorted(stored, spec.alive, sorter=order), max(len(stored) - 1, 0))] if len(stored) else order
        if len(rows) != len(spec.alive) or not np.array_equal(stored[rows], spec.alive):
            raise ValueError(f"{path}: the stored part lacks alive samples of {spec.url}")
        picked = table.take(rows)
        keys = picked.column("key").to_pylist()
        for col in cols:
            columns[col] = picked.column(col).to_pylist()
    n = len(spec.alive)
    return ShardRows(spec.index, spec.url, np.arange(spec.first_row, spec.first_row + n, dtype=np.int64), spec.alive, keys, columns)


def prior_rows(priors: list[PriorRows], plan: GlobalPlan) -> ShardRows:
    """The kept rows of earlier runs as one pseudo-shard (index :data:`PRIOR`), rows from 0."""
    keys: list[str] = []
    columns: dict[str, list[Any]] = {c: [] for c in plan.columns}
    for prior in priors:
        missing = [c for c in plan.columns if c not in prior.columns]
        if missing:
            raise ValueError(f"--against {prior.source}: the earlier run has no column(s) {', '.join(missing)} for step {plan.id}")
        keys += prior.keys
        for col in plan.columns:
            columns[col] += list(prior.columns[col])
    n = len(keys)
    return ShardRows(PRIOR, "", np.arange(n, dtype=np.int64), np.full(n, -1, dtype=np.int64), keys, columns)
