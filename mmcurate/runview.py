"""``open_run()``: read a run directory back as tables (decisions, annotations, funnel)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .funnel import StepCount, funnel
from .inputs import ShardRef
from .plan import build_plan, funnel_steps, read_annotations
from .dedup.step import CLUSTER_FILE
from .recipe import DedupStep, Recipe
from .store import RunStore

if TYPE_CHECKING:
    from .dedup import PriorRows

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

    @property
    def complete(self) -> bool:
        return self.info.get("status") == "complete"

    @property
    def decisions(self) -> pa.Table:
        """One row per input sample: shard, key, kept, step, reason, output_shard."""
        if not self.store.decisions_path.exists():
            raise FileNotFoundError(f"{self.root}: no decisions.parquet yet (the run did not finish)")
        return pq.read_table(self.store.decisions_path)

    def annotations(self) -> pa.Table:
        """Every stored annotation column, one row per sample that has any (shard, key, columns...)."""
        plan = build_plan(self.recipe)
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        types: dict[str, pa.DataType] = {"shard": pa.string(), "key": pa.string()}
        for p in plan.annotate_plans():
            types.update(p.annotator.columns)
        for url in self.info["inputs"]:
            ref = _ref(url, self.info)
            for key, row in read_annotations(self.store, plan.annotate_plans(), ref).items():
                rows[(url, key)] = {"shard": url, "key": key, **row}
        for step in self.recipe.steps:
            clusters = self.store.part_path(step.id, CLUSTER_FILE)
            if isinstance(step, DedupStep) and clusters.exists():
                for row in pq.read_table(clusters).to_pylist():
                    rows[(row["shard"], row["key"])].update(dup_cluster=row["dup_cluster"], dup_cluster_size=row["dup_cluster_size"])
                types.update(dup_cluster=pa.int64(), dup_cluster_size=pa.int32())
        types["error"] = pa.string()
        present = {c for r in rows.values() for c in r}
        schema = pa.schema([(c, t) for c, t in types.items() if c in present or c in ("shard", "key")])
        return pa.Table.from_pylist(list(rows.values()), schema=schema)

    def kept_rows(self) -> "PriorRows":
        """The kept samples' keys and stored columns, for deduplicating a new run against this one."""
        from .dedup import PriorRows

        kept = {(d["shard"], d["key"]) for d in self.decisions.select(["shard", "key", "kept"]).to_pylist() if d["kept"]}
        rows = [r for r in self.annotations().to_pylist() if (r["shard"], r["key"]) in kept]
        names = {c for r in rows for c in r} - {"shard", "key", "error"}
        return PriorRows(str(self.root), [r["key"] for r in rows], {c: [r.get(c) for r in rows] for c in names})

    def funnel(self) -> list[StepCount]:
        return funnel(self.decisions, funnel_steps(self.recipe))

    def top_reasons(self, n: int = 10) -> list[tuple[str, int]]:
        """The most common full drop reasons."""
        return Counter(r for r in self.decisions.column("reason").to_pylist() if r).most_common(n)


def _ref(url: str, info: dict[str, Any]) -> ShardRef:
    return ShardRef(url=url, identity=info["shard_identities"][url])


def open_run(out: str | os.PathLike[str]) -> Run:
    """Open the run directory ``out`` written by :func:`mmcurate.curate` or ``mmcurate filter``."""
    return Run(out)
