"""Global deduplication over stored columns: only keys and the compared column travel."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from .inputs import ShardRef
from .ledger import Ledger
from .plan import DedupPlan
from .store import RunStore

__all__ = ["exact_dedup"]


def exact_dedup(store: RunStore, plan: DedupPlan, ledger: Ledger, shards: list[ShardRef]) -> dict[str, dict[str, tuple[str, str]]]:
    """Among alive samples with equal ``column`` values keep the first in input order.

    Returns, per shard URL, the drops with reason ``duplicate_of:<kept key>``.
    """
    column = plan.step.column
    first: dict[Any, str] = {}
    drops: dict[str, dict[str, tuple[str, str]]] = {}
    for ref in shards:
        path = store.part_path(plan.source.id, plan.source.part_name(ref))
        alive = ledger.alive(ref.url)
        if not alive:
            continue
        table = pq.read_table(path, columns=["key", column])
        values = dict(zip(table.column("key").to_pylist(), table.column(column).to_pylist()))
        shard_drops = drops.setdefault(ref.url, {})
        for entry in alive:
            value = values[entry.key]
            if value in first:
                shard_drops[entry.key] = (plan.step.id, f"duplicate_of:{first[value]}")
            else:
                first[value] = entry.key
    return drops
