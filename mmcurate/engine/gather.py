"""Input of a global step: keys and a few stored columns of every alive sample, never bytes."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from ..io.inputs import ShardRef
from .state import RunState
from .plan import AnnotatePlan, GlobalPlan
from ..store.runstore import RunStore

__all__ = ["gather_columns"]


def gather_columns(
    store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef]
) -> tuple[list[str], list[int], list[str], dict[str, list[Any]]]:
    """(shard URL, pos, key, {column: values}) of the alive samples, in input order, for ``plan.columns``."""
    urls: list[str] = []
    positions: list[int] = []
    keys: list[str] = []
    columns: dict[str, list[Any]] = {c: [] for c in plan.columns}
    by_source: dict[str, tuple[AnnotatePlan, list[str]]] = {}
    for col in plan.columns:
        source = plan.sources[col]
        by_source.setdefault(source.id, (source, []))[1].append(col)
    for ref in shards:
        alive = ledger.alive(ref.url)
        if not len(alive):
            continue
        urls += [ref.url] * len(alive)
        positions += alive.tolist()
        keys += ledger.keys(ref.url, alive)
        for source, cols in by_source.values():
            table = pq.read_table(store.part_path(source.id, source.part_name(ref)), columns=["pos", *cols])
            row_of = {pos: i for i, pos in enumerate(table.column("pos").to_pylist())}
            rows = [row_of[pos] for pos in alive.tolist()]
            for col in cols:
                values = table.column(col).to_pylist()
                columns[col] += [values[i] for i in rows]
    return urls, positions, keys, columns
