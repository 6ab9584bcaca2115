"""``select()``: a webdataset pipeline stage that curates a sample stream inside a training loop.

Two ways::

    import webdataset as wds, mmcurate
    # keep exactly what an earlier run kept (reads its decisions.parquet once)
    ds = wds.WebDataset(urls, shardshuffle=False).compose(mmcurate.select(run="runs/demo"))
    # or decide on the fly with a recipe's per-sample annotators and filters
    ds = wds.WebDataset(urls).compose(mmcurate.select(recipe="default"))

The stage is a picklable callable from an iterator of samples (webdataset's dicts of raw
bytes: ``__key__``, ``__url__``, ``jpg``, ``txt`` ...) to the samples kept, so it works with
``DataPipeline.compose`` of webdataset 0.2.x and 1.x, inside ``DataLoader`` worker processes,
or called on any iterable: ``mmcurate.select(run=...)(samples)``.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

import pyarrow.parquet as pq

from ..engine.plan import build_plan, reads_pixels
from ..recipe import Recipe
from ..store.runview import Run
from ..steps.sampleview import SampleView
from ..engine.shard_task import AnnotatePlan, compute_rows, decide_steps
from ..store.runstore import RunStore
from ..io.tarread import Member, Sample

__all__ = ["RecipeSelect", "RunSelect", "UnknownSample", "select"]

WdsSample = Mapping[str, Any]
Unknown = Literal["error", "drop", "keep"]


class UnknownSample(KeyError):
    """A streamed sample that the run never saw (another dataset, or shards that changed)."""

    def __str__(self) -> str:
        return str(self.args[0])


def select(
    run: str | os.PathLike[str] | Run | None = None,
    *,
    recipe: str | os.PathLike[str] | Recipe | None = None,
    overrides: Iterable[str] = (),
    unknown: Unknown = "error",
    batch_size: int = 32,
) -> "RunSelect | RecipeSelect":
    """A pipeline stage keeping the samples a run kept (``run=``), or those a recipe's
    per-sample steps keep (``recipe=``, with optional ``overrides`` like ``--set``).

    ``run``: samples are matched by input shard file name and key (the full URL when two of
    the run's inputs share a file name; a key a shard repeats, by occurrence in tar order); ``unknown`` says what to do with a sample the run
    never saw: raise :class:`UnknownSample` (default), ``"drop"`` or ``"keep"`` it.

    ``recipe``: annotators run on the stream in batches of ``batch_size`` and filters decide,
    exactly as in a run; global steps (dedup) need the whole dataset and are skipped, with a
    warning naming them (``.skipped`` lists them). Put it before ``.decode()``: it reads raw bytes.
    """
    if (run is None) == (recipe is None):
        raise TypeError("select() takes exactly one of run= (keep what a run kept) or recipe= (decide on the fly)")
    if run is not None:
        if tuple(overrides):
            raise TypeError("select(run=...): overrides apply to recipe=; re-run the recipe with --set to change a run")
        return RunSelect(run, unknown)
    return RecipeSelect(Recipe.resolve(recipe, overrides), batch_size)


def _normal_url(url: str) -> str:
    if "://" in url and not url.startswith("file://"):
        return url
    return os.path.abspath(url.removeprefix("file://"))


class RunSelect:
    """Keeps the samples a finished run kept; see :func:`select`."""

    def __init__(self, run: str | os.PathLike[str] | Run, unknown: Unknown = "error"):
        if unknown not in ("error", "drop", "keep"):
            raise ValueError(f"unknown={unknown!r}: expected 'error', 'drop' or 'keep'")
        # decisions.parquet alone: a training machine needs no annotator (plugin) the run used
        store = run.store if isinstance(run, Run) else RunStore(run)
        if not store.decisions_path.exists():
            raise FileNotFoundError(f"{store.root}: no decisions.parquet; not a finished mmcurate run")
        decisions = pq.read_table(store.decisions_path, columns=["shard", "key", "kept"]).to_pydict()
        urls = sorted(set(decisions["shard"]))
        names = [Path(u).name for u in urls]
        self.by_name = len(set(names)) == len(names)
        self.source = str(store.root)
        self.unknown = unknown
        self.kept: dict[tuple[str, str], bool] = {}
        self.repeated: dict[tuple[str, str], list[bool]] = {}
        """Keys a shard holds more than once: their verdicts in tar order, matched by occurrence."""
        for url, key, kept in zip(decisions["shard"], decisions["key"], decisions["kept"]):
            name = (self._shard_id(url), key)
            if name in self.kept:
                self.repeated.setdefault(name, [self.kept[name]]).append(kept)
            self.kept[name] = kept

    def _shard_id(self, url: str) -> str:
        return Path(url).name if self.by_name else _normal_url(url)

    def __call__(self, samples: Iterable[WdsSample]) -> Iterator[WdsSample]:
        occurrences: Counter[tuple[str, str]] = Counter()
        for sample in samples:
            url = str(sample.get("__url__", ""))
            name = (self._shard_id(url), sample["__key__"])
            verdict = self.kept.get(name)
            if name in self.repeated:
                verdicts = self.repeated[name]
                verdict = verdicts[min(occurrences[name], len(verdicts) - 1)]
                occurrences[name] += 1
            if verdict is None:
                if self.unknown == "error":
                    raise UnknownSample(
                        f"sample {sample['__key__']!r} from {url or '<no __url__>'} is not in run {self.source} "
                        f"(stream that run's input shards, or pass unknown='drop' or 'keep')"
                    )
                verdict = self.unknown == "keep"
            if verdict:
                yield sample


class RecipeSelect:
    """Applies a recipe's per-sample annotators and filters to the stream; see :func:`select`."""

    def __init__(self, recipe: Recipe, batch_size: int = 32):
        self.recipe = recipe
        self.steps = build_plan(recipe).per_sample_steps()
        self.pixels = reads_pixels(self.steps)
        per_sample = {step.id for step in self.steps}
        self.skipped = [s.id for s in recipe.steps if s.id not in per_sample]
        self.batch_size = batch_size
        if self.skipped:
            warnings.warn(
                f"select(recipe={recipe.name!r}): global step(s) {', '.join(self.skipped)} skipped: they need the "
                f"whole dataset; run `mmcurate filter` and select(run=...) to apply them",
                stacklevel=3,
            )

    def _view(self, sample: WdsSample) -> SampleView:
        members = []
        for ext, value in sample.items():
            if ext.startswith("__"):
                continue
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError(
                    f"select(recipe=...): sample {sample.get('__key__')!r} member {ext!r} is {type(value).__name__}, "
                    f"not raw bytes; put the stage before .decode()"
                )
            members.append(Member(name=f"{sample['__key__']}.{ext}", ext=ext.lower(), data=bytes(value)))
        return SampleView(Sample(str(sample["__key__"]), members), self.recipe.modalities, self.pixels)

    def _kept(self, batch: list[WdsSample]) -> list[WdsSample]:
        views = [self._view(sample) for sample in batch]

        def rows_of(plan: AnnotatePlan, alive: list[int]) -> dict[int, Any]:
            return dict(zip(alive, compute_rows(plan, [views[i] for i in alive])))

        _, survivors = decide_steps(self.steps, list(range(len(batch))), rows_of)
        return [s for i, s in enumerate(batch) if i in survivors]

    def __call__(self, samples: Iterable[WdsSample]) -> Iterator[WdsSample]:
        batch: list[WdsSample] = []
        for sample in samples:
            if len(batch) >= self.batch_size:
                yield from self._kept(batch)
                batch = []
            batch.append(sample)
        if batch:
            yield from self._kept(batch)
