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
from ..io.inputs import ShardRef, shard_identity
from ..recipe import Recipe
from ..store.runview import Run, ShardChanged, UnknownSample
from ..steps.sampleview import SampleView
from ..engine.shard_task import AnnotatePlan, compute_rows, decide_steps
from ..store.runstore import RunStore
from ..io.location import read_table
from ..io.tarread import Member, Sample

__all__ = ["RecipeSelect", "RunSelect", "ShardChanged", "UnknownSample", "select"]

WdsSample = Mapping[str, Any]
Unknown = Literal["error", "drop", "keep"]
Match = Literal["identity", "name"]


def select(
    run: str | os.PathLike[str] | Run | None = None,
    *,
    recipe: str | os.PathLike[str] | Recipe | None = None,
    overrides: Iterable[str] = (),
    unknown: Unknown = "error",
    match: Match = "identity",
    batch_size: int = 32,
) -> "RunSelect | RecipeSelect":
    """A pipeline stage keeping the samples a run kept (``run=``), or those a recipe's
    per-sample steps keep (``recipe=``, with optional ``overrides`` like ``--set``).

    ``run``: a streamed shard (``__url__``) is matched to one of the run's input shards by its
    identity, the size and stamps (mtime, ETag, version) the run recorded, looked up with one
    ``fs.info`` when the stream reaches it: the input shard at the same URL (or, failing that,
    the only one with its file name) when the identities agree, else the input shard with that
    identity under any name (a copy that keeps them: ``cp -p``, ``rsync -t``, ``mv``, an object
    copy). A shard at an input's URL or file name whose identity differs has changed since the
    run: :class:`ShardChanged` (naming the file, recorded and found identity) under the default
    ``unknown="error"``. ``match="name"`` trusts URLs and file names instead (as does a URL that
    cannot be looked up, such as ``pipe:``; a filesystem without stamps is compared by size).
    Within a shard, samples are matched by key (a key the shard repeats, by occurrence in tar
    order). ``unknown`` says what to do with a sample the run never saw: raise
    :class:`UnknownSample` (default), ``"drop"`` or ``"keep"`` it.

    ``recipe``: annotators run on the stream in batches of ``batch_size`` and filters decide,
    exactly as in a run; global steps (dedup) need the whole dataset and are skipped, with a
    warning naming them (``.skipped`` lists them). Put it before ``.decode()``: it reads raw bytes.
    """
    if (run is None) == (recipe is None):
        raise TypeError("select() takes exactly one of run= (keep what a run kept) or recipe= (decide on the fly)")
    if run is not None:
        if tuple(overrides):
            raise TypeError("select(run=...): overrides apply to recipe=; re-run the recipe with --set to change a run")
        return RunSelect(run, unknown, match)
    return RecipeSelect(Recipe.resolve(recipe, overrides), batch_size)


def _normal_url(url: str) -> str:
    if "://" in url and not url.startswith("file://"):
        return url
    return os.path.abspath(url.removeprefix("file://"))


def _same(recorded: str, found: str) -> bool:
    """Whether two identities (:attr:`ShardRef.content`) agree; one without stamps, by size."""
    return recorded == found or (found.endswith("|") and recorded.split("|", 1)[0] == found.split("|", 1)[0])


class RunSelect:
    """Keeps the samples a finished run kept; see :func:`select`.

    It holds the run's list of input shards; the decisions of a streamed shard are read when
    the stream reaches it (its own file of the decisions dataset), so a DataLoader worker's
    memory does not grow with the run."""

    CACHED = 4
    """Shards whose decisions are held at once (a stream that interleaves a few shards)."""

    def __init__(self, run: str | os.PathLike[str] | Run, unknown: Unknown = "error", match: Match = "identity"):
        if unknown not in ("error", "drop", "keep"):
            raise ValueError(f"unknown={unknown!r}: expected 'error', 'drop' or 'keep'")
        if match not in ("identity", "name"):
            raise ValueError(f"match={match!r}: expected 'identity' or 'name'")
        # decisions.parquet alone: a training machine needs no annotator (plugin) the run used
        self.store = run.store if isinstance(run, Run) else RunStore(run)
        if not self.store.decisions_path.exists():
            raise FileNotFoundError(f"{self.store.root}: no decisions.parquet; not a finished mmcurate run")
        if self.store.decisions_path.is_dir():
            index = read_table(self.store.decisions_index, columns=["url", "identity", "file"]).to_pydict()
            self.shards = [ShardRef(url, identity) for url, identity in zip(index["url"], index["identity"])]
            self.files: list[str | None] = index["file"]
        else:  # a run of mmcurate before decisions became a dataset: one file, no identities
            urls = pc.unique(read_table(self.store.decisions_path, columns=["shard"])["shard"]).to_pylist()
            self.shards, self.files, match = [ShardRef(url, "") for url in urls], [None] * len(urls), "name"
        self.by_url = {_normal_url(ref.url): i for i, ref in enumerate(self.shards)}
        self.by_name: dict[str, list[int]] = {}
        self.by_content: dict[str, list[int]] = {}
        for i, ref in enumerate(self.shards):
            self.by_name.setdefault(Path(ref.url).name, []).append(i)
            self.by_content.setdefault(ref.content, []).append(i)
        self.source = str(self.store.root)
        self.unknown = unknown
        self.match = match
        self._matched: dict[str, int | None] = {}
        self._cache: OrderedDict[int, tuple[dict[str, bool], dict[str, list[bool]], Counter[str]]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}

    def _shard(self, url: str) -> int | None:
        """The run's input shard (its number) that the streamed shard ``url`` is; see :func:`select`."""
        if url not in self._matched:
            self._matched[url] = self._find(url)
        return self._matched[url]

    def _find(self, url: str) -> int | None:
        named = self.by_url.get(_normal_url(url))
        if named is None and len(self.by_name.get(Path(url).name, [])) == 1:
            named = self.by_name[Path(url).name][0]
        if self.match == "name":
            return named
        try:
            found = shard_identity(url).content
        except Exception:  # a pipe: URL, or one that cannot be looked up: its name must do
            return named
        if named is not None and _same(self.shards[named].content, found):
            return named
        same = self.by_content.get(found, [])
        if same:
            return next((i for i in same if Path(self.shards[i].url).name == Path(url).name), same[0])
        if named is not None and self.unknown == "error":
            expected = self.shards[named]
            raise ShardChanged(
                f"{url}: not the shard run {self.source} decided as {expected.url}: its identity (size|stamps) was "
                f"{expected.content!r}, now {found!r}; re-run mmcurate on the changed shard(s), copy shards keeping their "
                f"times (cp -p, rsync -t), or pass match='name' to trust file names"
            )
        return None

    def _verdicts(self, shard: int) -> tuple[dict[str, bool], dict[str, list[bool]], Counter[str]]:
        """key -> kept for the run's input shard number ``shard``; keys the shard holds more than
        once: their verdicts in tar order, and how many were streamed so far."""
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        file = self.files[shard]
        columns = ["key", "kept"]
        if file is None:
            table = read_table(self.store.decisions_path, columns=columns, filters=[("shard", "=", self.shards[shard].url)])
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
            shard = self._shard(url)
            verdict = None
            if shard is not None:
                kept, repeated, occurrences = self._verdicts(shard)
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
