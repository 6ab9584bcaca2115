"""Global steps on the cluster: dedup and keep_top over every alive sample of the dataset.

Only positions, keys and the small columns a step reads travel; sample bytes never do, and no
task holds the whole dataset unless a method needs it (``video_phash``). Each shard's rows are
read by a worker task; they are partitioned with Dask bags (``groupby``, a task shuffle), so
each partition holds whole clusters:

* exact: by a hash of the value;
* phash: identical hashes by a hash of the value, then each table of the block-permutation
  search by band (a range of its key bits); the edges found are clustered by the distributed
  connected components of :mod:`~mmcurate.steps.dedup.components` (rounds of edges grouped by
  node), then the rows grouped by cluster, where the keep rule picks who stays;
* semantic: k-means fitted on a sample, rows assigned per shard, one task per cluster;
* video_phash: one task (frame hashes shared by many videos are left out, see the config);
* exact, phash and video_phash over rows that fit one partition: one search task and one
  recording task per shard, no shuffle (:func:`_in_one_task`);
* keep_top: an exact distributed selection (see :mod:`mmcurate.steps.keep_top`);
* balance: per-shard entry counts, summed, then per-shard draws;
* prune (density) and target: k-means fitted on a sample, rows assigned per shard; prune's
  per-cluster cuts from one task per cluster, target's clusters from the reference runs.

Results equal the single-task computation's.

The runner contract (:data:`GLOBAL_RUNNERS`, one entry per kind of global step)::

    runner(client, store, plan, state, shards, priors) -> (summaries, report)

A runner records its drops on the workers, never in the driver: each worker task that knows
a shard's dropped positions builds a :class:`ShardDrops` (the shard's ``ShardRef``, int64
positions, Arrow reasons) and either calls a :class:`Recorder` (``Recorder(root, step_id)``,
small and picklable) itself, one task per shard, or leaves the pieces, any number per shard
and in any partitions, in a bag for :func:`record_pieces`, which groups them by shard (a task
shuffle) and records each shard once. Either way only a :class:`~.state.ShardSummary` per shard
reaches the driver; ``summaries`` maps the URL of every shard the step dropped samples of to
its summary, and ``report`` is the step's small report (counts, a few examples). Alive counts
come from ``state.count(url)``; a worker reads a shard's alive positions and columns with
:func:`~.gather.read_rows` (:func:`~.gather.shard_specs` lists what to read). ``priors``
(:class:`~.reference.Priors`) lists the reference shards a dedup or target step compares with;
:func:`_read_priors` reads them on the workers, one partition each, numbered before the run's rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any, Callable

import dask
import dask.bag as db
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dask.distributed import Client, wait

from ..io.inputs import ShardRef
from ..io.location import location
from ..recipe import BalanceStep, DedupStep, KeepTopStep, PruneStep, TargetStep
from ..steps.balance import BalanceReport, balance_reasons, entry_counts
from ..steps.dedup.compute import (
    DedupArrays,
    assign_clusters,
    dedup_arrays,
    find_parents,
    fit_centroids,
    semantic_clusters,
    semantic_parents,
    unit_rows,
)
from ..steps.dedup.components import large_star, local_stars, small_star, unique_pairs
from ..steps.dedup.neardup import _Layout, _widths
from ..steps.dedup.partition import (
    RowResults,
    band_edges,
    band_of,
    bucket_of,
    choose_band_k,
    cluster_sizes,
    exact_groups,
    parents_in_partition,
    results_from_labels,
)
from ..steps.dedup.results import CLUSTER_FILE, REASONS, REFERENCE_REASON, DedupReport
from ..steps import prune, target
from ..steps.keep_top import REASON, KeepTopReport, band, bracket, keep_mask, ranked_values, sketch, threshold_from_bands, top_count
from ..store.runstore import RunStore, atomic_write_table
from .gather import ShardRows, ShardSpec, read_rows, shard_specs
from .reference import Priors
from .state import RunState, ShardSummary, record_drops
from .plan import GlobalPlan

__all__ = [
    "GLOBAL_RUNNERS", "Recorder", "ShardDrops", "dedup_rows", "record_pieces", "run_balance", "run_dedup", "run_keep_top",
    "run_prune", "run_target",
]

ROWS_PER_PARTITION = 1 << 20
"""Rows (or distinct hashes, or pHash edges) a partition task aims at. A dedup over at most this
many rows runs in one task (:func:`_in_one_task`); over more, partitioned (for pHash, with the
distributed union-find): set it lower to take the partitioned path on small data."""
TABLES_PER_WAVE = 4
"""Tables of the phash search shuffled at once (each holds every distinct hash once)."""


@dataclass
class ShardDrops:
    """Samples of one shard that a global step drops, as a worker holds them: ``positions``
    (int64) and one reason each (an Arrow string array)."""

    shard: ShardRef
    positions: np.ndarray
    reasons: pa.Array


Summaries = dict[str, ShardSummary]


@dataclass(frozen=True)
class Recorder:
    """Records one step's drops in the shards' state, on a worker (small: any task may carry it)."""

    root: str
    step: str

    def __call__(self, pieces: Sequence[ShardDrops]) -> ShardSummary:
        """Record the drops of one shard, given in any number of pieces; its summary after them."""
        positions = np.concatenate([p.positions for p in pieces]).astype(np.int64)
        reasons = pa.concat_arrays([p.reasons.cast(pa.string()) for p in pieces])
        order = np.argsort(positions, kind="stable")
        return record_drops(RunStore(self.root), pieces[0].shard, positions[order], self.step, reasons.take(order))


def record_pieces(client: Client, record: Recorder, pieces: db.Bag) -> Summaries:
    """Record a bag of :class:`ShardDrops` (any number per shard, in any partitions) on the
    workers: grouped by shard with a task shuffle, each shard recorded once; returns the
    summaries of the shards with drops."""
    grouped = _groups(_each(pieces, lambda d: (d.shard.url, d)), pieces.npartitions)
    return dict(_compute(client, _each(grouped, lambda g: (g[0], record(g[1])))))


# --------------------------------------------------------------------------- reading


def _read(client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef],
          priors: Priors) -> tuple[db.Bag, dict[int, int], int]:
    """The rows of the references, then of every shard, as a persisted bag of :class:`ShardRows`
    (one per partition); with each one's first row by shard index, and the number of rows."""
    prior, first_rows, n_prior = _read_priors(client, priors, plan.columns)
    specs = shard_specs(store, plan, ledger, shards, n_prior)
    first_rows.update((s.index, s.first_row) for s in specs)
    n = n_prior + sum(s.count for s in specs)
    parts = [prior] if n_prior else []
    if specs:
        parts.append(_each(db.from_sequence(specs, npartitions=len(specs)), read_rows))
    bag = db.concat(parts) if parts else db.from_sequence([], npartitions=1)
    return client.persist(bag), first_rows, n


def _read_priors(client: Client, priors: Priors, columns: Sequence[str]) -> tuple[db.Bag, dict[int, int], int]:
    """The reference rows with ``columns``, read on the workers one reference shard per partition
    (persisted), numbered from 0 in order; with the first row of each reference shard that has
    rows (by its negative index), and how many rows in all. The driver gets one count per shard."""
    if not priors.shards:
        return db.from_sequence([], npartitions=1), {}, 0
    runs = dask.delayed(priors.runs, pure=True)
    read = client.persist(_each(db.from_sequence(priors.shards, npartitions=len(priors.shards)), lambda p, runs: p.read(runs, columns), runs))
    counts = _compute(client, _each(read, lambda r: len(r.rows)))
    starts = np.cumsum([0, *counts])
    first_rows = {p.index: int(start) for p, start, count in zip(priors.shards, starts, counts) if count}

    def numbered(r: ShardRows, first_rows: dict[int, int]) -> list[ShardRows]:
        if r.index not in first_rows:
            return []
        start = first_rows[r.index]
        return [replace(r, rows=np.arange(start, start + len(r.rows), dtype=np.int64))]

    return _flat(read, numbered, dask.delayed(first_rows, pure=True)), first_rows, int(starts[-1])


def _compute(client: Client, x: Any) -> Any:
    return client.compute(x).result()


def _groups(bag: db.Bag, parts: int) -> db.Bag:
    """``(key, payload)`` records grouped as ``(key, [payloads])`` by a task shuffle through
    ``parts`` partitions (shard pieces are joined first: fewer, larger shuffle tasks)."""
    grouped = bag.repartition(max(1, min(parts, bag.npartitions))).groupby(lambda r: r[0], shuffle="tasks")
    return _each(grouped, lambda g: (g[0], [r[1] for r in g[1]]))


def _each(bag: db.Bag, f: Callable[..., Any], *args: Any) -> db.Bag:
    """``f`` of each element, as partitions of lists (not lazy iterators: a partition may be
    read by several later steps)."""
    return bag.map_partitions(lambda part, *a: [f(x, *a) for x in part], *args)


def _flat(bag: db.Bag, f: Callable[..., Any], *args: Any) -> db.Bag:
    """The items of each ``f(element)``, as partitions of lists."""
    return bag.map_partitions(lambda part, *a: [y for x in part for y in f(x, *a)], *args)


def _parts(n: int) -> int:
    return max(1, math.ceil(n / ROWS_PER_PARTITION))


@dataclass
class _Shards:
    """Where the global rows live: shard ``indexes[i]`` from row ``starts[i]`` (reference shards
    first, with negative indexes).
    Tasks get it as one shared graph key, not copied into each task."""

    starts: np.ndarray
    indexes: np.ndarray

    def owner(self, rows: np.ndarray) -> np.ndarray:
        """The shard index of each global row."""
        return self.indexes[np.searchsorted(self.starts, rows, "right") - 1]

    def split(self, res: RowResults) -> list[tuple[int, RowResults]]:
        """Results cut into ``(shard index, results)`` pieces."""
        return [(o, RowResults(res.row[idx], res.parent[idx], res.size[idx])) for o, idx in _by_key(self.owner(res.row))]


# --------------------------------------------------------------------------- dedup: results to drops


@dataclass
class _ShardOutcome:
    index: int
    url: str
    removed: int
    summary: ShardSummary | None
    """What the recorder gave (None: no drops, or nothing recorded)."""
    clusters: int
    top: list[tuple[int, int, str, list[str]]] = field(default_factory=list)
    """(size, kept row, kept key, dropped keys here in row order) of this shard's largest clusters."""


def _finish(records: db.Bag, rows: db.Bag, at: Any, parts: int, reason: str, cluster_dir: str,
            record: Recorder | None) -> db.Bag:
    """From ``(shard index, RowResults)`` records covering every row: per shard its drops (with
    the kept sample's key in the reason, looked up at the shard holding it) recorded by
    ``record``, its part of the cluster file, and a summary for the report."""
    providers = _each(rows, lambda r: (r.index, ("rows", replace(r, columns={}))))

    def base(group: tuple[int, list[RowResults]], at: _Shards) -> list[tuple[int, tuple[str, Any]]]:
        index, pieces = group
        res = _concat_results(pieces)
        dropped = res.parent != res.row
        owners = at.owner(res.parent[dropped])
        out: list[tuple[int, tuple[str, Any]]] = [(index, ("base", res))]
        for owner in np.unique(owners):
            mine = owners == owner
            out.append((int(owner), ("need", (index, res.row[dropped][mine], res.parent[dropped][mine]))))
        return out

    def name(group: tuple[int, list[tuple[str, Any]]]) -> list[tuple[int, tuple[str, Any]]]:
        _, items = group
        own = next(p for kind, p in items if kind == "rows")
        out = []
        for kind, payload in items:
            if kind == "need":
                requester, wanted, parents = payload
                out.append((requester, ("named", (wanted, own.keys.take(np.searchsorted(own.rows, parents))))))
        return out

    def assemble(group: tuple[int, list[tuple[str, Any]]], at: _Shards) -> _ShardOutcome:
        _, items = group
        own = next(p for kind, p in items if kind == "rows")
        res = next(p for kind, p in items if kind == "base")
        named = [p for kind, p in items if kind == "named"]
        wanted = np.concatenate([w for w, _ in named] + [np.empty(0, np.int64)])
        keys = pa.concat_arrays([pa.array([], pa.string()), *(k for _, k in named)])
        return _shard_outcome(own, res, wanted, keys, reason, cluster_dir, record, at.owner(res.parent) < 0)

    bases = _flat(_groups(records, parts), base, at)
    needs = _flat(bases, lambda r: [r] if r[1][0] == "need" else [])
    names = _flat(_groups(db.concat([needs, providers]), parts), name)
    own = _flat(bases, lambda r: [r] if r[1][0] == "base" else [])
    return _each(_groups(db.concat([own, names, providers]), parts), assemble, at)


def _concat_results(pieces: list[RowResults]) -> RowResults:
    row = np.concatenate([p.row for p in pieces])
    order = np.argsort(row, kind="stable")
    return RowResults(row[order], np.concatenate([p.parent for p in pieces])[order], np.concatenate([p.size for p in pieces])[order])


def _shard_outcome(own: ShardRows, res: RowResults, wanted: np.ndarray, named: pa.Array, reason: str, cluster_dir: str,
                   record: Recorder | None, to_reference: np.ndarray) -> _ShardOutcome:
    """One shard's drops, recorded; its cluster file part; its largest clusters. ``named``: the
    key of the kept sample of each dropped row ``wanted``; ``to_reference``: per row, whether the
    sample it duplicates is a reference item (``--against``): dropped as ``matches_reference:KEY``."""
    if not np.array_equal(res.row, own.rows):
        raise RuntimeError(f"dedup: rows of shard {own.index} went missing in the shuffle")
    dropped = np.flatnonzero(res.parent != res.row)
    order = np.argsort(wanted, kind="stable")
    kept_keys = named.take(order[np.searchsorted(wanted, res.row[dropped], sorter=order)])
    summary = None
    if own.index >= 0:  # not a reference shard
        path = location(cluster_dir) / f"part-{own.index:09d}.parquet"
        atomic_write_table(path, _cluster_table(own.url, own.pos, own.keys, res.parent, res.size))
        if record is not None and len(dropped):
            kinds = pa.array(np.where(to_reference[dropped], REFERENCE_REASON, reason))
            summary = record([ShardDrops(own.ref, own.pos[dropped], pc.binary_join_element_wise(kinds, kept_keys, ":"))])
    multi = res.size > 1
    clusters = int(np.count_nonzero(multi & (res.parent == res.row)))
    largest = []
    for s, p in sorted({(int(-s), int(p)) for s, p in zip(res.size[multi], res.parent[multi])})[:5]:
        members = np.flatnonzero(res.parent[dropped] == p)
        kept = kept_keys[int(members[0])] if len(members) else own.keys[int(np.searchsorted(res.row, p))]
        largest.append((-s, p, kept.as_py(), own.keys.take(dropped[members[:4]]).to_pylist()))
    removed = len(dropped) if own.index >= 0 else 0
    return _ShardOutcome(own.index, own.url, removed, summary, clusters, largest)


def _cluster_table(url: str, pos: Any, keys: pa.Array, parent: Any, size: Any) -> pa.Table:
    """Rows of the cluster file (``annotations/STEP/dataset.parquet/``, one part per shard)."""
    return pa.table({
        "shard": pa.repeat(pa.scalar(url, pa.string()), len(keys)),
        "pos": pa.array(pos, pa.int64()),
        "key": keys,
        "dup_cluster": pa.array(parent, pa.int64()),
        "dup_cluster_size": pa.array(size, pa.int32()),
    })


def _report(plan: GlobalPlan, outcomes: list[_ShardOutcome], stats: dict[str, Any]) -> tuple[Summaries, DedupReport]:
    outcomes = sorted(outcomes, key=lambda o: o.index)
    merged: dict[int, tuple[int, str, list[str]]] = {}
    for o in outcomes:  # in row order: earlier runs, then shards
        for size, p, key, members in o.top:
            had = merged.get(p, (size, key, []))
            merged[p] = (size, key, had[2] + members)
    largest = sorted(merged.items(), key=lambda kv: (-kv[1][0], kv[0]))[:5]
    report = DedupReport(
        step=plan.id,
        method=plan.step.method,
        removed=sum(o.removed for o in outcomes),
        clusters=sum(o.clusters for o in outcomes),
        largest=[(size, key, members[:4]) for _, (size, key, members) in largest],
        stats=stats,
    )
    return {o.url: o.summary for o in outcomes if o.summary is not None}, report


# --------------------------------------------------------------------------- dedup: per method


def _values(column: pa.Array) -> Any:
    """A stored column as :func:`dedup_arrays` takes it: numbers as numpy, fixed-size lists
    (embeddings) as 2-D numpy; other columns, and any with nulls, as Python lists."""
    if column.null_count == 0:
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            return column.to_numpy()
        if pa.types.is_fixed_size_list(column.type) and column.flatten().null_count == 0:
            return column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    return column.to_pylist()


def _arrays(step: Any, rows: ShardRows) -> DedupArrays:
    columns = {c: _values(a) for c, a in rows.columns.items()}
    return dedup_arrays(step, columns, np.full(len(rows.keys), rows.index < 0))


def _take(arrays: DedupArrays, idx: np.ndarray) -> DedupArrays:
    """The rows ``idx`` of ``arrays``."""
    values = [arrays.values[i] for i in idx] if isinstance(arrays.values, list) else arrays.values[idx]
    return DedupArrays(values, {k: e[idx] for k, e in arrays.extra.items()}, arrays.score[idx], arrays.prior[idx])


def _by_key(where: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(key, the ascending indices holding it)`` for each distinct key of ``where``."""
    order = np.argsort(where, kind="stable")
    keys, first = np.unique(where[order], return_index=True)
    return list(zip(keys.tolist(), np.split(order, first[1:])))


def _join(pieces: list[tuple[np.ndarray, DedupArrays]]) -> tuple[np.ndarray, DedupArrays]:
    rows = np.concatenate([r for r, _ in pieces])
    first = pieces[0][1]
    values = [v for _, a in pieces for v in a.values] if isinstance(first.values, list) else np.concatenate([a.values for _, a in pieces])
    return rows, DedupArrays(
        values, {k: np.concatenate([a.extra[k] for _, a in pieces]) for k in first.extra},
        np.concatenate([a.score for _, a in pieces]), np.concatenate([a.prior for _, a in pieces]),
    )


def _by_partition(rows: db.Bag, step: Any, part_of: Callable[[ShardRows, DedupArrays], np.ndarray], parts: int,
                  at: Any) -> tuple[db.Bag, db.Bag]:
    """Rows sent to the partition ``part_of`` gives them, each partition solved by
    :func:`parents_in_partition`; returns ((shard index, RowResults) records, stats per partition)."""

    def emit(r: ShardRows) -> list[tuple[int, tuple[np.ndarray, DedupArrays]]]:
        arrays = _arrays(step, r)
        where = part_of(r, arrays)
        return [(p, (r.rows[idx], _take(arrays, idx))) for p, idx in _by_key(where)]

    def solve(group: tuple[int, list[tuple[np.ndarray, DedupArrays]]], at: _Shards) -> tuple[list[tuple[int, RowResults]], dict[str, Any]]:
        rows_, arrays = _join(group[1])
        res, stats = parents_in_partition(step.method, step.config, rows_, arrays)
        return at.split(res), stats

    solved = _each(_groups(_flat(rows, emit), parts), solve, at)
    return _flat(solved, lambda s: s[0]), _each(solved, lambda s: s[1])


def _sum_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for s in stats:
        for k, v in s.items():
            if isinstance(v, dict):
                total[k] = _sum_stats([total.get(k, {}), v])
            elif isinstance(v, (int, np.integer)):
                total[k] = total.get(k, 0) + int(v)
            else:
                total[k] = v
    return total


def _exact(client: Client, rows: db.Bag, step: Any, n: int, at: Any) -> tuple[db.Bag, dict[str, Any]]:
    parts = _parts(n)
    records, _ = _by_partition(rows, step, lambda r, a: bucket_of(a.values, parts), parts, at)
    return records, {}


def _whole(client: Client, rows: db.Bag, step: Any, n: int, at: Any) -> tuple[db.Bag, dict[str, Any]]:
    """Every row in one task (the single-task search): video_phash over more rows than one
    partition holds (fewer go by :func:`_in_one_task`)."""
    records, stats = _by_partition(rows, step, lambda r, a: np.zeros(len(r.keys), np.int64), 1, at)
    records = client.persist(records)
    return records, _compute(client, stats)[0]


def _semantic(client: Client, rows: db.Bag, step: Any, n: int, at: Any) -> tuple[db.Bag, dict[str, Any]]:
    config = step.config
    k = semantic_clusters(n, config)
    every = max(1, math.ceil(n / config.fit_sample))
    sample = _each(rows, lambda r: unit_rows(_values(r.columns[config.column]))[r.rows % every == 0])
    centroids = client.persist(dask.delayed(lambda parts: fit_centroids(np.concatenate([a for part in parts for a in part]), k))(sample.to_delayed()))

    def emit(r: ShardRows, centroids: np.ndarray) -> list[tuple[int, tuple[np.ndarray, np.ndarray, DedupArrays]]]:
        arrays = _arrays(step, r)
        emb = unit_rows(arrays.values)
        where = assign_clusters(emb, centroids)
        return [(c, (r.rows[idx], emb[idx], _take(arrays, idx))) for c, idx in _by_key(where)]

    def solve(group: tuple[int, list[tuple[np.ndarray, np.ndarray, DedupArrays]]], at: _Shards) -> tuple[list[tuple[int, RowResults]], dict[str, Any]]:
        pieces = group[1]
        rows_, arrays = _join([(r, a) for r, _, a in pieces])
        emb = np.concatenate([e for _, e, _ in pieces])
        order = np.argsort(rows_, kind="stable")
        rows_, emb = rows_[order], emb[order]
        arrays = DedupArrays(arrays.values[order], {}, arrays.score[order], arrays.prior[order])
        outcome = semantic_parents(emb, arrays, np.zeros(len(rows_), np.int64), config)
        parent = rows_[outcome.parent]
        return at.split(RowResults(rows_, parent, cluster_sizes(parent))), outcome.stats

    solved = _each(_groups(_flat(rows, emit, centroids), _parts(n)), solve, at)
    solved = client.persist(solved)
    stats = _sum_stats(_compute(client, _each(solved, lambda s: s[1])))
    stats = {"clusters": k, "removed_by_eps": {str(e): stats.get("removed_by_eps", {}).get(str(e), 0) for e in config.report_eps}}
    return _flat(solved, lambda s: s[0]), stats


def _phash(client: Client, rows: db.Bag, step: Any, n: int, at: Any) -> tuple[db.Bag, dict[str, Any]]:
    """Plain hashes, and each kind of extra hash with the plain ones (ids ``n + row``), each
    searched by the partitioned block-permutation search; edges clustered by :func:`_union`."""
    config = step.config
    d = config.max_distance
    kinds = sorted(set().union(*_compute(client, _each(rows, lambda r: list(_arrays(step, r).extra)))))
    searches = ["", *kinds]
    parts = _parts(n)

    def items(r: ShardRows) -> list[tuple[tuple[str, int], tuple[np.ndarray, np.ndarray]]]:
        arrays = _arrays(step, r)
        out = []
        for search in searches:
            values, ids = arrays.values, r.rows
            if search:
                extra = arrays.extra.get(search)
                if extra is not None:
                    values, ids = np.concatenate([values, extra]), np.concatenate([ids, r.rows + n])
            bucket = bucket_of(values, parts)
            out += [((search, b), (values[idx], ids[idx])) for b, idx in _by_key(bucket)]
        return out

    def group_exact(group: tuple[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        values = np.concatenate([v for v, _ in group[1]])
        ids = np.concatenate([i for _, i in group[1]])
        distinct, reps, stars = exact_groups(values, ids)
        return group[0][0], distinct, reps, stars

    exact = client.persist(_each(_groups(_flat(rows, items), parts * len(searches)), group_exact))
    edges = [_each(exact, lambda g: g[3])]
    if d > 0:
        k = choose_band_k(2 * n if kinds else n, d)
        blocks = d + k
        combos = list(combinations(range(blocks), k))
        layouts = [_Layout(64, _widths(64, blocks), c) for c in combos]
        band_bits = min(min(lay.key_bits for lay in layouts), max(0, math.ceil(math.log2(_parts(n)))))

        def banded(g: tuple[str, np.ndarray, np.ndarray, np.ndarray], tables: range) -> list[tuple[tuple[str, int, int], tuple[np.ndarray, np.ndarray]]]:
            search, values, reps, _ = g
            out = []
            for t in tables:
                where = band_of(values, layouts[t], band_bits)
                out += [((search, t, b), (values[idx], reps[idx])) for b, idx in _by_key(where)]
            return out

        def search_band(group: tuple[tuple[str, int, int], list[tuple[np.ndarray, np.ndarray]]]) -> np.ndarray:
            values = np.concatenate([v for v, _ in group[1]])
            ids = np.concatenate([i for _, i in group[1]])
            return band_edges(values, ids, d, blocks, combos[group[0][1]])

        for first in range(0, len(combos), TABLES_PER_WAVE):  # a few tables at a time: bounded shuffle memory
            tables = range(first, min(len(combos), first + TABLES_PER_WAVE))
            wave = client.persist(_each(_groups(_flat(exact, banded, tables), parts * len(tables)), search_band))
            wait(wave)
            edges.append(wave)
    scores = _each(rows, lambda r: (r.index, (r.rows, _arrays(step, r).score, np.full(len(r.rows), r.index < 0))))
    return _union(client, db.concat(edges), scores, n, parts, at)


def _union(client: Client, edges: db.Bag, scores: db.Bag, n: int, parts: int, at: Any) -> tuple[db.Bag, dict[str, Any]]:
    """Clusters of ``n`` rows joined by a bag of (E, 2) id arrays (ids modulo ``n``), who stays in
    each by the keep policy (``scores``: ``(shard index, (rows, score, prior))`` per shard), as
    ``(shard index, RowResults)`` records; no task holds more than a partition of the edges or
    the rows of the clusters sent to it (see :mod:`~mmcurate.steps.dedup.components`)."""

    def first(group: tuple[int, list[np.ndarray]]) -> tuple[np.ndarray, int]:
        pairs = unique_pairs(np.concatenate(group[1]), n)
        return local_stars(pairs), len(pairs)

    done = client.persist(_each(_groups(_flat(edges, lambda e: _by_node(unique_pairs(e, n), parts)), parts), first))
    stats = {"pairs_within_distance": sum(_compute(client, _each(done, lambda d: d[1])))}
    stars = _each(done, lambda d: d[0])
    while True:
        stars, changed = _star_round(client, stars, parts, large_star, both=True)
        stars, changes = _star_round(client, stars, parts, small_star, both=False)
        if not changed and not changes:
            break

    def to_shards(e: np.ndarray, at: _Shards) -> list[tuple[int, tuple[str, Any]]]:
        roots = np.unique(e[:, 1])
        nodes, labels = np.concatenate([e[:, 0], roots]), np.concatenate([e[:, 1], roots])
        return [(o, ("label", (nodes[idx], labels[idx]))) for o, idx in _by_key(at.owner(nodes))]

    def label_rows(group: tuple[int, list[tuple[str, Any]]]) -> list[tuple[str, Any]]:
        index, items = group
        rows, score, prior = next(p for kind, p in items if kind == "score")
        found = [p for kind, p in items if kind == "label"]
        nodes, first_at = np.unique(np.concatenate([x for x, _ in found] + [np.empty(0, np.int64)]), return_index=True)
        labels = np.concatenate([y for _, y in found] + [np.empty(0, np.int64)])[first_at]
        at_row = np.searchsorted(rows, nodes)
        alone = np.ones(len(rows), dtype=bool)
        alone[at_row] = False
        out: list[tuple[str, Any]] = [("done", (index, RowResults(rows[alone], rows[alone], np.ones(int(alone.sum()), np.int64))))]
        for b, sel in _by_key(bucket_of(labels, parts)):
            picked = at_row[sel]
            out.append(("cluster", (b, (rows[picked], labels[sel], score[picked], prior[picked]))))
        return out

    def decide(group: tuple[int, list[tuple[np.ndarray, ...]]], at: _Shards) -> list[tuple[int, RowResults]]:
        rows_, labels, score, prior = (np.concatenate(c) for c in zip(*group[1]))
        return at.split(results_from_labels(rows_, labels, score, prior))

    labelled = _flat(stars, to_shards, at)
    joined = _flat(_groups(db.concat([_each(scores, lambda s: (s[0], ("score", s[1]))), labelled]), parts), label_rows)
    clusters = _flat(joined, lambda r: [r[1]] if r[0] == "cluster" else [])
    alone = _each(_flat(joined, lambda r: [r] if r[0] == "done" else []), lambda r: r[1])
    return db.concat([alone, _flat(_groups(clusters, parts), decide, at)]), stats


def _by_node(edges: np.ndarray, parts: int) -> list[tuple[int, np.ndarray]]:
    """Edges keyed by the partition of their first node."""
    return [(b, edges[idx]) for b, idx in _by_key(bucket_of(edges[:, 0], parts))] if len(edges) else []


def _star_round(client: Client, stars: db.Bag, parts: int, step: Callable[[np.ndarray], tuple[np.ndarray, int]],
                both: bool) -> tuple[db.Bag, int]:
    """One large- or small-star step over a bag of edge arrays, grouped by node on the workers
    (``both``: each edge in both directions); the new edges (persisted) and how many changed."""
    keyed = _flat(stars, lambda e: _by_node(np.concatenate([e, e[:, ::-1]]) if both else e, parts))
    done = client.persist(_each(_groups(keyed, parts), lambda g: step(np.concatenate(g[1]))))
    return _each(done, lambda d: d[0]), sum(_compute(client, _each(done, lambda d: d[1])))


_METHODS = {"exact": _exact, "phash": _phash, "semantic": _semantic, "video_phash": _whole}
_SEARCHED = {"exact", "phash", "video_phash"}
"""Methods whose search over rows that fit one partition is one :func:`parents_in_partition`."""


def _solve_whole(parts: list[list[ShardRows]], step: Any, at: _Shards) -> tuple[dict[int, tuple[RowResults, np.ndarray, pa.Array, np.ndarray]], dict[str, Any]]:
    """The search over every row, in this one task: per shard index its results, its dropped
    rows with the key of the sample each duplicates, and per row whether that sample is a
    reference item (see :func:`_shard_outcome`); and the search's stats."""
    every = [r for part in parts for r in part]
    rows, arrays = _join([(r.rows, _arrays(step, r)) for r in every])
    res, stats = parents_in_partition(step.method, step.config, rows, arrays)
    keys = pa.concat_arrays([r.keys.cast(pa.string()) for r in every])
    order = np.argsort(rows, kind="stable")
    by_shard = {}
    for index, piece in at.split(res):
        dropped = piece.parent != piece.row
        named = keys.take(order[np.searchsorted(rows, piece.parent[dropped], sorter=order)])
        by_shard[index] = (piece, piece.row[dropped], named, at.owner(piece.parent) < 0)
    return by_shard, stats


def _in_one_task(client: Client, step: Any, rows: db.Bag, at: Any, reason: str, cluster_dir: str,
                 record: Recorder | None) -> tuple[list[_ShardOutcome], dict[str, Any]]:
    """Rows that fit one partition: searched in one task, then one task per shard records its
    drops (no shuffles, one round trip: shuffling costs more than it saves there)."""
    solved = dask.delayed(_solve_whole)(rows.to_delayed(), step, at)

    def outcome(own: ShardRows, solved: tuple[dict[int, Any], Any]) -> _ShardOutcome:
        res, wanted, named, to_reference = solved[0][own.index]
        return _shard_outcome(own, res, wanted, named, reason, cluster_dir, record, to_reference)

    outcomes, stats = client.gather(client.compute([_each(rows, outcome, solved), dask.delayed(lambda s: s[1])(solved)]))
    return outcomes, stats


def run_dedup(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], priors: Priors
) -> tuple[Summaries, DedupReport]:
    """Run one dedup step over all alive samples, recording the drops on the workers; return
    the summaries of the shards with drops and a report."""
    rows, first_rows, n = _read(client, store, plan, ledger, shards, priors)
    cluster_dir = store.part_path(plan.id, CLUSTER_FILE)
    if cluster_dir.is_file():  # one file, as an earlier version of mmcurate wrote it
        cluster_dir.unlink()
    for stale in cluster_dir.glob("part-*.parquet"):  # parts of an earlier try of this step
        stale.unlink()
    cluster_dir.mkdir(parents=True, exist_ok=True)
    if n == 0:
        atomic_write_table(cluster_dir / "part-empty.parquet", _cluster_table("", [], pa.array([], pa.string()), [], []))
        empty = dedup_arrays(plan.step, {c: [] for c in plan.columns}, np.zeros(0, dtype=bool))
        return {}, DedupReport(plan.id, plan.step.method, 0, 0, [], find_parents(plan.step.method, plan.step.config, empty).stats)
    outcomes, stats = dedup_rows(client, plan.step, rows, first_rows, n, str(cluster_dir), Recorder(str(store.root), plan.id))
    return _report(plan, outcomes, stats)


def dedup_rows(client: Client, step: DedupStep, rows: db.Bag, first_rows: dict[int, int], n: int,
               cluster_dir: str, record: Recorder | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Dedup ``n`` rows given as a bag of :class:`ShardRows` (shard index -> its first row in
    ``first_rows``; reference rows first, from 0, in shards with negative indexes): per shard its outcome (drops recorded by
    ``record`` on the worker, ``removed``, a summary; cluster file parts written under
    ``cluster_dir``), and the method's stats."""
    shards = _Shards(np.array(list(first_rows.values()), dtype=np.int64), np.array(list(first_rows), dtype=np.int64))
    at = dask.delayed(shards, pure=True)
    if step.method in _SEARCHED and _parts(n) == 1:
        return _in_one_task(client, step, rows, at, REASONS[step.method], cluster_dir, record)
    records, stats = _METHODS[step.method](client, rows, step, n, at)
    return _compute(client, _finish(records, rows, at, _parts(n), REASONS[step.method], cluster_dir, record)), stats


# --------------------------------------------------------------------------- keep_top


def run_keep_top(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], priors: Any = ()
) -> tuple[Summaries, KeepTopReport]:
    """Drop every alive sample outside the top fraction, recording the drops on the workers;
    return the summaries of the shards with drops and a report. (``priors`` is unused: earlier
    runs do not take part in a quantile of this one.)"""
    step = plan.step
    specs = shard_specs(store, plan, ledger, shards, 0)
    n = sum(s.count for s in specs)
    k = top_count(n, step.fraction)

    def ranked(spec: ShardSpec) -> tuple[np.ndarray, np.ndarray]:
        rows = read_rows(spec)
        return ranked_values(rows.columns[step.column].cast(pa.float64()).to_numpy(zero_copy_only=False)), rows.pos

    values = client.map(ranked, specs)
    threshold, takes = None, [0] * len(specs)
    if k:
        points = max(16, (1 << 20) // max(1, len(specs)))
        lo, hi = bracket(client.gather(client.map(lambda v: sketch(v[0], points), values)), k)
        threshold, takes = threshold_from_bands(client.gather(client.map(lambda v: band(v[0], lo, hi), values)), k)

    def drop(shard: tuple[np.ndarray, np.ndarray], spec: ShardSpec, take: int, record: Recorder) -> tuple[str, int, ShardSummary | None]:
        ranked, pos = shard
        lost = np.flatnonzero(~keep_mask(ranked, threshold, take))
        if not len(lost):
            return spec.url, 0, None
        if threshold is None:
            reasons = pa.repeat(pa.scalar(f"{REASON}: none kept"), len(lost))
        else:
            tie = f"{REASON}: {step.column} == {threshold:.6g}, a tie kept for earlier samples"
            below = f"{REASON}: {step.column} < {threshold:.6g}"
            reasons = pc.if_else(pa.array(ranked[lost] == threshold), tie, below)
        return spec.url, len(lost), record([ShardDrops(spec.ref, pos[lost], reasons)])

    summaries, lost = _recorded(client.gather(client.map(drop, values, specs, takes, record=Recorder(str(store.root), plan.id))))
    return summaries, KeepTopReport(plan.id, step.column, step.fraction, n, n - lost, threshold)


# --------------------------------------------------------------------------- balance, prune, target


def _record_reasons(record: Recorder, rows: ShardRows, reasons: list[str | None]) -> tuple[str, int, ShardSummary | None]:
    """Record one shard's drops from a reason (or None: kept) per alive row, on its worker:
    (its URL, how many dropped, its summary or None when none was)."""
    lost = np.array([i for i, r in enumerate(reasons) if r is not None], dtype=np.int64)
    if not len(lost):
        return rows.url, 0, None
    return rows.url, len(lost), record([ShardDrops(rows.ref, rows.pos[lost], pa.array([reasons[i] for i in lost.tolist()], pa.string()))])


def _recorded(results: list[tuple[str, int, ShardSummary | None]]) -> tuple[Summaries, int]:
    """The summaries of the shards with drops, and how many samples were dropped in all."""
    return {url: summary for url, _, summary in results if summary is not None}, sum(lost for _, lost, _ in results)


def run_balance(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], priors: Any = ()
) -> tuple[Summaries, BalanceReport]:
    """MetaCLIP balancing: entry counts per shard, summed; then each shard's draws, recorded on its worker."""
    step: BalanceStep = plan.step
    specs = shard_specs(store, plan, ledger, shards, 0)
    rows = client.map(read_rows, specs)
    counts: Counter[str] = Counter()
    for part in client.gather(client.map(lambda r: entry_counts(r.columns[step.column].to_pylist()), rows)):
        counts.update(part)
    [shared] = client.scatter([dict(counts)], broadcast=True)

    def drops_of(r: ShardRows, counts: dict[str, int], record: Recorder) -> tuple[str, int, ShardSummary | None]:
        return _record_reasons(record, r, balance_reasons(r.columns[step.column].to_pylist(), r.keys.to_pylist(), counts, step.config))

    summaries, lost = _recorded(client.gather(client.map(drops_of, rows, counts=shared, record=Recorder(str(store.root), plan.id))))
    n = sum(s.count for s in specs)
    t = step.config.max_per_entry
    report = BalanceReport(plan.id, step.column, t, n, n - lost, len(counts), sum(c >= t for c in counts.values()), counts.most_common(5))
    return summaries, report


def _embeddings(r: ShardRows, column: str) -> np.ndarray:
    """The shard's unit embeddings; a sample without one (or of another length) is an error naming it."""
    values = r.columns[column]
    lengths = pc.fill_null(pc.list_value_length(values), -1).to_numpy()
    size = max(int(lengths[0]), 0)
    bad = np.flatnonzero((lengths != size) | (size == 0))
    if len(bad):
        b = int(bad[0])
        what = "missing" if lengths[b] < 0 else f"{lengths[b]} numbers long"
        raise ValueError(f"{r.url}: sample {r.keys[b].as_py()}: {column} is {what}; a step clustering it needs vectors of one length ({size or 'not 0'})")
    return unit_rows(values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), size))


def _clustered(client: Client, specs: list[ShardSpec], column: str, k: int, fit_sample: int, n: int, seed: int) -> tuple[db.Bag, Any]:
    """Spherical k-means over ``column``, fitted on every m-th row (at most ``fit_sample``):
    a persisted bag of (rows without columns, cluster, distance to centroid) per shard, and the
    centroids (delayed). Each shard's embeddings stay on its worker as one float32 array."""
    every = max(1, math.ceil(n / fit_sample))

    def load(spec: ShardSpec) -> tuple[ShardRows, np.ndarray]:
        r = read_rows(spec)
        return replace(r, columns={}), _embeddings(r, column)

    emb = client.persist(_each(db.from_sequence(specs, npartitions=len(specs)), load))
    sample = _each(emb, lambda e: e[1][e[0].rows % every == 0])
    centroids = client.persist(dask.delayed(lambda parts: prune.fit(np.concatenate([a for p in parts for a in p if len(a)]), k, seed))(sample.to_delayed()))
    return client.persist(_each(emb, lambda e, c: (e[0], *prune.assign(e[1], c)), centroids)), centroids


def run_prune(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], priors: Any = ()
) -> tuple[Summaries, prune.PruneReport]:
    """Density-based pruning: clusters' sizes and distances summed over shards, quotas on the
    driver, each partly kept cluster's cut from one task, then each shard's drops."""
    step: PruneStep = plan.step
    config = step.config
    specs = shard_specs(store, plan, ledger, shards, 0)
    n = sum(s.count for s in specs)
    if n == 0:
        return {}, prune.PruneReport(plan.id, config.column, config.keep_fraction, 0, 0, 0)
    assigned, centroids = _clustered(client, specs, config.column, prune.density_clusters(n, config.clusters), config.fit_sample, n, config.seed)
    centres = _compute(client, centroids)
    k = len(centres)
    sums = _compute(client, _each(assigned, lambda a: prune.cluster_sums(a[1], a[2], k)))
    sizes, dist_sums = (np.sum([s[i] for s in sums], axis=0) for i in (0, 1))
    x, d_intra, d_inter = prune.plan_quotas(sizes, dist_sums, centres, prune.keep_count(n, config.keep_fraction))
    cuts = np.tile([np.nan, -1.0], (k, 1))  # (distance, row) of each cluster's last kept member
    cuts[x == 0] = (np.inf, -1)
    cuts[x == sizes] = (-np.inf, -1)
    partial = np.flatnonzero(np.isnan(cuts[:, 0]))

    def pieces(a: tuple[ShardRows, np.ndarray, np.ndarray]) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        r, labels, dist = a
        inside = np.isin(labels, partial)
        return [(j, (dist[inside][idx], r.rows[inside][idx])) for j, idx in _by_key(labels[inside])]

    def cut(group: tuple[int, list[tuple[np.ndarray, np.ndarray]]]) -> tuple[int, tuple[float, int]]:
        j, parts = group
        return j, prune.threshold(np.concatenate([d for d, _ in parts]), np.concatenate([r for _, r in parts]), int(x[j]))

    if len(partial):
        for j, c in _compute(client, _each(_groups(_flat(assigned, pieces), _parts(n)), cut)):
            cuts[j] = c

    def drops_of(a: tuple[ShardRows, np.ndarray, np.ndarray], cuts: np.ndarray, record: Recorder) -> tuple[str, int, ShardSummary | None]:
        r, labels, dist = a
        keep = prune.keep_farthest(dist, r.rows, cuts[labels, 0], cuts[labels, 1])
        return _record_reasons(record, r, [None if kept else f"{prune.REASON}:{j}" for kept, j in zip(keep.tolist(), labels.tolist())])

    summaries, _ = _recorded(_compute(client, _each(assigned, drops_of, cuts, Recorder(str(store.root), plan.id))))
    report = prune.PruneReport(plan.id, config.column, config.keep_fraction, n, int(x.sum()), k, sizes.tolist(), x.tolist(),
                               d_intra.round(6).tolist(), d_inter.round(6).tolist())
    return summaries, report


def run_target(
    client: Client, store: RunStore, plan: GlobalPlan, ledger: RunState, shards: list[ShardRef], priors: Priors
) -> tuple[Summaries, target.TargetReport]:
    """Keep the samples in pool clusters some reference item is nearest to."""
    step: TargetStep = plan.step
    config = step.config
    specs = shard_specs(store, plan, ledger, shards, 0)
    n = sum(s.count for s in specs)
    if n == 0:
        return {}, target.TargetReport(plan.id, step.column, 0, 0, 0, 0, 0)
    k = target.target_clusters(n, config.clusters)
    assigned, centroids = _clustered(client, specs, step.column, k, config.fit_sample, n, config.seed)
    reference, _, _ = _read_priors(client, priors, [step.column])

    def nearest(r: ShardRows, centroids: np.ndarray) -> tuple[np.ndarray, int]:
        """The pool clusters nearest to one reference shard's items (its unit embeddings), and how many."""
        items = [v for v in r.columns[step.column].to_pylist() if v is not None]
        return target.target_labels(unit_rows(items) if items else np.empty((0, 0), np.float32), centroids), len(items)

    def union(parts: list[list[tuple[np.ndarray, int]]]) -> tuple[np.ndarray, int]:
        found = [x for part in parts for x in part]
        return np.unique(np.concatenate([np.empty(0, np.int64), *(labels for labels, _ in found)])), sum(n for _, n in found)

    picked = client.persist(dask.delayed(union)(_each(reference, nearest, centroids).to_delayed()))

    def drops_of(a: tuple[ShardRows, np.ndarray, np.ndarray], picked: tuple[np.ndarray, int], record: Recorder) -> tuple[str, int, ShardSummary | None]:
        r, labels, _ = a
        return _record_reasons(record, r, [None if on else target.REASON for on in np.isin(labels, picked[0]).tolist()])

    summaries, lost = _recorded(_compute(client, _each(assigned, drops_of, picked, Recorder(str(store.root), plan.id))))
    labels, items = _compute(client, picked)
    k = _compute(client, dask.delayed(len)(centroids))
    report = target.TargetReport(plan.id, step.column, n, n - lost, k, len(labels), items)
    return summaries, report


GLOBAL_RUNNERS: dict[type, Callable[..., tuple[Summaries, Any]]] = {
    DedupStep: run_dedup,
    KeepTopStep: run_keep_top,
    BalanceStep: run_balance,
    PruneStep: run_prune,
    TargetStep: run_target,
}
"""How each kind of global step runs: (client, store, plan, state, shards, priors) -> (summaries
of the shards with drops, report); see the module docstring for the contract."""
