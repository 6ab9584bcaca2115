"""Reference sets (``--against``, a dedup step's ``against:``): the items a dedup step compares
samples to. A reference item always stays; a sample in its cluster is dropped as
``matches_reference:KEY`` (:data:`~mmcurate.steps.dedup.results.REFERENCE_REASON`).

A reference is an earlier run directory (the stored columns of its kept samples are read,
nothing is recomputed) or raw shards (paths, globs, brace ranges, URLs, as inputs are given).
Over raw shards, the annotate steps that store the dedup step's columns (and its keep policy's)
run as ordinary group tasks (:func:`~.shard_task.run_group`, no filters) into
``OUT/reference/``, a store of its own: parts are named by the step's fingerprint and the
shard's identity, so they are computed once and every later run reads them back.

Reference rows never pass through the driver: it holds one :class:`PriorShard` per reference
shard (an earlier run's input shard, or a reference shard), and the global step's worker tasks
read them (:meth:`PriorShard.read`), one partition each, into the shuffle of the run's rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dask.distributed import Client

from ..io.inputs import InputError, ShardRef, resolve_inputs
from ..io.location import location
from ..recipe import DedupStep
from ..store.runstore import RunStore
from ..store.runview import Run, open_run
from . import cluster
from .gather import ShardRows, ShardSpec, read_rows, shard_specs
from .plan import GlobalPlan, Group
from .shard_task import GroupTask, run_group
from .state import RunState

__all__ = ["REFERENCE_DIR", "PriorShard", "Priors", "Reference", "ReferenceRows", "resolve_references"]

REFERENCE_DIR = "reference"
"""``OUT/reference/``: the annotation store of reference shards."""


@dataclass(frozen=True)
class Reference:
    """One ``--against`` item: an earlier run (its kept samples), or shards to annotate."""

    source: str
    run: Run | None = None
    """An earlier run directory, as ``run.json`` describes it (None for shards)."""
    shards: tuple[ShardRef, ...] = ()


@dataclass(frozen=True)
class PriorShard:
    """One shard of a reference, as a worker task reads it (:meth:`read`): an earlier run's
    input shard ``url`` (its kept samples' stored columns), or a reference shard annotated into
    ``OUT/reference/`` (``spec``)."""

    index: int
    """Negative: reference rows come before the run's, numbered in the order of these indexes."""
    source: str
    url: str
    spec: ShardSpec | None = None

    def read(self, runs: Mapping[str, Run], columns: Sequence[str]) -> ShardRows:
        """This shard's reference rows with ``columns`` (a worker task; the global step numbers them)."""
        if self.spec is not None:
            return replace(read_rows(self.spec), index=self.index)
        run = runs[self.source]
        table = run.shard_annotations(self.url, [])
        kept = run.shard_decisions(self.url, ["pos", "kept"]).filter(pc.field("kept"))["pos"]
        table = table.filter(pc.is_in(table["pos"], value_set=kept))
        types = {c: t for p in run.plan.annotate_plans() for c, t in p.columns.items()}
        values = {c: table[c].combine_chunks() if c in table.column_names else pa.nulls(table.num_rows, types[c]) for c in columns}
        n = table.num_rows
        return ShardRows(self.index, run.shard_ref(self.url), np.arange(n, dtype=np.int64), table["pos"].to_numpy(), table["key"].combine_chunks(), values)


@dataclass
class Priors:
    """A step's reference items as the driver holds them: per reference shard what a worker
    reads, and the earlier runs those shards belong to (their ``run.json``); never a sample."""

    shards: list[PriorShard] = field(default_factory=list)
    runs: dict[str, Run] = field(default_factory=dict)


def _is_run(spec: str) -> bool:
    return (location(spec) / "run.json").is_file()


def resolve_references(specs: Iterable[str | os.PathLike[str]]) -> list[Reference]:
    """Each spec as an earlier run directory (it holds ``run.json``) or as shards; raises
    :class:`~mmcurate.io.inputs.InputError` naming a spec that is neither."""
    found = []
    for spec in map(str, specs):
        local = spec if "://" in spec else os.path.abspath(os.path.expanduser(spec))
        if _is_run(local):
            run = open_run(local)
            found.append(Reference(str(run.root), run=run))
            continue
        try:
            found.append(Reference(local, shards=tuple(resolve_inputs([local]))))
        except InputError as exc:
            raise InputError(f"against {spec}: neither an mmcurate run directory (no run.json) nor reference shards: {exc}") from None
    return found


class ReferenceRows:
    """A dedup step's reference items: ``--against`` for every dedup step plus the step's own
    ``against:``; reference shards annotated (or read back) in ``OUT/reference/``."""

    def __init__(self, root: str | os.PathLike[str], common: Sequence[Reference], own: Mapping[str, Sequence[Reference]],
                 modalities: Mapping[str, tuple[str, ...]], batch_size: int, quiet: bool):
        self.store = RunStore(location(root) / REFERENCE_DIR)
        self.common = list(common)
        self.own = own
        self.modalities = dict(modalities)
        self.batch_size = batch_size
        self.quiet = quiet
        self._identities: dict[str, list[ShardRef]] = {}
        """Reference shards with their identities (content hashes where needed), by source."""
        self.computed: dict[str, int] = {}
        """Rows each annotate step computed over reference shards in this run."""

    @property
    def sources(self) -> list[str]:
        """The ``--against`` references (for every dedup step), as run.json records them."""
        return [r.source for r in self.common]

    def priors(self, client: Client, plan: GlobalPlan) -> Priors:
        """The reference items ``plan`` compares samples to (for a dedup step ``--against`` and its
        own ``against:``, for a target step its ``reference:``; none for other steps), as what
        workers read per reference shard: reference shards are annotated first."""
        common = self.common if isinstance(plan.step, DedupStep) else []
        found: list[tuple[str, str, ShardSpec | None]] = []
        runs = {}
        for ref in [*common, *self.own.get(plan.id, ())]:
            if ref.run is None:
                found += [(ref.source, spec.url, spec) for spec in self._shard_specs(client, plan, ref)]
                continue
            have = {c for p in ref.run.plan.annotate_plans() for c in p.columns}
            missing = [c for c in plan.columns if c not in have]
            if missing:
                raise ValueError(f"reference {ref.source}: the earlier run has no column(s) {', '.join(missing)} for step {plan.id}; "
                                 "compute them there with the same annotate step")
            runs[ref.source] = ref.run
            found += [(ref.source, url, None) for url in ref.run.info["inputs"]]
        return Priors([PriorShard(j - len(found), *piece) for j, piece in enumerate(found)], runs)

    def _identified(self, client: Client, ref: Reference) -> list[ShardRef]:
        """``ref``'s shards, those without a change marker (ETag, mtime...) with a hash of their
        content in their identity, as inputs get, so a shard changed in place is annotated again
        (hashed once per run, whichever steps compare against ``ref``)."""
        if ref.source not in self._identities:
            self._identities[ref.source], _ = cluster.hash_unstamped(client, list(ref.shards), "hash reference shards", self.quiet)
        return self._identities[ref.source]

    def _shard_specs(self, client: Client, plan: GlobalPlan, ref: Reference) -> list[ShardSpec]:
        """What to read of ``ref``'s shards (their readable samples) once ``plan``'s columns are
        annotated (or found) in ``OUT/reference/``."""
        steps = tuple(dict.fromkeys(plan.sources[c] for c in plan.columns))  # each once
        group = Group(steps)
        shards = self._identified(client, ref)
        tasks = [GroupTask(s, str(self.store.root), self.modalities, steps, True, group.batch_size(self.batch_size)) for s in shards]
        resources = group.resources if cluster.offers(client, group.resources) else None
        label = f"reference {plan.id}: " + ", ".join(s.id for s in steps)
        alive = {}
        for result in cluster.map_tasks(client, run_group, tasks, label, lambda t: t.shard.url, self.quiet, resources):
            alive[result.shard] = result.summary.kept
            for step_id, n in result.computed.items():
                self.computed[step_id] = self.computed.get(step_id, 0) + n
        return shard_specs(self.store, plan, RunState(self.store, shards, alive), shards, 0)
