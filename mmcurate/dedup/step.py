"""Driver side of a global dedup step: gather small columns, run the dedup task, record drops.

Only keys, the compared column(s) and the keep policy's columns travel to the task; the
clusters are stored in ``annotations/STEP/dataset.parquet`` (shard, pos, key, dup_cluster,
dup_cluster_size) for inspection.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from dask.distributed import Client

from ..inputs import ShardRef
from ..gather import gather_columns
from ..ledger import Ledger
from ..plan import GlobalPlan
from ..store import RunStore, atomic_write_table
from .compute import DedupArrays, find_parents

__all__ = ["DedupReport", "PriorRows", "REASONS", "run_dedup"]

REASONS = {
    "exact": "duplicate_of",
    "phash": "near_duplicate_of",
    "semantic": "semantic_duplicate_of",
    "video_phash": "video_near_duplicate_of",
}
CLUSTER_FILE = "dataset.parquet"


@dataclass
class PriorRows:
    """Kept samples of an earlier run (``--against``): their keys and stored columns."""

    source: str
    keys: list[str]
    columns: dict[str, list[Any]]


@dataclass
class DedupReport:
    step: str
    method: str
    removed: int
    clusters: int
    """Clusters with more than one member."""
    largest: list[tuple[int, str, list[str]]] = field(default_factory=list)
    """(size, kept key, a few dropped keys) of the largest clusters."""
    stats: dict[str, Any] = field(default_factory=dict)


def _arrays(plan: GlobalPlan, columns: dict[str, list[Any]], prior: np.ndarray) -> DedupArrays:
    config = plan.step.config
    keep = plan.step.keep
    n = len(prior)
    if keep.column is None:
        score = np.zeros(n)
    elif keep.column == "resolution":
        score = np.asarray(columns["width"], dtype=np.float64) * np.asarray(columns["height"], dtype=np.float64)
    else:
        score = np.asarray([np.nan if v is None else v for v in columns[keep.column]], dtype=np.float64)
    score = np.nan_to_num(score if keep.kind != "lowest" else -score, nan=-np.inf)
    values = columns[config.column]
    if plan.step.method == "phash":
        values = np.asarray(values, dtype=np.uint64)
    elif plan.step.method == "semantic":
        values = np.asarray(values, dtype=np.float32)
    elif plan.step.method == "video_phash":
        values = [np.asarray(v or [], dtype=np.uint64) for v in values]
    return DedupArrays(values=values, extra=_extra_hashes(config, columns), score=score, prior=prior)


def _extra_hashes(config: Any, columns: dict[str, list[Any]]) -> list[np.ndarray]:
    """One (n,) uint64 array per kind of extra hash a phash step searches: ``<column>_mirror``
    holds one per row; ``<column>_variants`` and ``<column>_regions`` a list per row, one kind
    per position (a row with a shorter list, from an earlier run, repeats its plain hash)."""
    kinds: list[np.ndarray] = []
    for col in getattr(config, "extra_columns", []):
        if col.endswith("_mirror"):
            kinds.append(np.asarray(columns[col], dtype=np.uint64))
            continue
        lists = columns[col]
        width = max((len(v) for v in lists if v), default=0)
        table = np.repeat(np.asarray(columns[config.column], dtype=np.uint64)[:, None], width, axis=1)
        for row, v in enumerate(lists):
            if v:
                table[row, : len(v)] = v
        kinds += list(table.T)
    return kinds


def run_dedup(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: Ledger, shards: list[ShardRef], priors: list[PriorRows]
) -> tuple[dict[str, dict[int, tuple[str, str]]], DedupReport]:
    """Run one dedup step over all alive samples; return drops per shard URL and a report."""
    urls, positions, keys, columns = gather_columns(store, plan, ledger, shards)
    prior_keys: list[str] = []
    for prior in priors:
        missing = [c for c in plan.columns if c not in prior.columns]
        if missing:
            raise ValueError(f"--against {prior.source}: the earlier run has no column(s) {', '.join(missing)} for step {plan.id}")
        prior_keys += prior.keys
        for col in plan.columns:
            columns[col] = list(prior.columns[col]) + columns[col]
    n_prior = len(prior_keys)
    all_keys = prior_keys + keys
    is_prior = np.zeros(len(all_keys), dtype=bool)
    is_prior[:n_prior] = True
    arrays = _arrays(plan, columns, is_prior)
    outcome = client.submit(find_parents, plan.step.method, plan.step.config, arrays, pure=False).result()
    parent = outcome.parent

    reason = REASONS[plan.step.method]
    drops: dict[str, dict[int, tuple[str, str]]] = {}
    for row in np.flatnonzero(parent[n_prior:] != np.arange(n_prior, len(all_keys))) + n_prior:
        kept = all_keys[parent[row]]
        drops.setdefault(urls[row - n_prior], {})[positions[row - n_prior]] = (plan.id, f"{reason}:{kept}")

    sizes = Counter(parent.tolist())
    new_parent = parent[n_prior:]
    atomic_write_table(
        store.part_path(plan.id, CLUSTER_FILE),
        pa.table(
            {
                "shard": pa.array(urls, pa.string()),
                "pos": pa.array(positions, pa.int64()),
                "key": pa.array(keys, pa.string()),
                "dup_cluster": pa.array(new_parent, pa.int64()),
                "dup_cluster_size": pa.array([sizes[p] for p in new_parent.tolist()], pa.int32()),
            }
        ),
    )
    members: dict[int, list[str]] = {}
    for row, p in enumerate(parent.tolist()):
        if row != p:
            members.setdefault(p, []).append(all_keys[row])
    largest = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:5]
    report = DedupReport(
        step=plan.id,
        method=plan.step.method,
        removed=sum(len(d) for d in drops.values()),
        clusters=len(members),
        largest=[(len(m) + 1, all_keys[p], m[:4]) for p, m in largest],
        stats=outcome.stats,
    )
    return drops, report
