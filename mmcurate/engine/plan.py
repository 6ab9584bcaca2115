"""From a recipe to stages of work, and the fingerprints that name stored annotations.

Consecutive annotate/filter/blocklist steps form a *group*, run as one task per input shard; a new
group starts where an annotator asks for other worker resources (a GPU), so cheap steps run
on every worker and the GPU step only on the survivors. Dedup, keep_top, balance, prune and
target steps are *global*: they run once over small columns of the whole dataset.

An annotation part is named by a fingerprint of the annotator (name, version, config,
identity of resolved resources such as a checkpoint file), the recipe's modalities, the
fingerprints of the annotate steps before it, and the input shard's identity. Filters are
not part of it: annotators are pure per-sample functions, so a new threshold reuses every
stored row (rows missing for newly surviving samples are computed and added).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

import pyarrow as pa
import pyarrow.compute as pc

from ..steps import annotators
from ..io.inputs import ShardRef
from ..recipe import AnnotateStep, BlocklistStep, FilterStep, GlobalStep, Recipe
from ..store.runstore import RunStore

__all__ = ["AnnotatePlan", "GlobalPlan", "Group", "Plan", "READ_STEP", "build_plan", "digest", "funnel_steps", "read_annotations", "reads_pixels"]

READ_STEP = "read"
READER_VERSION = "1"
PART_FORMAT = "2"
"""Version of the stored part layout (2: rows carry ``pos``); part names include it."""


def digest(obj: Any, length: int = 16) -> str:
    """Stable short hash of JSON-able data."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@dataclass(frozen=True)
class AnnotatePlan:
    """An annotate step with its shard-independent fingerprint.

    It carries the annotator class itself, so workers run annotators registered only in
    the driver's process (Dask pickles the class to them).
    """

    step: AnnotateStep
    fingerprint: str
    annotator: type[annotators.Annotator]
    resolved: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    """What the annotator's ``prepare()`` returned in the driver."""

    @property
    def id(self) -> str:
        return self.step.id

    @property
    def columns(self) -> dict[str, pa.DataType]:
        return self.annotator.columns_for(self.step.config)

    @property
    def resources(self) -> dict[str, float]:
        return self.annotator.resources_for(self.step.config)

    def part_name(self, shard: ShardRef) -> str:
        return f"{shard.name}-{digest([self.fingerprint, shard.identity, PART_FORMAT])}.parquet"

    def make(self) -> annotators.Annotator:
        return self.annotator(self.step.config, self.resolved)


GroupStep = Union[AnnotatePlan, FilterStep, BlocklistStep]


def reads_pixels(steps: Iterable[GroupStep]) -> bool:
    """Whether some annotator among ``steps`` reads decoded image pixels (else images are only
    verified, see :meth:`SampleView.image_meta`)."""
    return any(s.annotator.needs_pixels_for(s.step.config) for s in steps if isinstance(s, AnnotatePlan))


@dataclass(frozen=True)
class Group:
    """Per-shard steps run together in one task per input shard."""

    steps: tuple[GroupStep, ...]

    @property
    def resources(self) -> dict[str, float]:
        """Worker resources its tasks ask for (those of its annotators)."""
        found: dict[str, float] = {}
        for step in self.steps:
            if isinstance(step, AnnotatePlan):
                found.update(step.resources)
        return found

    def batch_size(self, default: int) -> int:
        """Samples per batch: ``default``, or more where an annotator wants bigger batches."""
        wanted = [s.annotator.batch_size_for(s.step.config) for s in self.steps if isinstance(s, AnnotatePlan)]
        return max([default] + [w for w in wanted if w])


@dataclass(frozen=True)
class GlobalPlan:
    """A global step (dedup, keep_top, balance, prune, target) and, per column it reads, the annotate step that stored it."""

    step: GlobalStep
    sources: dict[str, AnnotatePlan]

    @property
    def id(self) -> str:
        return self.step.id

    @property
    def columns(self) -> list[str]:
        return self.step.columns


Stage = Union[Group, GlobalPlan]


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    stages: tuple[Stage, ...]

    def annotate_plans(self) -> list[AnnotatePlan]:
        return [s for g in self.stages if isinstance(g, Group) for s in g.steps if isinstance(s, AnnotatePlan)]

    def per_sample_steps(self) -> list[GroupStep]:
        """Every annotate, filter and blocklist step in order, without the global stages (dedup, keep_top) between them."""
        return [s for g in self.stages if isinstance(g, Group) for s in g.steps]


def funnel_steps(recipe: Recipe) -> list[str]:
    """Step ids in the order samples meet them: the ``read`` pseudo-step, then the recipe's."""
    return [READ_STEP] + [s.id for s in recipe.steps]


def read_annotations(
    store: RunStore, plans: Iterable[AnnotatePlan], shard: ShardRef, positions: Iterable[int] | None = None
) -> dict[int, dict[str, Any]]:
    """pos -> every column the ``plans`` stored for ``shard`` (``error`` only where one failed),
    of the samples at ``positions`` only when given."""
    wanted = None if positions is None else pa.array(sorted(set(positions)), pa.int64())
    merged: dict[int, dict[str, Any]] = {}
    for plan in plans:
        table = store.read_part_if_readable(store.part_path(plan.id, plan.part_name(shard)))
        if table is None:
            continue
        if wanted is not None:
            table = table.filter(pc.is_in(table["pos"], value_set=wanted))
        for row in table.drop_columns(["key"]).to_pylist():
            pos, error = row.pop("pos"), row.pop("error")
            target = merged.setdefault(pos, {})
            target.update(row)
            if error:
                target.setdefault("error", error)
    return merged


def read_part_name(shard: ShardRef) -> str:
    return f"{shard.name}-{digest([READER_VERSION, shard.identity, PART_FORMAT])}.parquet"


def _fingerprinted(config: Any) -> dict[str, Any]:
    """The config's fields, less those marked ``metadata={"fingerprint": False}`` (settings
    such as a batch size, which change how fast rows are computed, never their values)."""
    values = dataclasses.asdict(config)
    return {f.name: values[f.name] for f in dataclasses.fields(config) if f.metadata.get("fingerprint", True)}


def build_plan(recipe: Recipe, identities: Mapping[str, Mapping[str, Any]] | None = None) -> Plan:
    """Stages of ``recipe``; ``identities`` maps an annotate step id to what its annotator's
    ``prepare()`` resolved (part of the fingerprint; :func:`mmcurate.curate` passes them)."""
    identities = identities or {}
    modalities = {k: list(v) for k, v in recipe.modalities.items()}
    stages: list[Stage] = []
    current: list[GroupStep] = []
    upstream: list[str] = []
    produced: dict[str, AnnotatePlan] = {}
    for step in recipe.steps:
        if isinstance(step, AnnotateStep):
            cls = annotators.get(step.annotator)
            resolved = dict(identities.get(step.id) or {})
            fp = digest(
                {
                    "annotator": cls.name,
                    "version": cls.version,
                    "config": _fingerprinted(step.config),
                    "modalities": modalities,
                    "upstream": upstream,
                    **({"resolved": resolved} if resolved else {}),
                }
            )
            upstream = upstream + [fp]
            plan = AnnotatePlan(step, fp, cls, resolved)
            produced.update({column: plan for column in plan.columns})
            if any(isinstance(s, AnnotatePlan) for s in current) and plan.resources != Group(tuple(current)).resources:
                stages.append(Group(tuple(current)))
                current = []
            current.append(plan)
        elif isinstance(step, (FilterStep, BlocklistStep)):
            current.append(step)
        else:
            if current:
                stages.append(Group(tuple(current)))
                current = []
            stages.append(GlobalPlan(step, dict(produced)))
    if current:
        stages.append(Group(tuple(current)))
    return Plan(recipe, tuple(stages))
