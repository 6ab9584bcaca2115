"""Global steps on the cluster: dedup and keep_top over every alive sample of the dataset.

Only positions, keys and the small columns a step reads travel; sample bytes never do. Each
runner returns the drops per shard URL (position -> (step id, reason)) and a report.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np
import pyarrow as pa
from dask.distributed import Client

from ..io.inputs import ShardRef
from ..recipe import DedupStep, KeepTopStep
from ..steps.dedup.compute import dedup_arrays, find_parents
from ..steps.dedup.results import CLUSTER_FILE, REASONS, DedupReport, PriorRows
from ..steps.keep_top import REASON, KeepTopReport, top_fraction
from ..store.runstore import RunStore, atomic_write_table
from .gather import gather_columns
from .state import RunState
from .plan import GlobalPlan

__all__ = ["GLOBAL_RUNNERS", "run_dedup", "run_keep_top"]


def run_dedup(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], priors: list[PriorRows]
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
    arrays = dedup_arrays(plan.step, columns, is_prior)
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


def run_keep_top(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], priors: Any = ()
) -> tuple[dict[str, dict[int, tuple[str, str]]], KeepTopReport]:
    """Drop every alive sample outside the top fraction; return drops per shard URL and a report.
    (``client`` and ``priors`` are unused: sorting one column is driver work, and earlier runs
    do not take part in a quantile of this one.)"""
    step = plan.step
    urls, positions, _, columns = gather_columns(store, plan, ledger, shards)
    values = np.array([np.nan if v is None else v for v in columns[step.column]], dtype=np.float64)
    keep = top_fraction(values, step.fraction)
    threshold = float(values[keep].min()) if keep.any() else None
    drops: dict[str, dict[int, tuple[str, str]]] = {}
    for row in np.flatnonzero(~keep):
        value = values[row]
        if threshold is not None and value == threshold:
            reason = f"{REASON}: {step.column} == {threshold:.6g}, a tie kept for earlier samples"
        else:
            reason = f"{REASON}: {step.column} < {threshold:.6g}" if threshold is not None else f"{REASON}: none kept"
        drops.setdefault(urls[row], {})[positions[row]] = (plan.id, reason)
    report = KeepTopReport(plan.id, step.column, step.fraction, len(positions), int(keep.sum()), threshold)
    return drops, report


GLOBAL_RUNNERS: dict[type, Callable[..., tuple[dict[str, dict[int, tuple[str, str]]], Any]]] = {
    DedupStep: run_dedup,
    KeepTopStep: run_keep_top,
}
"""How each kind of global step runs: (client, store, plan, state, shards, priors) -> (drops per shard, report).
``state`` (:class:`.state.RunState`) reads a shard's alive positions and keys on demand; the
driver records the returned drops in each shard's state with one worker task per shard."""
