"""``select()``: a webdataset pipeline stage that curates a sample stream inside a training loop.

Two ways::

    import webdataset as wds, mmcurate
    # keep exactly what an earlier run kept (reads each shard's decisions when the stream reaches it)
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
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

import pyarrow.compute as pc

from ..engine.plan import build_plan, reads_pixels
from ..recipe import Recipe
from ..store.runview import Run
from ..steps.sampleview import SampleView
from ..engine.shard_task import AnnotatePlan, compute_rows, decide_steps
from ..store.runstore import RunStore
from ..io.location import read_table
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
    """Keeps the samples a finished run kept; see :func:`select`.

    It holds the run's list of input shards; the decisions of a streamed shard are read when
    the stream reaches it (its own file of the decisions dataset), so a DataLoader worker's
    memory does not grow with the run."""

    CACHED = 4
    """Shards whose decisions are held at once (a stream that interleaves a few shards)."""

    def __init__(self, run: str | os.PathLike[str] | Run, unknown: Unknown = "error"):
        if unknown not in ("error", "drop", "keep"):
            raise ValueError(f"unknown={unknown!r}: expected 'error', 'drop' or 'keep'")
        # decisions.parquet alone: a training machine needs no annotator (plugin) the run used
        self.store = run.store if isinstance(run, Run) else RunStore(run)
        if not self.store.decisions_path.exists():
            raise FileNotFoundError(f"{self.store.root}: no decisions.parquet; not a finished mmcurate run")
        if self.store.decisions_path.is_dir():
            index = read_table(self.store.decisions_index, columns=["url", "file"]).to_pydict()
            files: dict[str, str | None] = dict(zip(index["url"], index["file"]))
        else:  # a run of mmcurate before decisions became a dataset: one file
            files = dict.fromkeys(pc.unique(read_table(self.store.decisions_path, columns=["shard"])["shard"]).to_pylist())
        names = [Path(u).name for u in files]
        self.by_name = len(set(names)) == len(names)
        self.files = {self._shard_id(url): (url, file) for url, file in files.items()}
        self.source = str(self.store.root)
        self.unknown = unknown
        self._cache: OrderedDict[str, tuple[dict[str, bool], dict[str, list[bool]], Counter[str]]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}

    def _shard_id(self, url: str) -> str:
        return Path(url).name if self.by_name else _normal_url(url)

    def _verdicts(self, shard: str) -> tuple[dict[str, bool], dict[str, list[bool]], Counter[str]] | None:
        """key -> kept for the run's input shard ``shard`` (by :meth:`_shard_id`); keys the shard
        holds more than once: their verdicts in tar order, and how many were streamed so far."""
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        if shard not in self.files:
            return None
        url, file = self.files[shard]
        columns = ["key", "kept"]
        if file is None:
            table = read_table(self.store.decisions_path, columns=columns, filters=[("shard", "=", url)])
        else:
            table = read_table(self.store.decisions_path / file, columns=columns)
        kept: dict[str, bool] = {}
        repeated: dict[str, list[bool]] = {}
        for key, verdict in zip(table["key"].to_pylist(), table["kept"].to_pylist()):
            if key in kept:
                repeated.setdefault(key, [kept[key]]).append(verdict)
            kept[key] = verdict
        self._cache[shard] = (kept, repeated, Counter())
        if len(self._cache) > self.CACHED:
            self._cache.popitem(last=False)
        return self._cache[shard]

    def __call__(self, samples: Iterable[WdsSample]) -> Iterator[WdsSample]:
        for sample in samples:
            url = str(sample.get("__url__", ""))
            key = sample["__key__"]
            found = self._verdicts(self._shard_id(url))
            verdict = None
            if found is not None:
                kept, repeated, occurrences = found
                verdict = kept.get(key)
                if key in repeated:
                    verdict = repeated[key][min(occurrences[key], len(repeated[key]) - 1)]
                    occurrences[key] += 1
            if verdict is None:
                if self.unknown == "error":
                    raise UnknownSample(
                        f"sample {key!r} from {url or '<no __url__>'} is not in run {self.source} "
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
