"""Recipes: which extensions are which modality, and an ordered list of steps.

A recipe is YAML (``yaml.safe_load`` only) or a dict, validated whole before any work
starts into frozen dataclasses. Every error names the recipe file, the step and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import pyarrow as pa
import yaml

from .steps import annotators
from .steps.balance import BalanceConfig
from .steps.blocklist import METHODS as BLOCKLIST_METHODS
from .steps.blocklist import index_for, read_list
from .decode.image import DEFAULT_IMAGE_EXTENSIONS, image_formats
from .steps.dedup.config import METHODS as DEDUP_METHODS
from .steps.dedup.config import KeepPolicy
from .steps.expr import Expr, ExprError, kind_of
from .steps.prune import DensityConfig
from .steps.target import TargetConfig

__all__ = [
    "AnnotateStep",
    "BalanceStep",
    "BlocklistStep",
    "DedupStep",
    "FilterStep",
    "GlobalStep",
    "KeepTopStep",
    "OutputConfig",
    "PruneStep",
    "Recipe",
    "RecipeError",
    "STEP_KINDS",
    "Step",
    "TargetStep",
    "recipe_dirs",
]

DEFAULT_MODALITIES: dict[str, tuple[str, ...]] = {
    "image": DEFAULT_IMAGE_EXTENSIONS,
    "text": ("txt",),
}
_RESERVED_IDS = {"read", "output"}


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file, the step and the field."""


@dataclass(frozen=True)
class AnnotateStep:
    """Run annotator ``annotator`` with ``config``; stores its columns, never decides."""

    id: str
    annotator: str
    config: Any

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "annotate": self.annotator, **dataclasses.asdict(self.config)}


@dataclass(frozen=True)
class FilterStep:
    """Keep samples for which ``expr`` is true."""

    id: str
    expr: Expr

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "filter": self.expr.text}

    def verdicts(self, table: pa.Table) -> list[str | None]:
        """The drop reason of each sample (a row of ``table``): ``fails CLAUSE``, or None to keep it."""
        return [None if failed is None else f"fails {failed}" for failed in self.expr.failures(table)]


@dataclass(frozen=True)
class BlocklistStep:
    """Drop samples whose ``method`` hash (md5, sha256, pdq, phash) is on the list in file
    ``list`` (within ``max_distance`` bits for pdq and phash); see :mod:`mmcurate.steps.blocklist`.
    ``list_sha256`` is the file's content when the recipe was loaded: part of the run's identity."""

    id: str
    method: str
    list: str
    max_distance: int
    list_sha256: str

    @property
    def reason(self) -> str:
        return f"blocklisted:{Path(self.list).name}"

    def verdict(self, row: Mapping[str, Any]) -> str | None:
        """``blocklisted:<list file name>`` for a listed sample, else None."""
        index = index_for(self.list, self.method, self.max_distance, self.list_sha256)
        return self.reason if index.matches(row) else None

    def to_dict(self) -> dict[str, Any]:
        near = {"max_distance": self.max_distance} if BLOCKLIST_METHODS[self.method].near else {}
        return {"id": self.id, "blocklist": self.method, "list": self.list, **near, "list_sha256": self.list_sha256}


@dataclass(frozen=True)
class DedupStep:
    """Global step over the whole dataset: ``exact`` (equal values), ``phash`` (Hamming
    distance), ``semantic`` (embedding similarity); one sample per cluster stays."""

    id: str
    method: str
    config: Any
    against: tuple[str, ...] = ()
    """Reference sets for this step alone (besides ``--against``): earlier run directories or
    shards; a sample matching a reference item is dropped as ``matches_reference:KEY``."""

    @property
    def keep(self) -> KeepPolicy:
        return KeepPolicy.parse(self.config.keep)

    @property
    def columns(self) -> list[str]:
        """Columns it reads: the compared one(s) (value, then ``_mirror``, ``_variants``, ``_regions``), then the keep policy's."""
        cols = [self.config.column] + list(getattr(self.config, "extra_columns", []))
        return cols + [c for c in self.keep.columns if c not in cols]

    def to_dict(self) -> dict[str, Any]:
        against = {"against": list(self.against)} if self.against else {}
        return {"id": self.id, "dedup": self.method, **dataclasses.asdict(self.config), **against}


@dataclass(frozen=True)
class KeepTopStep:
    """Global step: keep the ``fraction`` of all surviving samples with the highest ``column``
    (ties go to the earlier sample in input order); the rest are dropped."""

    id: str
    column: str
    fraction: float

    @property
    def columns(self) -> list[str]:
        return [self.column]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "keep_top": self.column, "fraction": self.fraction}


@dataclass(frozen=True)
class BalanceStep:
    """Global step: MetaCLIP balancing over the entries in list column ``column`` (``concepts``);
    see :mod:`mmcurate.steps.balance`."""

    id: str
    column: str
    config: BalanceConfig

    @property
    def columns(self) -> list[str]:
        return [self.column]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "balance": self.column, **dataclasses.asdict(self.config)}


@dataclass(frozen=True)
class PruneStep:
    """Global step: ``density`` pruning (DBP) over an embedding column; see :mod:`mmcurate.steps.prune`."""

    id: str
    method: str
    config: DensityConfig

    @property
    def columns(self) -> list[str]:
        return [self.config.column]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prune": self.method, **dataclasses.asdict(self.config)}


@dataclass(frozen=True)
class TargetStep:
    """Global step: keep samples whose nearest ``column`` centroid is the nearest of some item of
    the reference runs; see :mod:`mmcurate.steps.target`."""

    id: str
    column: str
    config: TargetConfig

    @property
    def columns(self) -> list[str]:
        return [self.column]

    def to_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        return {"id": self.id, "target": self.column, **config, "reference": list(self.config.reference)}


GlobalStep = Union[DedupStep, KeepTopStep, BalanceStep, PruneStep, TargetStep]
"""Steps that see every surviving sample of the dataset at once."""
Step = Union[AnnotateStep, FilterStep, BlocklistStep, DedupStep, KeepTopStep, BalanceStep, PruneStep, TargetStep]
STEP_KINDS = ("annotate", "filter", "blocklist", "dedup", "keep_top", "balance", "prune", "target")
PRUNE_METHODS = {"density": DensityConfig}


OUTPUT_KEYS = ("keep", "prefix_shard")


@dataclass(frozen=True)
class OutputConfig:
    """How kept samples are re-sharded."""

    samples_per_shard: int = 10_000
    shards: Optional[int] = None
    """Target number of output shards (e.g. a multiple of your DataLoader's workers): when set,
    each shard takes ``ceil(kept / shards)`` samples instead of ``samples_per_shard``
    (``max_shard_bytes`` still applies, so there may be more)."""
    max_shard_bytes: int = 1_000_000_000
    prefix: str = "curated"
    annotations_member: bool = True
    """Add ``KEY.mmcurate.json`` with the sample's annotations to each kept sample."""
    keys: str = "keep"
    """Output keys: ``keep`` the input keys (a key an earlier input shard already gave drops the
    later sample as ``duplicate_key_across_shards:SHARD``), or ``prefix_shard``: ``NAME/KEY``,
    NAME being the input shard's file name without ``.tar``."""
    order: str = "input"
    """The order samples are written in, across all output shards: ``input`` (input shard by
    input shard, tar order), ``shuffle`` (one global permutation drawn from ``seed``), or
    ``COLUMN asc`` / ``COLUMN desc`` (a stored annotation column; ties and nulls, last, in input order)."""
    seed: int = 0
    """Seed of ``order: shuffle``."""

    def __post_init__(self) -> None:
        for name in ("samples_per_shard", "max_shard_bytes", "shards"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"field {name!r}: expected a positive integer, got {value!r}")
        if self.keys not in OUTPUT_KEYS:
            raise ValueError(f"field 'keys': expected one of {', '.join(OUTPUT_KEYS)}, got {self.keys!r}")
        words = self.order.split()
        if words not in (["input"], ["shuffle"]) and not (len(words) == 2 and words[1] in ("asc", "desc")):
            raise ValueError(f"field 'order': expected input, shuffle, or COLUMN asc|desc (e.g. 'clip_score desc'), got {self.order!r}")

    @property
    def sort(self) -> tuple[str, bool] | None:
        """``(column, descending)`` for ``order: COLUMN asc|desc``, else None."""
        words = self.order.split()
        return (words[0], words[1] == "desc") if len(words) == 2 else None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Build with :meth:`load` (file or name) or :meth:`from_dict`."""

    name: str
    steps: tuple[Step, ...]
    modalities: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_MODALITIES))
    output: OutputConfig = OutputConfig()
    source: str = field(default="<dict>", compare=False)

    @classmethod
    def load(cls, spec: str | Path, overrides: Iterable[str] = ()) -> "Recipe":
        """Load a recipe by name (``default`` -> ``filters/default.yaml``) or path, then apply
        ``--set``-style overrides such as ``"filter_1.expr=width >= 300"``."""
        path = _find_recipe(str(spec))
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path), overrides=overrides)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", overrides: Iterable[str] = ()) -> "Recipe":
        """Validate a recipe given as plain data (what the YAML file holds)."""
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe is a mapping with 'name' and 'steps'")
        data = json.loads(json.dumps(data))  # a private, plain copy that overrides may edit
        _apply_overrides(data, list(overrides), source)
        return _validate(data, source)

    @classmethod
    def resolve(cls, spec: "str | Path | Recipe", overrides: Iterable[str] = ()) -> "Recipe":
        """``spec`` as a recipe: a :class:`Recipe` (overrides applied) or a name or path to load."""
        return spec.with_overrides(overrides) if isinstance(spec, Recipe) else cls.load(spec, overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` turns back into an equal recipe."""
        return {
            "name": self.name,
            "modalities": {k: list(v) for k, v in self.modalities.items()},
            "steps": [s.to_dict() for s in self.steps],
            "output": dataclasses.asdict(self.output),
        }

    def with_overrides(self, overrides: Iterable[str]) -> "Recipe":
        """A copy with ``STEP.PARAM=VALUE`` overrides applied (re-validated)."""
        return Recipe.from_dict(self.to_dict(), source=self.source, overrides=overrides)

    def to_yaml(self) -> str:
        """The recipe as YAML that :meth:`load` (and ``mmcurate filter --recipe FILE``) reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def step(self, step_id: str) -> Step:
        """The step called ``step_id``; :class:`RecipeError` lists the ids."""
        return self.steps[self._index(step_id)]

    def with_step(self, step: Mapping[str, Any], *, after: str | None = None, before: str | None = None) -> "Recipe":
        """A copy with ``step`` (a mapping as in YAML, e.g. ``{"filter": "width >= 256"}``) inserted
        after or before the step with that id, or appended; the result is validated whole."""
        if after is not None and before is not None:
            raise RecipeError("with_step: give after= or before=, not both")
        at = len(self.steps) if after is None and before is None else self._index(after or before) + (after is not None)
        return self._edited(at, at, step)

    def replace_step(self, step_id: str, step: Mapping[str, Any]) -> "Recipe":
        """A copy where ``step_id`` is replaced by ``step`` (which keeps the id unless it names one)."""
        at = self._index(step_id)
        return self._edited(at, at + 1, {"id": step_id, **step})

    def without_step(self, step_id: str) -> "Recipe":
        """A copy without the step ``step_id`` (validated: later steps may need its columns)."""
        at = self._index(step_id)
        return self._edited(at, at + 1, None)

    def _index(self, step_id: str) -> int:
        ids = [s.id for s in self.steps]
        if step_id not in ids:
            raise RecipeError(f"{self.source}: no step {step_id!r}; steps are {', '.join(ids)}")
        return ids.index(step_id)

    def _edited(self, start: int, stop: int, step: Mapping[str, Any] | None) -> "Recipe":
        data = self.to_dict()
        data["steps"][start:stop] = [] if step is None else [dict(step)]
        source = self.source if self.source.endswith("(edited)") else f"{self.source} (edited)"
        return Recipe.from_dict(data, source=source)


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up: the installed package's copy, then the source tree's."""
    here = Path(__file__).resolve().parent
    return [p for p in (here / "recipes", here.parent / "filters") if p.is_dir()]


def _find_recipe(spec: str) -> Path:
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or "/" in spec:
        if not path.is_file():
            raise RecipeError(f"{spec}: no such recipe file")
        return path
    for folder in recipe_dirs():
        candidate = folder / f"{spec}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in recipe_dirs() for p in d.glob("*.yaml")})
    raise RecipeError(f"{spec}: no such recipe; built-in recipes: {', '.join(known) or 'none found'}")


def _apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> None:
    for item in overrides:
        target, sep, raw = item.partition("=")
        step_id, dot, param = target.strip().partition(".")
        if not sep or not dot or not param:
            raise RecipeError(f"--set {item!r}: expected STEP.PARAM=VALUE, e.g. filter_1.expr='width >= 300'")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if step_id == "output":
            data.setdefault("output", {})[param] = value
            continue
        steps = data.get("steps") or []
        ids = _step_ids(steps)
        if step_id not in ids:
            raise RecipeError(f"{source}: --set {item!r}: no step {step_id!r}; steps are {', '.join(ids)}")
        step = steps[ids.index(step_id)]
        if param == "expr" and "filter" in step:
            step["filter"] = str(raw)
        else:
            step[param] = value


def _step_kind(step: Mapping[str, Any]) -> str | None:
    kinds = [k for k in STEP_KINDS if k in step]
    return kinds[0] if len(kinds) == 1 else None


def _step_ids(steps: list[Any]) -> list[str]:
    """Explicit ``id`` or a default: the annotator's name, ``filter_N``, ``KIND_VALUE`` for the
    other kinds (``dedup_exact``, ``keep_top_clip_score``, ``blocklist_sha256``, ``balance_concepts``,
    ``prune_density``, ``target_image_embedding``)."""
    ids: list[str] = []
    filters = 0
    for step in steps:
        if not isinstance(step, dict):
            ids.append(f"step_{len(ids) + 1}")
            continue
        kind = _step_kind(step)
        if kind == "filter":
            filters += 1
        if "id" in step:
            ids.append(str(step["id"]))
        elif kind == "annotate":
            ids.append(str(step["annotate"]))
        elif kind == "filter":
            ids.append(f"filter_{filters}")
        elif kind is not None:
            ids.append(f"{kind}_{step[kind]}")
        else:
            ids.append(f"step_{len(ids) + 1}")
    return ids


def _validate(data: dict[str, Any], source: str) -> Recipe:
    top = {"name", "description", "modalities", "steps", "output"}
    if set(data) - top:
        raise RecipeError(f"{source}: {_unknown_fields(set(data) - top, top, 'top-level field(s)')}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"{source}: field 'name' must be a non-empty string")
    modalities = _validate_modalities(data.get("modalities"), source)
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        raise RecipeError(f"{source}: field 'steps' must be a non-empty list")
    ids = _step_ids(steps_data)
    steps: list[Step] = []
    columns: dict[str, pa.DataType] = {}
    for index, (raw, step_id) in enumerate(zip(steps_data, ids), start=1):
        where = f"{source}: step {index} ({step_id})"
        if not isinstance(raw, dict) or _step_kind(raw) is None:
            guess = _did_you_mean(raw, STEP_KINDS) if isinstance(raw, dict) else ""
            raise RecipeError(f"{where}: a step is a mapping with exactly one of {', '.join(repr(k) for k in STEP_KINDS)}{guess}")
        if step_id in _RESERVED_IDS or ids.count(step_id) > 1:
            raise RecipeError(f"{where}: field 'id': {step_id!r} is reserved or used twice; give the step a unique 'id'")
        _check_file_name(step_id, where, "id")
        step = _validate_step(raw, step_id, where, columns)
        if isinstance(step, AnnotateStep):
            columns.update(annotators.get(step.annotator).columns_for(step.config))
        elif isinstance(step, KeepTopStep) and kind_of(columns[step.column]) not in ("number", "boolean"):
            raise RecipeError(f"{where}: field 'keep_top': column {step.column!r} is not numeric; rank by a number column such as clip_score")
        steps.append(step)
    output = _build_config(OutputConfig, data.get("output") or {}, f"{source}: output")
    _check_file_name(output.prefix, f"{source}: output", "prefix")
    if output.sort and kind_of(columns.get(output.sort[0], pa.null())) not in ("number", "boolean", "string"):
        raise RecipeError(
            f"{source}: output: field 'order': column {output.sort[0]!r} is not a number, boolean or string column of an "
            f"annotate step (available: {', '.join(c for c, t in sorted(columns.items()) if kind_of(t) != 'other') or 'none'})"
        )
    return Recipe(name=name, steps=tuple(steps), modalities=modalities, output=output, source=source)


def _did_you_mean(names: Iterable[str], allowed: Iterable[str]) -> str:
    """``; did you mean 'filter'?`` for names that look like an allowed one (misspelt), else ""."""
    allowed = list(allowed)
    guesses = [g for n in names for g in difflib.get_close_matches(str(n), allowed, n=1, cutoff=0.6) if n not in allowed]
    return f"; did you mean {' or '.join(repr(g) for g in dict.fromkeys(guesses))}?" if guesses else ""


def _unknown_fields(unknown: Iterable[str], allowed: Iterable[str], what: str = "field(s)") -> str:
    """``unknown field(s) idd (allowed: filter, id); did you mean 'id'?``"""
    unknown, allowed = sorted(unknown), sorted(allowed)
    return f"unknown {what} {', '.join(unknown)} (allowed: {', '.join(allowed) or 'none'}){_did_you_mean(unknown, allowed)}"


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_file_name(value: str, where: str, name: str) -> None:
    """Step ids and the output prefix name files in --out: a plain name, never a path."""
    if not _FILE_NAME.fullmatch(value) or ".." in value:
        raise RecipeError(
            f"{where}: field {name!r}: {value!r} names files in --out, so it must be a plain name: "
            f"letters, digits, '.', '_' and '-', starting with a letter or digit, no '/' or '..'"
        )


def _validate_modalities(raw: Any, source: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return dict(DEFAULT_MODALITIES)
    if not isinstance(raw, dict) or not all(isinstance(v, list) and v for v in raw.values()):
        raise RecipeError(f"{source}: field 'modalities' maps a modality to a list of extensions, e.g. image: [jpg, png]")
    modalities = {str(k): tuple(str(e).lower() for e in v) for k, v in raw.items()}
    unknown = [e for e in modalities.get("image", ()) if not image_formats([e])]
    if unknown:  # images open only as the formats their extensions name
        raise RecipeError(f"{source}: field 'modalities': image extension(s) {', '.join(unknown)} name no image format Pillow reads (e.g. jpg, png, webp, tif)")
    return modalities


def _validate_step(raw: dict[str, Any], step_id: str, where: str, columns: Mapping[str, pa.DataType]) -> Step:
    params = {k: v for k, v in raw.items() if k != "id"}
    if "annotate" in raw:
        name = params.pop("annotate")
        try:
            cls = annotators.get(str(name))
        except KeyError as exc:
            raise RecipeError(f"{where}: field 'annotate': {exc.args[0]}") from None
        return AnnotateStep(id=step_id, annotator=cls.name, config=_build_config(cls.Config, params, where, ("annotate", "id")))
    if "filter" in raw:
        if set(params) != {"filter"}:
            raise RecipeError(f"{where}: {_unknown_fields(set(params) - {'filter'}, ['filter', 'id'])}")
        try:
            expr = Expr.parse(str(raw["filter"]))
        except ExprError as exc:
            raise RecipeError(f"{where}: field 'filter': {exc}") from None
        kinds = {c: kind_of(t) for c, t in columns.items()}
        missing = sorted(expr.columns - set(columns))
        if missing:
            hint = expr.quote_hint(kinds)
            raise RecipeError(
                f"{where}: field 'filter': column(s) {', '.join(missing)} not produced by an earlier "
                f"annotate step (available: {', '.join(sorted(columns)) or 'none'})" + (f"; {hint}" if hint else _did_you_mean(missing, columns))
            )
        try:
            expr.check_kinds(kinds)
        except ExprError as exc:
            raise RecipeError(f"{where}: field 'filter': {exc}") from None
        return FilterStep(id=step_id, expr=expr)
    if "keep_top" in raw:
        return _validate_keep_top(params, step_id, where, columns)
    if "blocklist" in raw:
        return _validate_blocklist(params, step_id, where, columns)
    if "balance" in raw:
        column = _global_column(params, "balance", where, columns, _is_string_list, "a list of strings such as concepts (`- annotate: concepts`)")
        return BalanceStep(id=step_id, column=column, config=_build_config(BalanceConfig, params, where, ("balance", "id")))
    if "prune" in raw:
        method = str(params.pop("prune"))
        if method not in PRUNE_METHODS:
            raise RecipeError(f"{where}: field 'prune': unknown method {method!r}; known: {', '.join(PRUNE_METHODS)}")
        config = _build_config(PRUNE_METHODS[method], params, where, ("prune", "id"))
        _global_column({"column": config.column}, "column", where, columns, _is_vector, _VECTOR)
        return PruneStep(id=step_id, method=method, config=config)
    if "target" in raw:
        column = _global_column(params, "target", where, columns, _is_vector, _VECTOR)
        reference = _references(params.pop("reference", []), where, "reference")
        config = dataclasses.replace(_build_config(TargetConfig, params, where, ("target", "id")), reference=reference)
        if not reference:
            raise RecipeError(f"{where}: field 'reference': expected an earlier run directory that stored {column!r} or shards to embed (path, glob, URL), or a list of them")
        return TargetStep(id=step_id, column=column, config=config)
    method = str(params.pop("dedup"))
    against = _references(params.pop("against", []), where, "against")
    if method not in DEDUP_METHODS:
        raise RecipeError(f"{where}: field 'dedup': unknown method {method!r}; known: {', '.join(DEDUP_METHODS)}")
    config = _build_config(DEDUP_METHODS[method], params, where, ("dedup", "id", "against"))
    try:
        keep = KeepPolicy.parse(config.keep)
    except ValueError as exc:
        raise RecipeError(f"{where}: field 'keep': {exc}") from None
    needed = {"column": [config.column], "keep": list(keep.columns)}
    for extra in getattr(config, "extra_columns", []):
        needed[extra.rsplit("_", 1)[1]] = [extra]
    for name, cols in needed.items():
        for col in cols:
            if col not in columns:
                option = {"mirror": "mirror: true", "variants": "rotate: [ANGLES]", "regions": "regions: true", "turns": "turns: true"}.get(name)
                hint = f"; set {option} on the step that computes {config.column}" if option else ""
                raise RecipeError(f"{where}: field {name!r}: column {col!r} is not produced by an earlier annotate step{hint}")
    return DedupStep(id=step_id, method=method, config=config, against=against)


def _references(raw: Any, where: str, field_name: str) -> tuple[str, ...]:
    """``against:`` or ``reference:``: a path, glob or URL, or a list of them; local paths made absolute."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise RecipeError(f"{where}: field {field_name!r}: expected a run directory or shards (path, glob, URL), or a list of them, got {raw!r}")
    return tuple(i if "://" in i else os.path.abspath(os.path.expanduser(i)) for i in items)


_VECTOR = "a fixed-size vector such as image_embedding (`- annotate: clip_score` with `embeddings: true`)"


def _is_string_list(dtype: pa.DataType) -> bool:
    return (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)) and kind_of(dtype.value_type) == "string"


def _is_vector(dtype: pa.DataType) -> bool:
    listed = pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)
    return listed and (pa.types.is_floating(dtype.value_type) or pa.types.is_integer(dtype.value_type))


def _global_column(params: dict[str, Any], field_name: str, where: str, columns: Mapping[str, pa.DataType],
                   fits: Callable[[pa.DataType], bool], wanted: str) -> str:
    """Pop the column a global step names in ``field_name``: produced earlier and of the kind it reads."""
    column = str(params.pop(field_name))
    if column not in columns:
        raise RecipeError(f"{where}: field {field_name!r}: column {column!r} is not produced by an earlier annotate step{_did_you_mean([column], columns)}")
    if not fits(columns[column]):
        raise RecipeError(f"{where}: field {field_name!r}: column {column!r} ({columns[column]}) is not {wanted}")
    return column


def _validate_keep_top(params: dict[str, Any], step_id: str, where: str, columns: Mapping[str, pa.DataType]) -> KeepTopStep:
    unknown = sorted(set(params) - {"keep_top", "fraction"})
    if unknown:
        raise RecipeError(f"{where}: {_unknown_fields(unknown, ['keep_top', 'fraction', 'id'])}")
    column = str(params["keep_top"])
    if column not in columns:
        raise RecipeError(f"{where}: field 'keep_top': column {column!r} is not produced by an earlier annotate step")
    fraction = params.get("fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise RecipeError(f"{where}: field 'fraction': expected a number in (0, 1], e.g. 0.3 for the top 30%, got {fraction!r}")
    return KeepTopStep(id=step_id, column=column, fraction=float(fraction))


def _validate_blocklist(params: dict[str, Any], step_id: str, where: str, columns: Mapping[str, pa.DataType]) -> BlocklistStep:
    """A blocklist step: a known method, a readable list of well-formed digests, its hash column
    computed earlier. ``list_sha256`` (written into run.json by mmcurate) is read again from the file."""
    allowed = {"blocklist", "list", "max_distance", "list_sha256"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: blocklist, list, max_distance)")
    method = str(params["blocklist"])
    if method not in BLOCKLIST_METHODS:
        raise RecipeError(f"{where}: field 'blocklist': unknown hash {method!r}; known: {', '.join(BLOCKLIST_METHODS)}")
    spec = BLOCKLIST_METHODS[method]
    path = params.get("list")
    if not isinstance(path, str) or not path:
        raise RecipeError(f"{where}: field 'list': expected the path of a file of {method} digests, one per line")
    path = str(Path(path).expanduser().resolve())
    try:
        _, sha256 = read_list(path, method)
    except OSError as exc:
        raise RecipeError(f"{where}: field 'list': cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise RecipeError(f"{where}: field 'list': {exc}") from None
    distance = params.get("max_distance", spec.default_distance)
    if "max_distance" in params and not spec.near:
        raise RecipeError(f"{where}: field 'max_distance': {method} digests match exactly; max_distance is for pdq and phash")
    bits = spec.hex_digits * 4
    if isinstance(distance, bool) or not isinstance(distance, int) or not 0 <= distance < bits:
        raise RecipeError(f"{where}: field 'max_distance': expected a whole number of bits from 0 to {bits - 1}, got {distance!r}")
    if spec.column not in columns:
        raise RecipeError(f"{where}: field 'blocklist': column {spec.column!r} is not produced by an earlier step; add `- annotate: {spec.annotator}` before it")
    return BlocklistStep(id=step_id, method=method, list=path, max_distance=distance, list_sha256=sha256)


def _build_config(cls: type, params: Mapping[str, Any], where: str, step_fields: Iterable[str] = ()) -> Any:
    """Instantiate a frozen config dataclass, checking names and types of every field
    (``step_fields``: the step's own, listed beside the config's when a name is unknown)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise RecipeError(f"{where}: {_unknown_fields(unknown, known | set(step_fields))}")
    values = {}
    for name, value in params.items():
        try:
            values[name] = _coerce(value, hints[name])
        except (TypeError, ValueError):
            raise RecipeError(
                f"{where}: field {name!r}: expected {getattr(hints[name], '__name__', hints[name])}, got {value!r}"
            ) from None
    try:
        return cls(**values)
    except ValueError as exc:  # a config's own range checks (__post_init__)
        raise RecipeError(f"{where}: {exc}") from None


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Union:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(value, arg)
                except (TypeError, ValueError):
                    continue
        raise TypeError(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(hint)
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(v, item) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(hint)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise TypeError(hint)
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(hint)
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError(hint)
        return str(value)
    return value
