"""``open_run()``: read a run directory back as tables (decisions, annotations, funnel)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..steps.dedup.results import CLUSTER_FILE, REASONS, REFERENCE_REASON
from ..engine.state import drop_groups
from ..views.funnel import StepCount, funnel_from_groups, reason_category
from ..io.inputs import ShardRef
from ..io.output import OUTPUT_STEP
from ..engine.plan import READ_STEP, Plan, build_plan, funnel_steps, read_part_name
from ..recipe import BlocklistStep, DedupStep, Recipe
from ..steps.sampleview import SampleView
from ..engine.shard_task import Entry, read_manifest_at
from .runstore import RunStore
from ..io.location import Location, dataset, read_table
from ..io.tarread import Sample, UnreadableShard, iter_samples, read_sample_at

__all__ = ["Run", "ShardChanged", "UnknownSample", "open_run"]

_NO_DROPS = pa.table({"step": pa.array([], pa.string()), "reason": pa.array([], pa.string())})


class Run:
    """A finished (or interrupted) run. Tables are ``pyarrow.Table``; call ``.to_pandas()`` for pandas."""

    def __init__(self, root: str | os.PathLike[str]):
        self.store = RunStore(root)
        info = self.store.load_run_info()
        if info is None:
            raise FileNotFoundError(f"{root}: no run.json; not an mmcurate run directory")
        self.info: dict[str, Any] = info
        self.recipe = Recipe.from_dict(info["recipe"], source=info.get("recipe_source", "<run.json>"))

    @property
    def root(self) -> Location:
        return self.store.root

    def shard_ref(self, url: str) -> ShardRef:
        """The input shard ``url`` as this run saw it (its identity names the stored parts)."""
        return ShardRef(url=url, identity=self.info["shard_identities"][url])

    @property
    def complete(self) -> bool:
        return self.info.get("status") == "complete"

    @property
    def decisions(self) -> pa.Table:
        """One row per input sample: shard, key, pos (its place in the shard), kept, step, reason,
        output_shard. This reads the whole dataset: for a large run use :meth:`decisions_dataset`,
        :meth:`decisions_where` or :meth:`shard_decisions`."""
        return self.decisions_dataset().to_table()

    def decisions_dataset(self) -> ds.Dataset:
        """The decisions as a lazy ``pyarrow.dataset`` (``OUT/decisions.parquet/``, one file per
        input shard, in input order; a single file in runs of mmcurate before 0.x)."""
        if not self.store.decisions_path.exists():
            raise FileNotFoundError(f"{self.root}: no decisions.parquet yet (the run did not finish)")
        return dataset(self.store.decisions_path, format="parquet")

    def decisions_where(self, where: pc.Expression | None = None, columns: list[str] | None = None) -> pa.Table:
        """The decisions matching ``where`` (an Arrow expression such as ``pc.field("step") == "dedup"``),
        scanned file by file."""
        return self.decisions_dataset().to_table(filter=where, columns=columns)

    def shard_decisions(self, url: str, columns: list[str] | None = None) -> pa.Table:
        """The decisions of input shard ``url`` alone (one file read)."""
        if self.store.decisions_path.is_file():
            return self.decisions_where(pc.field("shard") == url, columns)
        index = self.info["inputs"].index(url)
        return read_table(self.store.decisions_file(index, self.shard_ref(url).name), columns=columns)

    def counts(self) -> tuple[int, int]:
        """(samples in, kept), counted from the decisions without reading them whole."""
        dataset = self.decisions_dataset()
        return dataset.count_rows(), dataset.count_rows(filter=pc.field("kept"))

    @cached_property
    def plan(self) -> Plan:
        """The run's plan, fingerprinted with what its annotators resolved then (``run.json``)."""
        return build_plan(self.recipe, self.info.get("resolved"))

    def annotations(self) -> pa.Table:
        """Every stored annotation column, one row per sample that has any (shard, key, pos,
        columns..., ``dup_cluster``/``dup_cluster_size`` per dedup step that ran, ``error``). This
        holds them all: for a large run iterate :meth:`iter_annotations`."""
        tables = list(self.iter_annotations())
        table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
        types = self._annotation_types()
        present = [c for c in types if c in table.column_names or c in ("shard", "key", "pos")]
        return pa.table({c: table.column(c).cast(types[c]) if c in table.column_names else pa.array([], types[c]) for c in present})

    def iter_annotations(self) -> Iterator[pa.Table]:
        """:meth:`annotations` one input shard at a time (shards with no stored row are skipped)."""
        clusters = self._cluster_datasets()
        for url in self.info["inputs"]:
            table = self.shard_annotations(url, clusters)
            if table.num_rows:
                yield table

    def _annotation_types(self) -> dict[str, pa.DataType]:
        types: dict[str, pa.DataType] = {"shard": pa.string(), "key": pa.string(), "pos": pa.int64()}
        for p in self.plan.annotate_plans():
            types.update(p.columns)
        return {**types, "dup_cluster": pa.int64(), "dup_cluster_size": pa.int32(), "error": pa.string()}

    def shard_annotations(self, url: str, clusters: list[_Clusters] | None = None) -> pa.Table:
        """The stored annotation columns of input shard ``url`` alone, in ``pos`` order (see
        :meth:`annotations`); ``clusters``: the dedup steps' cluster datasets, if already open."""
        ref = self.shard_ref(url)
        parts = [self.store.read_part_if_readable(self.store.part_path(p.id, p.part_name(ref))) for p in self.plan.annotate_plans()]
        parts = [part for part in parts if part is not None]
        positions = np.unique(np.concatenate([part["pos"].to_numpy() for part in parts] + [np.empty(0, np.int64)]))
        manifest = self.store.read_part_if_readable(self.store.part_path(READ_STEP, read_part_name(ref)))
        columns: dict[str, Any] = {
            "shard": pa.repeat(pa.scalar(url, pa.string()), len(positions)),
            "key": _at(manifest, positions)["key"] if manifest is not None else pa.nulls(len(positions), pa.string()),
            "pos": pa.array(positions, pa.int64()),
        }
        errors = []
        for part in parts:
            aligned = _at(part, positions)
            columns.update((c, aligned[c]) for c in part.column_names if c not in ("pos", "key", "error"))
            errors.append(pc.if_else(pc.equal(aligned["error"], ""), None, aligned["error"]))
        for cluster in self._cluster_datasets() if clusters is None else clusters:
            aligned = _at(cluster.of(url), positions)
            for c in ("dup_cluster", "dup_cluster_size"):  # a later step's cluster wins where it has one
                columns[c] = pc.coalesce(aligned[c], columns[c]) if c in columns else aligned[c]
        error = pc.coalesce(*errors) if errors else pa.nulls(len(positions), pa.string())  # the first step's error
        if error.null_count < len(error):
            columns["error"] = error
        return pa.table(columns)

    def _cluster_datasets(self) -> list[_Clusters]:
        """The cluster file of each dedup step that ran, in recipe order, its parts by shard."""
        paths = [self.store.part_path(s.id, CLUSTER_FILE) for s in self.recipe.steps if isinstance(s, DedupStep)]
        return [_Clusters.open(path) for path in paths if path.exists()]

    def sample(self, key: str) -> list[dict[str, Any]]:
        """Everything about the input sample(s) called ``key`` (one per shard holding it): shard,
        kept, step, reason, output_shard, members (name -> bytes), and ``annotations``: per annotate
        step its stored columns (or its error), per dedup step the sample's duplicate cluster.

        Raises ``KeyError`` naming the run when no input sample has that key.
        """
        found = self.decisions_where(pc.field("key") == key).to_pylist()
        if not found:
            examples = ", ".join(self.decisions_dataset().head(3, columns=["key"]).column("key").to_pylist())
            raise KeyError(f"{self.root}: no input sample with key {key!r} (keys look like {examples})")
        plan = self.plan
        clusters_by_step = self.clusters()
        withheld = self.withheld((r["shard"], r["pos"]) for r in found)
        for record in found:
            ref, pos = self.shard_ref(record["shard"]), record["pos"]
            entry = read_manifest_at(self.store, ref, [pos]).get(pos)
            record["members"] = dict(zip(entry.members, entry.sizes)) if entry is not None else {}
            steps: dict[str, Any] = {}
            record["annotations"] = steps
            if (record["shard"], pos) in withheld:
                continue  # nothing derived from a sample a blocklist may hold back is shown
            for p in plan.annotate_plans():
                row = self.store.read_rows(self.store.part_path(p.id, p.part_name(ref))).get(pos)
                if row is not None:
                    steps[p.id] = {"error": row["error"]} if row.get("error") else {k: v for k, v in row.items() if k not in ("key", "error")}
            for step_id, clusters in clusters_by_step.items():
                mine = clusters.filter((pc.field("shard") == record["shard"]) & (pc.field("pos") == pos)).to_pylist()
                if mine and mine[0]["dup_cluster_size"] > 1:
                    members = clusters.filter(pc.field("dup_cluster") == mine[0]["dup_cluster"]).column("key").to_pylist()
                    steps[step_id] = {**{k: mine[0][k] for k in ("dup_cluster", "dup_cluster_size")}, "cluster_keys": members}
        return found

    def withheld(self, pairs: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Those of the samples ``(shard, pos)`` whose content is never shown: with a blocklist
        step in the recipe, every sample that did not pass all of them (blocklisted, or dropped
        before it was checked), and every sample when the run has no decisions yet."""
        pairs = set(pairs)
        blocklists = {s.id for s in self.recipe.steps if isinstance(s, BlocklistStep)}
        if not blocklists or not pairs:
            return set()
        if not self.store.decisions_path.exists():
            return pairs
        steps = funnel_steps(self.recipe)
        last = max(steps.index(b) for b in blocklists)
        unchecked = pa.array(steps[: last + 1], pa.string())
        held = self.decisions.select(["shard", "pos", "step"]).filter(pc.is_in(pc.field("step"), value_set=unchecked))
        return pairs & set(zip(held.column("shard").to_pylist(), held.column("pos").to_pylist()))

    def clusters(self, where: pc.Expression | None = None) -> dict[str, pa.Table]:
        """Per dedup step that ran: shard, pos, key, dup_cluster, dup_cluster_size of every sample it saw
        (a dataset directory of one part per shard), or of those matching ``where``."""
        found = {}
        for step in self.recipe.steps:
            path = self.store.part_path(step.id, CLUSTER_FILE)
            if isinstance(step, DedupStep) and path.exists():
                found[step.id] = read_table(path, filters=where)
        return found

    def dropped_by(self, step: str) -> pa.Table:
        """shard, key, pos and reason of every sample dropped by ``step``; ``KeyError`` lists the steps."""
        steps = funnel_steps(self.recipe) + [OUTPUT_STEP]
        if step not in steps:
            raise KeyError(f"{self.root}: no step {step!r}; steps are {', '.join(steps)}")
        return self.decisions_where(pc.field("step") == step, ["shard", "key", "pos", "reason"])

    def read_samples(self, pairs: Iterable[tuple[str, int]], problems: dict[tuple[str, int], str] | None = None) -> dict[tuple[str, int], Sample]:
        """The raw samples named by ``(shard, pos)``, read from the run's input shards.

        A sample is read at the byte offset the run recorded (a shard with none recorded, such
        as a compressed one, is streamed up to the last sample wanted) and checked against the
        run's manifest: a shard changed since the run raises :class:`ShardChanged`, or, when
        ``problems`` is given, the reason is put there. A sample :meth:`withheld`, or no longer
        readable, is missing from the result (the reason in ``problems`` when given).
        """
        pairs = set(pairs)
        wanted: dict[str, set[int]] = {}
        for shard, pos in pairs - self.withheld(pairs):
            wanted.setdefault(shard, set()).add(pos)
        found: dict[tuple[str, int], Sample] = {}
        for shard, positions in wanted.items():
            entry_at = read_manifest_at(self.store, self.shard_ref(shard), positions)
            try:
                for pos, sample in self._read_shard(shard, positions, entry_at):
                    changed = _changed(shard, pos, entry_at.get(pos), sample)
                    if changed is None:
                        found[(shard, pos)] = sample
                    elif problems is None:
                        raise ShardChanged(changed)
                    else:
                        problems[(shard, pos)] = changed
            except OSError as exc:  # an unreadable shard: its samples were dropped by `read`, nothing to show
                if problems is not None:
                    problems.update(((shard, pos), str(exc)) for pos in positions if (shard, pos) not in found)
        return found

    @staticmethod
    def _read_shard(shard: str, positions: set[int], entry_at: dict[int, Entry]) -> Iterator[tuple[int, Sample]]:
        """``(pos, sample)`` of the samples at ``positions``: by offset where recorded, the others
        by streaming the shard up to the last of them."""
        streamed = set(positions)
        for pos in sorted(positions):
            offset = entry_at[pos].offset if pos in entry_at else None
            if offset is not None:
                streamed.discard(pos)
                try:
                    yield pos, read_sample_at(shard, offset)
                except UnreadableShard:  # no tar member starts there any more
                    yield pos, Sample("<no tar member>")
        if streamed:
            last = max(streamed)
            for pos, sample in enumerate(iter_samples(shard)):
                if pos in streamed:
                    yield pos, sample
                if pos == last:
                    break

    def view(self, sample: Sample) -> SampleView:
        """A :class:`SampleView` of ``sample`` with this run's modalities (for thumbnails, annotators)."""
        return SampleView(sample, self.recipe.modalities)

    def _fragments(self) -> list[ds.Fragment]:
        """The files of the decisions dataset, in input order."""
        return sorted(self.decisions_dataset().get_fragments(), key=lambda f: f.path)

    def funnel(self) -> list[StepCount]:
        """Counts per step, aggregated file by file (never the whole decisions at once)."""
        groups, rows = [], 0
        for fragment in self._fragments():
            table = fragment.to_table(columns=["step", "reason"])
            groups.append(drop_groups(table, rows))
            rows += table.num_rows
        return funnel_from_groups(pa.concat_tables(groups) if groups else drop_groups(_NO_DROPS), rows, funnel_steps(self.recipe))

    def unreadable_inputs(self) -> dict[str, str]:
        """Input shard URL -> why, for the inputs not one sample of which could be read (every
        sample dropped at ``read``, or no sample found at all); aggregated file by file."""
        readable: set[str] = set()
        why: dict[str, str] = {}
        for fragment in self._fragments():
            d = fragment.to_table(columns=["shard", "step", "reason"])
            at_read = pc.fill_null(pc.equal(d["step"], READ_STEP), False)
            readable.update(pc.unique(d.filter(pc.invert(at_read))["shard"]).to_pylist())
            first = d.filter(at_read).group_by("shard", use_threads=False).aggregate([("reason", "first", pc.ScalarAggregateOptions(skip_nulls=False))])
            for shard, reason in zip(first["shard"].to_pylist(), first["reason_first"].to_pylist()):
                why.setdefault(shard, reason or "read_error")
        failed = self.info.get("failed") or {}
        return {url: why.get(url, "no samples") for url in self.info["inputs"] if url not in readable and url not in failed}

    def top_reasons(self, n: int = 10) -> list[tuple[str, int]]:
        """The most common drop reasons; those naming the sample a dedup step kept
        (``duplicate_of:KEY``) count together per kind: ``duplicate_of:KEY (of 3 kept samples)``."""
        counts: Counter[str] = Counter()
        kept_keys: dict[str, set[str]] = {}
        for entry in pc.value_counts(self.decisions_where(pc.is_valid(pc.field("reason")), ["reason"]).column("reason")).to_pylist():
            reason, count = entry["values"], entry["counts"]
            kind = reason_category(reason)
            if kind in (*REASONS.values(), REFERENCE_REASON):
                reason = f"{kind}:KEY"
                kept_keys.setdefault(reason, set()).add(entry["values"])
            counts[reason] += count
        return [(f"{r} (of {len(kept_keys[r])} kept sample(s))" if r in kept_keys else r, c) for r, c in counts.most_common(n)]


_CLUSTER_COLUMNS = pa.schema([("pos", pa.int64()), ("dup_cluster", pa.int64()), ("dup_cluster_size", pa.int32())])


@dataclass
class _Clusters:
    """One dedup step's cluster file: its parts by the shard each holds, told by the parts'
    statistics (read once), so a shard's rows are one part read, not a scan of every part;
    parts of many shards (one file, as earlier versions wrote) are scanned with a filter."""

    by_shard: dict[str, list[ds.Fragment]]
    mixed: list[ds.Fragment]

    @classmethod
    def open(cls, path: Location) -> "_Clusters":
        by_shard: dict[str, list[ds.Fragment]] = {}
        mixed = []
        for fragment in dataset(path, format="parquet").get_fragments():
            fragment.ensure_complete_metadata()
            stats = [rg.statistics.get("shard") for rg in fragment.row_groups if rg.num_rows]
            urls = {(s["min"], s["max"]) for s in stats if s}
            if len(urls) == 1 and all(stats) and len(set(next(iter(urls)))) == 1:
                by_shard.setdefault(next(iter(urls))[0], []).append(fragment)
            elif stats:
                mixed.append(fragment)
        return cls(by_shard, mixed)

    def of(self, url: str) -> pa.Table:
        """pos, dup_cluster and dup_cluster_size of the rows of shard ``url``."""
        columns = _CLUSTER_COLUMNS.names
        tables = [f.to_table(columns=columns) for f in self.by_shard.get(url, [])]
        tables += [f.to_table(filter=pc.field("shard") == url, columns=columns) for f in self.mixed]
        return pa.concat_tables([t.cast(_CLUSTER_COLUMNS) for t in tables]) if tables else _CLUSTER_COLUMNS.empty_table()


class UnknownSample(KeyError):
    """A streamed sample that the run never saw (another dataset, or shards that changed)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ShardChanged(UnknownSample):
    """An input shard that is not the one the run read: streamed, a shard at the URL (or with the
    file name) of one of the run's inputs whose identity (size, stamps) differs from the one the
    run recorded; read back (:meth:`Run.read_samples`), one that no longer holds at a sample's
    recorded offset the sample the run recorded there."""


def _changed(shard: str, pos: int, entry: Entry | None, sample: Sample) -> str | None:
    """Why ``sample``, read at ``pos`` of ``shard``, is not the one the run's manifest ``entry``
    recorded there (None when it is, or when there is no entry to compare with)."""
    if entry is None:
        return None
    if (sample.key, tuple(m.name for m in sample.members), tuple(len(m.data) for m in sample.members)) == (entry.key, entry.members, entry.sizes):
        return None
    found = f"{sample.key!r} ({', '.join(m.name for m in sample.members) or 'no members'})"
    return f"{shard}: changed since the run: sample {pos} was {entry.key!r} ({', '.join(entry.members)}), now {found}; rerun mmcurate on it"


def _at(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """The rows of ``table`` (which has a ``pos`` column) at ``positions``; all null where it has none."""
    pos = table["pos"].to_numpy()
    if not len(pos):
        return table.take(pa.nulls(len(positions), pa.int64()))
    order = np.argsort(pos, kind="stable")
    at = order[np.minimum(np.searchsorted(pos, positions, sorter=order), len(pos) - 1)]
    return table.take(pa.array(at, pa.int64(), mask=pos[at] != positions))


def open_run(out: str | os.PathLike[str]) -> Run:
    """Open the run directory ``out`` written by :func:`mmcurate.curate` or ``mmcurate filter``."""
    return Run(out)
