"""Input of a global step: keys and a few stored columns of every alive sample, never bytes."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from .inputs import ShardRef
from .ledger import Ledger
from .plan import AnnotatePlan, GlobalPlan
from .store import RunStore

__all__ = ["gather_columns"]


def gather_columns(store: RunStore, plan: GlobalPlan, ledger: Ledger, shards: list[ShardRef]) -> tuple[list[str], list[str], dict[str, list[Any]]]:
    """(shard URL, key, {column: values}) of the alive samples, in input order, for ``plan.columns``."""
    urls: list[str] = []
    keys: list[str] = []
    columns: dict[str, list[Any]] = {c: [] for c in plan.columns}
    by_source: dict[str, tuple[AnnotatePlan, list[str]]] = {}
    for col in plan.columns:
        source = plan.sources[col]
        by_source.setdefault(source.id, (source, []))[1].append(col)
    for ref in shards:
        alive = [e.key for e in ledger.alive(ref.url)]
        if not alive:
            continue
        urls += [ref.url] * len(alive)
        keys += alive
        for source, cols in by_source.values():
            table = pq.read_table(store.part_path(source.id, source.part_name(ref)), columns=["key", *cols])
            position = {k: i for i, k in enumerate(table.column("key").to_pylist())}
            rows = [position[k] for k in alive]
            for col in cols:
                values = table.column(col).to_pylist()
                columns[col] += [values[i] for i in rows]
    return urls, keys, columns
