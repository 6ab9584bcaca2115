"""Reference sets (``--against``, a dedup step's ``against:``): the items a dedup step compares
samples to. A reference item always stays; a sample in its cluster is dropped as
``matches_reference:KEY`` (:data:`~mmcurate.steps.dedup.results.REFERENCE_REASON`).

A reference is an earlier run directory (the stored columns of its kept samples are read,
nothing is recomputed) or raw shards (paths, globs, brace ranges, URLs, as inputs are given).
Over raw shards, the annotate steps that store the dedup step's columns (and its keep policy's)
run as ordinary group tasks (:func:`~.shard_task.run_group`, no filters) into
``OUT/reference/``, a store of its own: parts are named by the step's fingerprint and the
shard's identity, so they are computed once and every later run reads them back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import pyarrow as pa
from dask.distributed import Client

from ..io.inputs import InputError, ShardRef, resolve_inputs
from ..io.location import location
from ..recipe import DedupStep
from ..steps.dedup.results import PriorRows
from ..io.location import location
from ..store.runstore import RunStore
from ..store.runview import open_run
from . import cluster
from .gather import read_rows, shard_specs
from .plan import GlobalPlan, Group
from .shard_task import GroupTask, run_group
from .state import RunState

__all__ = ["REFERENCE_DIR", "Reference", "ReferenceRows", "resolve_references"]

REFERENCE_DIR = "reference"
"""``OUT/reference/``: the annotation store of reference shards."""


@dataclass(frozen=True)
class Reference:
    """One ``--against`` item: an earlier run's kept rows, or shards to annotate."""

    source: str
    rows: PriorRows | None = None
    """An earlier run directory's kept samples (None for shards)."""
    shards: tuple[ShardRef, ...] = ()


def _is_run(spec: str) -> bool:
    return (location(spec) / "run.json").is_file()


def resolve_references(specs: Iterable[str | os.PathLike[str]]) -> list[Reference]:
    """Each spec as an earlier run directory (it holds ``run.json``) or as shards; raises
    :class:`~mmcurate.io.inputs.InputError` naming a spec that is neither."""
    found = []
    for spec in map(str, specs):
        local = spec if "://" in spec else os.path.abspath(os.path.expanduser(spec))
        if _is_run(local):
            rows = open_run(local).kept_rows()
            found.append(Reference(rows.source, rows=rows))
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

    def priors(self, client: Client, plan: GlobalPlan) -> list[PriorRows]:
        """The reference items ``plan`` compares samples to: for a dedup step ``--against`` and its
        own ``against:``, for a target step its ``reference:``; none for other steps."""
        common = self.common if isinstance(plan.step, DedupStep) else []
        found = []
        for ref in [*common, *self.own.get(plan.id, ())]:
            found.append(ref.rows if ref.rows is not None else self._shard_rows(client, plan, ref))
        return found

    def _identified(self, client: Client, ref: Reference) -> list[ShardRef]:
        """``ref``'s shards, those without a change marker (ETag, mtime...) with a hash of their
        content in their identity, as inputs get, so a shard changed in place is annotated again
        (hashed once per run, whichever steps compare against ``ref``)."""
        if ref.source not in self._identities:
            self._identities[ref.source], _ = cluster.hash_unstamped(client, list(ref.shards), "hash reference shards", self.quiet)
        return self._identities[ref.source]

    def _shard_rows(self, client: Client, plan: GlobalPlan, ref: Reference) -> PriorRows:
        """The readable, annotated samples of ``ref``'s shards with ``plan``'s columns."""
        steps = tuple(dict.fromkeys(plan.sources[c] for c in plan.columns))  # each once
        group = Group(steps)
        shards = self._identified(client, ref)
        tasks = [GroupTask(s, str(self.store.root), self.modalities, steps, True, group.batch_size(self.batch_size)) for s in shards]
        resources = group.resources if cluster.offers(client, group.resources) else None
        label = f"reference {plan.id}: " + ", ".join(s.id for s in steps)
        for result in cluster.map_tasks(client, run_group, tasks, label, lambda t: t.shard.url, self.quiet, resources):
            for step_id, n in result.computed.items():
                self.computed[step_id] = self.computed.get(step_id, 0) + n
        specs = shard_specs(self.store, plan, RunState(self.store, shards), shards, 0)
        tables = [pa.table({"key": rows.keys, **rows.columns}) for rows in client.gather(client.map(read_rows, specs, pure=False))]
        if not tables:
            tables.append(pa.table({"key": pa.array([], pa.string()), **{c: pa.nulls(0) for c in plan.columns}}))
        return PriorRows(ref.source, pa.concat_tables(tables, promote_options="permissive"))
