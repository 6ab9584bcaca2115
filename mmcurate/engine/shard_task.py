"""The per-shard task: run one group of annotate/filter steps over one input shard.

Runs on a Dask worker. Stored rows are reused; the tar is read only when some alive
sample lacks a row, and then streamed in batches so memory stays flat. New rows are merged
into the step's part and written atomically, so a killed task loses nothing it finished.
Samples are named by their position in the shard: a key is data and may repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..recipe import BlocklistStep, FilterStep
from ..steps.annotators import Annotator, Row
from ..io.inputs import ShardRef
from .plan import READ_STEP, AnnotatePlan, GroupStep, read_part_name, reads_pixels
from ..steps.sampleview import SampleView
from ..store.cache import PartCache
from ..store.runstore import RunStore, rows_to_table
from ..io.tarread import Sample, UnreadableShard, iter_samples
from ..io.tarwrite import sample_bytes
from .state import ShardSummary, alive_positions, create_state, record_verdicts
from .stored import decide_stored, sample_nbytes

__all__ = ["Entry", "GroupResult", "GroupTask", "compute_rows", "decide_steps", "looks_stored", "read_manifest", "read_manifest_at", "run_group"]

_MANIFEST_COLUMNS: dict[str, pa.DataType] = {"members": pa.list_(pa.string()), "sizes": pa.list_(pa.int64()), "offset": pa.int64()}
_instances: dict[str, Annotator] = {}  # per worker process: each annotator is set up once


@dataclass(frozen=True)
class Entry:
    """One sample of an input shard as the manifest records it."""

    key: str
    members: tuple[str, ...]
    sizes: tuple[int, ...]
    error: str | None
    offset: int | None = None
    """Where the sample starts in its (uncompressed) shard (:attr:`Sample.offset`); None in
    compressed shards and in manifests written before offsets were recorded."""


@dataclass(frozen=True)
class GroupTask:
    shard: ShardRef
    root: str
    modalities: Mapping[str, tuple[str, ...]]
    steps: tuple[GroupStep, ...]
    first: bool = True
    """The run's first group: every readable sample enters, and the task writes the shard's
    state (:mod:`.state`); later groups take the alive samples from that state."""
    batch_size: int = 64
    cache: str | None = None
    """A shared cache folder (:mod:`mmcurate.store.cache`): parts are taken from and published to it."""


@dataclass
class GroupResult:
    """What a group task returns: counts only, never a per-sample value."""

    shard: str
    summary: ShardSummary
    computed: dict[str, int] = field(default_factory=dict)
    """step id -> rows computed now (0 when every row came from the store)."""
    reused: dict[str, int] = field(default_factory=dict)
    """step id -> rows taken from the store (or the cache) instead."""


class _NeedSamples(Exception):
    """Raised by a store-only pass when some row must be computed from the sample bytes."""


def _annotator(plan: AnnotatePlan) -> Annotator:
    inst = _instances.get(plan.fingerprint)
    if inst is None:
        inst = plan.make()
        inst.setup()
        _instances[plan.fingerprint] = inst
    return inst


def _manifest_table(store: RunStore, shard: ShardRef) -> pa.Table | None:
    return store.read_part_if_readable(store.part_path(READ_STEP, read_part_name(shard)))


def _entries(table: pa.Table) -> list[Entry]:
    offsets = table["offset"].to_pylist() if "offset" in table.column_names else [None] * table.num_rows
    columns = (table[c].to_pylist() for c in ("key", "members", "sizes", "error"))  # column by column: faster than rows
    return [Entry(key, tuple(members), tuple(sizes), error, offset) for (key, members, sizes, error), offset in zip(zip(*columns), offsets)]


def read_manifest(store: RunStore, shard: ShardRef) -> list[Entry] | None:
    table = _manifest_table(store, shard)
    return _entries(table) if table is not None and table.num_rows else None


def read_manifest_at(store: RunStore, shard: ShardRef, positions: Iterable[int]) -> dict[int, Entry]:
    """The manifest's entries at ``positions`` (those it has), without making the others."""
    table = _manifest_table(store, shard)
    if table is None:
        return {}
    wanted = sorted({p for p in positions if 0 <= p < table.num_rows})
    return dict(zip(wanted, _entries(table.take(wanted))))


def _write_manifest(store: RunStore, shard: ShardRef, entries: list[Entry]) -> None:
    rows = [{"members": list(e.members), "sizes": list(e.sizes), "error": e.error, "offset": e.offset} for e in entries]
    path = store.part_path(READ_STEP, read_part_name(shard))
    store.write_rows(path, range(len(entries)), [e.key for e in entries], rows, _MANIFEST_COLUMNS)


def _read(shard: ShardRef) -> Iterator[tuple[Entry, Sample]]:
    """Samples of the shard with their manifest entries; a repeated key is an error.

    Content damage becomes entries with a ``read_error``; an I/O error (:class:`ReadFailed`)
    propagates, so the task fails and is retried, and nothing from this read is stored."""
    seen: set[str] = set()
    try:
        samples = iter_samples(shard.url)
        for sample in samples:
            error = sample.error
            if error is None and sample.key in seen:
                error = f"duplicate_key: {sample.key} appears twice in the shard"
            seen.add(sample.key)
            entry = Entry(sample.key, tuple(m.name for m in sample.members), tuple(len(m.data) for m in sample.members), error, sample.offset)
            yield entry, sample
    except UnreadableShard as exc:
        yield Entry("<unreadable>", (), (), f"read_error: {exc}"), Sample("<unreadable>")


def compute_rows(plan: AnnotatePlan, views: list[SampleView]) -> list[Row]:
    """``plan``'s annotator's row for each of ``views``, normalised through Arrow so fresh rows
    equal the ones a later run reads back from the store."""
    rows = _annotator(plan).annotate(views)
    if len(rows) != len(views):
        raise RuntimeError(f"annotator {plan.step.annotator} returned {len(rows)} rows for {len(views)} samples")
    return rows_to_table(range(len(views)), [v.key for v in views], rows, plan.columns).drop_columns(["pos", "key"]).to_pylist()


def decide_steps(
    steps: Sequence[GroupStep], samples: list[int], rows_of: Callable[[AnnotatePlan, list[int]], Mapping[int, Row]]
) -> tuple[dict[int, tuple[str, str]], dict[int, Row]]:
    """Run annotate/filter ``steps`` over ``samples`` (positions) in order: ``(drops, columns of the survivors)``.

    ``rows_of(plan, alive)`` returns a row for every alive sample (stored or freshly computed);
    a row with an ``error`` drops its sample at that step, a failed filter drops with ``fails CLAUSE``,
    a blocklist with ``blocklisted:<list file name>``.
    """
    alive = list(samples)
    columns: dict[int, Row] = {k: {} for k in samples}
    types: dict[str, pa.DataType] = {}
    drops: dict[int, tuple[str, str]] = {}
    for step in steps:
        survivors = []
        rows = rows_of(step, alive) if isinstance(step, AnnotatePlan) else None
        if isinstance(step, AnnotatePlan):
            types.update(step.columns)
        if isinstance(step, FilterStep):  # evaluated by Arrow over the alive samples at once
            values = {c: pa.array([columns[k].get(c) for k in alive], types.get(c)) for c in step.expr.columns}
            reasons = dict(zip(alive, step.verdicts(pa.table({"pos": pa.array(alive, pa.int64()), **values}))))
        for k in alive:
            if rows is not None:
                row = rows[k]
                verdict = (step.id, row["error"]) if row.get("error") else None
                if verdict is None:
                    columns[k].update(row)
            else:  # a filter or a blocklist
                reason = reasons[k] if isinstance(step, FilterStep) else step.verdict(columns[k])
                verdict = None if reason is None else (step.id, reason)
            if verdict is None:
                survivors.append(k)
            else:
                drops[k] = verdict
        alive = survivors
    return drops, {k: columns[k] for k in alive}


class _Decider:
    """Runs the group's steps over batches of alive samples, from stored rows when it can."""

    def __init__(self, task: GroupTask, store: RunStore, rows: bool = True):
        self.task = task
        self.annotates = [s for s in task.steps if isinstance(s, AnnotatePlan)]
        self.pixels = reads_pixels(task.steps)
        self.paths = {p.id: store.part_path(p.id, p.part_name(task.shard)) for p in self.annotates}
        self.cache = PartCache(task.cache) if task.cache else None
        self.cached = {p.id: (p.step.annotator, p.part_name(task.shard)) for p in self.annotates}
        """Each step's part in the cache: (kind, name)."""
        if self.cache:
            for p in self.annotates:
                self.cache.take(*self.cached[p.id], self.paths[p.id])
        self.store = store
        self.stored = {p.id: store.read_rows(self.paths[p.id]) if rows else {} for p in self.annotates}
        self.new: dict[str, dict[int, Row]] = {p.id: {} for p in self.annotates}
        self.looked: set[str] = set()
        """Steps whose cached part was read (once, when the run's part lacks a row)."""
        self.merged: set[str] = set()
        """Steps that took rows from the cached part."""
        self.reused = dict.fromkeys(self.stored, 0)

    def _from_cache(self, step: AnnotatePlan, rows: dict[int, Row]) -> None:
        """Add the cache's rows of ``step`` that the run's part lacks (another run computed them)."""
        if self.cache is None or step.id in self.looked or not self.cache.has(*self.cached[step.id]):
            return
        self.looked.add(step.id)
        cached = self.store.read_rows(self.cache.path(*self.cached[step.id]))
        for pos in cached.keys() - rows.keys():
            rows[pos] = cached[pos]
            self.merged.add(step.id)

    def decide(self, positions: list[int], views: Mapping[int, SampleView] | None) -> dict[int, tuple[str, str]]:
        """Drops among ``positions``; raises _NeedSamples if ``views`` is None and a row is missing."""

        def rows_of(step: AnnotatePlan, alive: list[int]) -> Mapping[int, Row]:
            rows = self.stored[step.id]
            missing = [p for p in alive if p not in rows]
            if missing:
                self._from_cache(step, rows)
                missing = [p for p in alive if p not in rows]
            self.reused[step.id] += len(alive) - len(missing)
            if missing:
                if views is None:
                    raise _NeedSamples
                fresh = dict(zip(missing, compute_rows(step, [views[p] for p in missing])))
                rows.update(fresh)
                self.new[step.id].update(fresh)
            return rows

        return decide_steps(self.task.steps, positions, rows_of)[0]

    def save(self, store: RunStore, entries: list[Entry]) -> dict[str, int]:
        computed = {}
        for plan in self.annotates:
            computed[plan.id] = len(self.new[plan.id])
            changed = bool(self.new[plan.id]) or plan.id in self.merged
            if changed:
                rows = self.stored[plan.id]
                positions = sorted(rows)
                store.write_rows(self.paths[plan.id], positions, [entries[p].key for p in positions], [rows[p] for p in positions], plan.columns)
            if self.cache:
                self.cache.publish(*self.cached[plan.id], self.paths[plan.id], replace=changed)
        return computed


BATCH_BYTES = 256 << 20
"""A batch also ends once its samples hold this many bytes, decoded (see
:meth:`SampleView.held_bytes`), so large members (video) and small files of many pixels keep a
task's memory flat whatever batch size an annotator asks for (CLIP asks for thousands)."""


def _held_bytes(sample: Sample, modalities: Mapping[str, tuple[str, ...]], pixels: bool) -> int:
    return SampleView(sample, modalities, pixels).held_bytes()


def _batches(
    items: Iterator[tuple[Entry, Sample]], size: int, max_bytes: int, held: Callable[[Sample], int]
) -> Iterator[list[tuple[Entry, Sample]]]:
    """``items`` in batches of at most ``size``, each ending once ``held(sample)`` sums to ``max_bytes``."""
    batch: list[tuple[Entry, Sample]] = []
    nbytes = 0
    for item in items:
        batch.append(item)
        nbytes += held(item[1])
        if len(batch) >= size or nbytes >= max_bytes:
            yield batch
            batch, nbytes = [], 0
    if batch:
        yield batch


def run_group(task: GroupTask) -> GroupResult:
    """Run ``task``: record this group's drops in the shard's state and return its summary."""
    store = RunStore(task.root)
    if task.cache:
        PartCache(task.cache).take(READ_STEP, read_part_name(task.shard), store.part_path(READ_STEP, read_part_name(task.shard)))
    decided = _from_stored(task, store)
    if decided is not None:
        return decided
    decider = _Decider(task, store)
    entries = read_manifest(store, task.shard)
    alive = None if task.first else set(alive_positions(store, task.shard).tolist())

    def entering(batch_entries: list[Entry], start: int) -> list[int]:
        """Positions of the samples among ``batch_entries`` (the first at ``start``) this group decides."""
        return [p for p, e in enumerate(batch_entries, start) if e.error is None and (alive is None or p in alive)]

    if entries is not None:
        try:
            drops = decider.decide(entering(entries, 0), views=None)
            return _finish(task, store, entries, drops, decider)
        except _NeedSamples:
            decider.reused = dict.fromkeys(decider.reused, 0)  # counted again by the pass over the samples
    fresh: list[Entry] = []
    drops = {}
    held = partial(_held_bytes, modalities=task.modalities, pixels=decider.pixels)
    for batch in _batches(_read(task.shard), task.batch_size, BATCH_BYTES, held):
        start = len(fresh)
        batch_entries = [e for e, _ in batch]
        fresh.extend(batch_entries)
        positions = entering(batch_entries, start)
        wanted = set(positions)
        views = {p: SampleView(s, task.modalities, decider.pixels) for p, (_, s) in enumerate(batch, start) if p in wanted}
        drops.update(decider.decide(positions, views))
    if entries is None:
        _write_manifest(store, task.shard, fresh)
    return _finish(task, store, fresh, drops, decider)


def looks_stored(task: GroupTask) -> bool:
    """Whether the shard's manifest and every part ``task`` reads exist (in the run or the cache),
    so the task likely only decides (:func:`_from_stored`): cheap enough to run several in one Dask task."""
    store = RunStore(task.root)
    cache = PartCache(task.cache) if task.cache else None
    parts = [(READ_STEP, READ_STEP, read_part_name(task.shard))]
    parts += [(p.id, p.step.annotator, p.part_name(task.shard)) for p in task.steps if isinstance(p, AnnotatePlan)]
    return all(store.part_path(step, name).exists() or (cache is not None and cache.has(kind, name)) for step, kind, name in parts)


def _from_stored(task: GroupTask, store: RunStore) -> GroupResult | None:
    """The group decided column-wise from the stored rows (:mod:`.stored`: no sample read, no
    object per sample), or None when some row is missing from the run's parts (then the
    :class:`_Decider` takes it from the cache's part or computes it) or a step needs rows one by one."""
    manifest = _manifest_table(store, task.shard)
    if manifest is None or not manifest.num_rows or any(isinstance(s, BlocklistStep) for s in task.steps):
        return None
    decider = _Decider(task, store, rows=False)
    positions = np.flatnonzero(pc.is_null(manifest["error"]).to_numpy(zero_copy_only=False))
    if not task.first:
        positions = np.intersect1d(positions, alive_positions(store, task.shard))
    decided = decide_stored(task.steps, {p.id: store.read_part_if_readable(path) for p, path in zip(decider.annotates, decider.paths.values())}, positions)
    if decided is None:
        return None
    drops, decider.reused = decided
    computed = decider.save(store, [])
    columns = (manifest["key"].to_pylist(), sample_nbytes(manifest["sizes"]).tolist(), manifest["error"].to_pylist()) if task.first else None
    return _record(task, store, drops, computed, decider, columns)


def _finish(task: GroupTask, store: RunStore, entries: list[Entry], drops: dict[int, tuple[str, str]], decider: _Decider) -> GroupResult:
    """Save the new rows (and publish parts to the cache); record ``drops`` in the shard's state
    (the first group writes it from ``entries`` with them, in one write)."""
    computed = decider.save(store, entries)
    columns = ([e.key for e in entries], [sample_bytes(e.sizes) for e in entries], [e.error for e in entries]) if task.first else None
    return _record(task, store, drops, computed, decider, columns)


def _record(
    task: GroupTask,
    store: RunStore,
    drops: dict[int, tuple[str, str]],
    computed: dict[str, int],
    decider: _Decider,
    manifest: tuple[list[str], list[int], list[str | None]] | None,
) -> GroupResult:
    """Publish the shard's manifest to the cache and record ``drops`` in the shard's state (the
    first group writes it from ``manifest``: each sample's key, bytes in a tar and read error)."""
    if decider.cache:
        decider.cache.publish(READ_STEP, read_part_name(task.shard), store.part_path(READ_STEP, read_part_name(task.shard)), replace=False)
    if manifest is not None:  # the first group
        summary = create_state(store, task.shard, *manifest, drops)
    else:
        summary = record_verdicts(store, task.shard, drops)
    return GroupResult(task.shard.url, summary, computed, decider.reused)
