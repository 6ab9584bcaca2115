"""``open_run()``: read a run directory back as tables (decisions, annotations, funnel)."""

from __future__ import annotations

import os
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..steps.dedup.results import CLUSTER_FILE
from ..views.funnel import StepCount, funnel
from ..io.inputs import ShardRef
from ..io.output import OUTPUT_STEP
from ..engine.plan import Plan, build_plan, funnel_steps, read_annotations
from ..recipe import DedupStep, Recipe
from ..steps.sampleview import SampleView
from ..engine.shard_task import read_manifest
from .runstore import RunStore
from ..io.tarread import Sample, iter_samples

if TYPE_CHECKING:
    from ..steps.dedup import PriorRows

__all__ = ["Run", "open_run"]


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
    def root(self) -> Path:
        return self.store.root

    def shard_ref(self, url: str) -> ShardRef:
        """The input shard ``url`` as this run saw it (its identity names the stored parts)."""
        return ShardRef(url=url, identity=self.info["shard_identities"][url])

    @property
    def complete(self) -> bool:
        return self.info.get("status") == "complete"

    @property
    def decisions(self) -> pa.Table:
        """One row per input sample: shard, key, pos (its place in the shard), kept, step, reason, output_shard."""
        if not self.store.decisions_path.exists():
            raise FileNotFoundError(f"{self.root}: no decisions.parquet yet (the run did not finish)")
        return pq.read_table(self.store.decisions_path)

    @cached_property
    def plan(self) -> Plan:
        """The run's plan, fingerprinted with what its annotators resolved then (``run.json``)."""
        return build_plan(self.recipe, self.info.get("resolved"))

    def annotations(self) -> pa.Table:
        """Every stored annotation column, one row per sample that has any (shard, key, pos, columns...)."""
        plan = self.plan
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        types: dict[str, pa.DataType] = {"shard": pa.string(), "key": pa.string(), "pos": pa.int64()}
        for p in plan.annotate_plans():
            types.update(p.columns)
        for url in self.info["inputs"]:
            ref = self.shard_ref(url)
            keys = [e.key for e in read_manifest(self.store, ref) or ()]
            for pos, row in read_annotations(self.store, plan.annotate_plans(), ref).items():
                rows[(url, pos)] = {"shard": url, "key": keys[pos] if pos < len(keys) else None, "pos": pos, **row}
        for table in self.clusters().values():
            for row in table.to_pylist():
                rows[(row["shard"], row["pos"])].update(dup_cluster=row["dup_cluster"], dup_cluster_size=row["dup_cluster_size"])
            types.update(dup_cluster=pa.int64(), dup_cluster_size=pa.int32())
        types["error"] = pa.string()
        present = {c for r in rows.values() for c in r}
        schema = pa.schema([(c, t) for c, t in types.items() if c in present or c in ("shard", "key", "pos")])
        return pa.Table.from_pylist(list(rows.values()), schema=schema)

    def kept_rows(self) -> "PriorRows":
        """The kept samples' keys and stored columns, for deduplicating a new run against this one."""
        from ..steps.dedup import PriorRows

        kept = {(d["shard"], d["pos"]) for d in self.decisions.select(["shard", "pos", "kept"]).to_pylist() if d["kept"]}
        rows = [r for r in self.annotations().to_pylist() if (r["shard"], r["pos"]) in kept]
        names = {c for r in rows for c in r} - {"shard", "key", "pos", "error"}
        return PriorRows(str(self.root), [r["key"] for r in rows], {c: [r.get(c) for r in rows] for c in names})

    def sample(self, key: str) -> list[dict[str, Any]]:
        """Everything about the input sample(s) called ``key`` (one per shard holding it): shard,
        kept, step, reason, output_shard, members (name -> bytes), and ``annotations``: per annotate
        step its stored columns (or its error), per dedup step the sample's duplicate cluster.

        Raises ``KeyError`` naming the run when no input sample has that key.
        """
        decisions = self.decisions
        found = decisions.filter(pc.field("key") == key).to_pylist()
        if not found:
            examples = ", ".join(decisions.column("key").to_pylist()[:3])
            raise KeyError(f"{self.root}: no input sample with key {key!r} (keys look like {examples})")
        plan = self.plan
        clusters_by_step = self.clusters()
        for record in found:
            ref, pos = self.shard_ref(record["shard"]), record["pos"]
            entries = read_manifest(self.store, ref) or []
            record["members"] = dict(zip(entries[pos].members, entries[pos].sizes)) if pos < len(entries) else {}
            steps = {}
            for p in plan.annotate_plans():
                row = self.store.read_rows(self.store.part_path(p.id, p.part_name(ref))).get(pos)
                if row is not None:
                    steps[p.id] = {"error": row["error"]} if row.get("error") else {k: v for k, v in row.items() if k not in ("key", "error")}
            for step_id, clusters in clusters_by_step.items():
                mine = clusters.filter((pc.field("shard") == record["shard"]) & (pc.field("pos") == pos)).to_pylist()
                if mine and mine[0]["dup_cluster_size"] > 1:
                    members = clusters.filter(pc.field("dup_cluster") == mine[0]["dup_cluster"]).column("key").to_pylist()
                    steps[step_id] = {**{k: mine[0][k] for k in ("dup_cluster", "dup_cluster_size")}, "cluster_keys": members}
            record["annotations"] = steps
        return found

    def clusters(self) -> dict[str, pa.Table]:
        """Per dedup step that ran: shard, pos, key, dup_cluster, dup_cluster_size of every sample it saw
        (a dataset directory of one part per shard)."""
        found = {}
        for step in self.recipe.steps:
            path = self.store.part_path(step.id, CLUSTER_FILE)
            if isinstance(step, DedupStep) and path.exists():
                found[step.id] = pq.read_table(path)
        return found

    def dropped_by(self, step: str) -> pa.Table:
        """shard, key, pos and reason of every sample dropped by ``step``; ``KeyError`` lists the steps."""
        steps = funnel_steps(self.recipe) + [OUTPUT_STEP]
        if step not in steps:
            raise KeyError(f"{self.root}: no step {step!r}; steps are {', '.join(steps)}")
        return self.decisions.filter(pc.field("step") == step).select(["shard", "key", "pos", "reason"])

    def read_samples(self, pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Sample]:
        """The raw samples named by ``(shard, pos)``, read from the run's input shards.

        Each shard is streamed only up to the last sample wanted from it; a sample no longer
        there is missing from the result.
        """
        wanted: dict[str, set[int]] = {}
        for shard, pos in pairs:
            wanted.setdefault(shard, set()).add(pos)
        found: dict[tuple[str, int], Sample] = {}
        for shard, positions in wanted.items():
            last = max(positions)
            try:
                for pos, sample in enumerate(iter_samples(shard)):
                    if pos in positions:
                        found[(shard, pos)] = sample
                    if pos == last:
                        break
            except OSError:
                continue  # an unreadable shard: its samples were dropped by `read`, nothing to show
        return found

    def view(self, sample: Sample) -> SampleView:
        """A :class:`SampleView` of ``sample`` with this run's modalities (for thumbnails, annotators)."""
        return SampleView(sample, self.recipe.modalities)

    def funnel(self) -> list[StepCount]:
        return funnel(self.decisions, funnel_steps(self.recipe))

    def top_reasons(self, n: int = 10) -> list[tuple[str, int]]:
        """The most common full drop reasons."""
        return Counter(r for r in self.decisions.column("reason").to_pylist() if r).most_common(n)


def open_run(out: str | os.PathLike[str]) -> Run:
    """Open the run directory ``out`` written by :func:`mmcurate.curate` or ``mmcurate filter``."""
    return Run(out)
