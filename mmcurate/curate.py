"""``curate()``: run a recipe over input shards into a run directory (the Python entry point)."""

from __future__ import annotations

import functools
import itertools
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
from dask.distributed import Client

from .engine import cluster
from .engine.global_steps import GLOBAL_RUNNERS
from .engine.keys import drop_repeated_keys
from .engine.plan import GlobalPlan, Group, Plan, build_plan, digest, funnel_steps
from .engine.reference import ReferenceRows, resolve_references
from .engine.shard_task import GroupTask, looks_stored, run_group
from .engine.state import RunState, ShardSummary, finish
from .io.inputs import ShardRef, resolve_inputs
from .io.location import Location, ObjectPath
from .io.output import assemble, index_json, plan_layout, remove_order_files, shard_outputs, unchanged, write_piece, write_tasks, written_record
from .recipe import AnnotateStep, DedupStep, Recipe, TargetStep
from .steps import annotators
from .steps.dedup import DedupReport
from .steps.keep_top import KeepTopReport, format_keep_top
from .store.cache import resolve_cache
from .store.runstore import INDEX, RunStore, atomic_write_bytes
from .views.funnel import StepCount, format_dedup, format_failed, format_funnel, format_global, funnel_from_groups
from .views.report import write_report

__all__ = ["CurateResult", "curate"]



@dataclass
class CurateResult:
    """What a run did: counts, the funnel, and where its files are."""

    out: Location
    """The run directory: a local ``Path``, or an :class:`~mmcurate.io.location.ObjectPath` (``s3://...``)."""
    samples_in: int
    kept: int
    dropped: int
    funnel: list[StepCount]
    shards: list[Location]
    computed: dict[str, int] = field(default_factory=dict)
    """Rows each annotate step computed in this call (0 where stored rows were reused)."""
    reference_computed: dict[str, int] = field(default_factory=dict)
    """Rows each annotate step computed over reference shards (``against``) in this call."""
    dedup: list[DedupReport] = field(default_factory=list)
    """Per dedup step: how many removed, how many clusters, the largest ones."""
    report: Location | None = None
    """``OUT/report.html`` (None if writing it failed; ``mmcurate report OUT`` retries)."""
    top: list[KeepTopReport] = field(default_factory=list)
    """Per keep_top step: how many kept and the threshold that resulted."""
    failed: dict[str, str] = field(default_factory=dict)
    """Input shard URL -> error, for shards that still failed after their retries. Their
    samples are in no count; the run is incomplete and re-running it retries only them."""
    shards_in: int = 0
    """Input shards given (read or failed)."""
    reports: list[Any] = field(default_factory=list)
    """Per balance, prune and target step its report (prune: cluster sizes before and after)."""
    reused: dict[str, int] = field(default_factory=dict)
    """Rows each annotate step took from the store (or the cache) instead of computing them."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage, in order: each group of per-sample steps (named by its steps),
    each global step, ``write`` (output shards) and ``decisions``."""
    dry_run: bool = False
    """Decided without writing output shards (``curate(write=False)``)."""

    @property
    def complete(self) -> bool:
        return not self.failed

    @property
    def decisions_path(self) -> Location:
        """``OUT/decisions.parquet``: a folder of Parquet files, one per input shard, read as one
        table by ``pyarrow.parquet.read_table`` (see :meth:`mmcurate.store.runview.Run.decisions_dataset`)."""
        return self.out / "decisions.parquet"

    def summary(self) -> str:
        written = "dry run: no output shards written" if self.dry_run else f"{len(self.shards)} output shard(s) in {_shown(self.out / 'shards')}"
        return (
            f"{self.samples_in} samples in, {self.kept} kept, {self.dropped} dropped; {written}\n"
            + format_funnel(self.funnel)
            + "".join("\n" + format_dedup(asdict(r)) for r in self.dedup)
            + "".join("\n" + format_keep_top(asdict(r)) for r in self.top)
            + "".join("\n" + format_global(asdict(r)) for r in self.reports)
            + (f"\nreport: {self.report}" if self.report else "")
            + ("\n" + format_failed(self.failed, self.shards_in) if self.failed else "")
            + "\n" + format_work(self.computed, self.reused, self.seconds)
        )


def format_work(computed: dict[str, int], reused: dict[str, int], seconds: dict[str, float]) -> str:
    """Rows each annotate step computed and reused, and the time each stage took."""
    rows = "; ".join(f"{step} {n} computed, {reused.get(step, 0)} reused" for step, n in computed.items())
    times = "; ".join(f"{stage} {s:.1f} s" for stage, s in seconds.items())
    return f"annotation rows: {rows or 'none'}\ntime: {times} (total {sum(seconds.values()):.1f} s)"


def _shown(path: Location) -> str:
    """``path`` relative to the working directory when it lies inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for pkg in ("mmcurate", "pillow", "pyarrow", "dask", "distributed", "webdataset"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return found


def curate(
    inputs: str | Sequence[str],
    recipe: str | os.PathLike[str] | Recipe,
    out: str | os.PathLike[str],
    *,
    overrides: Iterable[str] = (),
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    client: Client | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    batch_size: int = 64,
    against: Sequence[str | os.PathLike[str]] = (),
    gpus: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    write: bool = True,
) -> CurateResult:
    """Curate ``inputs`` (paths, globs, ``{000..009}`` ranges, fsspec URLs) with ``recipe`` into ``out``.

    Uses ``client`` if given, else joins ``scheduler``, else starts a LocalCluster of
    ``workers`` processes. Re-running the same call resumes and reuses stored annotations.
    ``against`` names reference sets for every dedup step (a step's own go in its ``against:``):
    earlier run directories (their kept samples' stored columns are read, nothing is re-hashed)
    or shards (paths, globs, URLs; the step's annotators run over them once, stored in
    ``OUT/reference/``). A sample matching a reference item is dropped as ``matches_reference:KEY``.

    ``out`` is locked while the run writes (a second run raises :class:`~mmcurate.store.lock.RunLocked`);
    an ``out`` that contains an input or holds files but no run raises
    :class:`~mmcurate.store.runstore.RunConflict`, as does a different run there without ``overwrite``.

    Before any work, every annotator checks (or fetches) what it needs, e.g. model weights,
    and raises :class:`~mmcurate.steps.annotators.AnnotatorUnavailable` when it cannot. A local
    cluster gets ``gpus`` extra GPU workers (default: one per CUDA device when the recipe has
    a GPU step); steps that ask for a GPU run on them.

    A shard that still fails after its retries (an I/O error, a dead worker) does not stop the
    others: it is listed in ``result.failed``, its samples are in no count, the run's status is
    ``incomplete`` and its output holds what was decided; re-running retries only those shards.

    ``cache`` names a folder of annotation parts shared by many runs (default:
    ``$MMCURATE_CACHE``, else none: parts live only in ``out``): parts found there are reused
    whatever ``out`` is, parts computed are published there (see :mod:`mmcurate.store.cache`).
    With ``write=False`` (a dry run) the run decides and writes its decisions, run.json and
    report but no output shards (status ``dry-run``); the same call with ``write=True`` then
    writes them without computing any annotation.
    """
    recipe = Recipe.resolve(recipe, overrides)
    shards = resolve_inputs([inputs] if isinstance(inputs, str) else list(inputs))
    own = {s.id: resolve_references(s.against) for s in recipe.steps if isinstance(s, DedupStep) and s.against}
    own.update((s.id, resolve_references(s.config.reference)) for s in recipe.steps if isinstance(s, TargetStep))
    references = ReferenceRows(out, resolve_references(against), own, recipe.modalities, batch_size, quiet)
    resolved = _prepare_annotators(recipe)
    plan = build_plan(recipe, resolved)
    store = RunStore(out)
    store.refuse_inputs_inside(s.url for s in shards)
    identity = digest({"inputs": [s.url for s in shards], "recipe": recipe.to_dict(), "against": references.sources}, 32)
    describe = f"recipe {recipe.name!r} on {len(shards)} shard(s)"
    with store.lock():
        outputs = store.prepare(identity, describe, overwrite, keep_outputs=write)
        info = {
            "identity": identity,
            "describe": describe,
            "status": "running",
            "inputs": [s.url for s in shards],
            "shard_identities": {s.url: s.identity for s in shards},
            "recipe": recipe.to_dict(),
            "recipe_source": recipe.source,
            "steps": {p.id: p.fingerprint for p in plan.annotate_plans()},
            "resolved": resolved,
            "versions": _versions(),
            "outputs": outputs,
            "written": store.written(outputs),
            "cache": resolve_cache(cache),
        }
        store.save_run_info(info)

        return _run(
            store, info, plan, shards, references, batch_size, quiet, gpus,
            dict(scheduler=scheduler, workers=workers, threads_per_worker=threads_per_worker, client=client), write,
        )


def _run(
    store: RunStore,
    info: dict[str, Any],
    plan: Plan,
    shards: list[ShardRef],
    references: ReferenceRows,
    batch_size: int,
    quiet: bool,
    gpus: int | None,
    connection: dict[str, Any],
    write: bool,
) -> CurateResult:
    """The run proper, under the run directory's lock: decide, write, record, report."""
    recipe = plan.recipe
    wants_gpu = any("GPU" in s.resources for s in plan.stages if isinstance(s, Group))
    gpu_workers = (cluster.cuda_device_count() if gpus is None else gpus) if wants_gpu else 0
    with cluster.connect(**connection, quiet=quiet, gpus=gpu_workers) as dask_client:
        shards, failed = _hash_unstamped(dask_client, shards, quiet)
        info["shard_identities"] = {s.url: s.identity for s in shards}
        work = _Work()
        summaries, reports = _decide(dask_client, plan, shards, store, batch_size, quiet, references, failed, work, info["cache"])
        written = _write(dask_client, plan, shards, summaries, failed, store, quiet, info, work, write)

    counts = [summaries[s.url] for s in shards]
    offsets = itertools.accumulate((c.samples for c in counts), initial=0)
    groups = pa.concat_tables([c.offset(start) for c, start in zip(counts, offsets)]) if counts else ShardSummary.empty().groups
    samples_in, kept = sum(c.samples for c in counts), sum(c.kept for c in counts)
    result = CurateResult(
        out=store.root,
        samples_in=samples_in,
        kept=kept,
        dropped=samples_in - kept,
        funnel=funnel_from_groups(groups, samples_in, funnel_steps(recipe)),
        shards=[store.shards_dir / w["url"] for w in written],
        computed=work.computed,
        reused=work.reused,
        seconds=work.seconds,
        dry_run=not write,
        reference_computed=references.computed,
        dedup=[r for r in reports if isinstance(r, DedupReport)],
        top=[r for r in reports if isinstance(r, KeepTopReport)],
        failed=failed,
        shards_in=len(shards),
        reports=[r for r in reports if not isinstance(r, (DedupReport, KeepTopReport))],
    )
    info.update(
        status=("complete" if write else "dry-run") if result.complete else "incomplete",
        failed=failed,
        counts={"samples_in": samples_in, "kept": kept, "dropped": result.dropped},
        dedup=[asdict(r) for r in result.dedup],
        keep_top=[asdict(r) for r in result.top],
        global_steps=[asdict(r) for r in result.reports],
        against=references.sources,
        annotate={step: {"computed": n, "reused": work.reused.get(step, 0)} for step, n in work.computed.items()},
        seconds=work.seconds,
    )
    store.save_run_info(info)
    result.report = _write_report(store.root)
    return result


def _write_report(root: Location) -> Location | None:
    """The run's report.html; a failure here is reported but never loses the finished run."""
    try:
        path = write_report(root)
    except Exception as exc:  # the run itself is complete and saved
        print(f"mmcurate: warning: report.html not written ({type(exc).__name__}: {exc}); retry with `mmcurate report {root}`", file=sys.stderr)
        return None
    return path


def _prepare_annotators(recipe: Recipe) -> dict[str, Any]:
    """Each annotate step's ``prepare()``: fail now, before any work, if a resource is missing."""
    resolved = {}
    for step in recipe.steps:
        if isinstance(step, AnnotateStep):
            try:
                resolved[step.id] = annotators.get(step.annotator).prepare(step.config)
            except annotators.AnnotatorUnavailable as exc:
                message = str(exc).replace("STEP.", f"{step.id}.")
                raise annotators.AnnotatorUnavailable(f"{recipe.source}: step {step.id} ({step.annotator}): {message}") from None
    return resolved


def _hash_unstamped(client: Client, shards: list[ShardRef], quiet: bool) -> tuple[list[ShardRef], dict[str, str]]:
    """Shards whose filesystem reports no ETag/mtime/version get a content hash in their identity
    (said once), so a shard changed in place never reuses stored parts; ``(shards, failed)``."""
    unstamped = [s for s in shards if s.unstamped]
    if unstamped:
        print(
            f"mmcurate: warning: {len(unstamped)} input shard(s) (e.g. {unstamped[0].url}) have no ETag, Last-Modified, "
            "version or mtime; their content is hashed on every run to tell whether they changed",
            file=sys.stderr,
        )
    return cluster.hash_unstamped(client, shards, "hash unstamped shards", quiet, keep_going=True)


@dataclass
class _Work:
    """What the run did, for its summary and run.json: rows per annotate step, seconds per stage."""

    computed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, started: float) -> None:
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - started, 3)


def _decide(
    client: Client,
    plan: Plan,
    shards: list[ShardRef],
    store: RunStore,
    batch_size: int,
    quiet: bool,
    references: ReferenceRows,
    failed: dict[str, str],
    work: _Work,
    cache: str | None,
) -> tuple[dict[str, ShardSummary], list[Any]]:
    """Run the plan's stages; a shard whose task still fails after its retries is added to
    ``failed`` and leaves the run (its samples are in no count), every other shard goes on.

    Workers keep each shard's decisions in its state (:mod:`.engine.state`); the driver gets a
    summary per shard."""
    summaries = {url: ShardSummary.empty() for url in failed}
    reports: list[Any] = []
    first = True
    for number, stage in enumerate(plan.stages, start=1):
        started = time.perf_counter()
        todo = [ref for ref in shards if ref.url not in failed]
        if isinstance(stage, GlobalPlan):
            state = RunState(store, todo, {url: summary.kept for url, summary in summaries.items()})
            recorded, report = GLOBAL_RUNNERS[type(stage.step)](client, store, stage, state, todo, references.priors(client, stage))
            summaries.update(recorded)  # drops were recorded on the workers
            reports.append(report)
            work.timed(stage.id, started)
            continue
        tasks = [
            GroupTask(
                shard=ref,
                root=str(store.root),
                modalities=dict(plan.recipe.modalities),
                steps=stage.steps,
                first=first,
                batch_size=stage.batch_size(batch_size),
                cache=cache,
            )
            for ref in todo
        ]
        label = f"stage {number}/{len(plan.stages)}: " + ", ".join(s.id for s in stage.steps)
        resources = stage.resources if cluster.offers(client, stage.resources) else None
        quick = not isinstance(store.root, ObjectPath) and all(map(looks_stored, tasks))  # then several shards per task
        chunk = cluster.per_task(client, len(tasks)) if quick else 1
        results = cluster.map_tasks(client, run_group, tasks, label, lambda t: t.shard.url, quiet, resources, keep_going=True, per_task=chunk)
        for ref, result in zip(todo, results):
            if isinstance(result, cluster.Failed):
                failed[ref.url] = result.error
                summaries[ref.url] = ShardSummary.empty()
                continue
            summaries[ref.url] = result.summary
            for step_id, n in result.computed.items():
                work.computed[step_id] = work.computed.get(step_id, 0) + n
                work.reused[step_id] = work.reused.get(step_id, 0) + result.reused.get(step_id, 0)
        first = False
        work.timed(", ".join(s.id for s in stage.steps), started)
    return summaries, reports


def _write(
    client: Client,
    plan: Plan,
    shards: list[ShardRef],
    summaries: dict[str, ShardSummary],
    failed: dict[str, str],
    store: RunStore,
    quiet: bool,
    info: dict[str, Any],
    work: _Work,
    write: bool = True,
) -> list[dict]:
    """Write the output shards, recording their names in run.json (``info``) first, so that
    only files mmcurate wrote are ever replaced or removed; then the decisions dataset. A kept
    sample whose output key an earlier shard already gave is dropped here (output keys are unique).
    Without ``write`` (a dry run) only the decisions are written (their ``output_shard`` empty)."""
    started = time.perf_counter()
    config = plan.recipe.output
    root = str(store.root)
    todo = [ref for ref in shards if ref.url not in failed]
    summaries.update(drop_repeated_keys(client, root, todo, summaries, config.keys))
    layout, written = [], []
    if write:
        total_kept = sum(summaries[ref.url].kept for ref in todo)
        plans = tuple(plan.annotate_plans())
        layout = client.submit(plan_layout, root, todo, config, total_kept, plans, pure=False).result()
        names = [s.name for s in layout]
        kept = unchanged(store, layout, info["written"])  # already in place, byte for byte: not rewritten
        info["written"] = {name: info["written"][name] for name in kept}
        store.begin_outputs(info, names)
        changed = [s for s in layout if s.name not in kept]
        tasks = write_tasks(changed, root, plans, config)
        if tasks:
            cluster.map_tasks(client, write_piece, tasks, "write", lambda t: t.label, quiet)
        join = functools.partial(assemble, root)
        if isinstance(store.root, ObjectPath):  # workers join, in parallel: the driver would relay every byte
            joined = iter(cluster.map_tasks(client, join, changed, "join", lambda s: s.name, quiet) if changed else [])
        else:
            joined = (join(s) for s in changed)
        written = [kept[s.name] if s.name in kept else next(joined) for s in layout]
        atomic_write_bytes(store.shards_dir / INDEX, index_json(plan.recipe.name, written))
        info["written"] = written_record(store, layout)
        store.finish_outputs(info, names)
        work.timed("write", started)
        started = time.perf_counter()
    outputs: dict[str, list[tuple[str, int, int]]] = {}
    for shard in layout:
        for seg in shard.segments:
            outputs.setdefault(seg.ref.url, []).append((shard.name, seg.start, seg.stop))
    ordered = write and config.order != "input"  # then each shard's outputs are read from the order files
    records = [(ref, i, None if ordered else outputs.get(ref.url, []), ref.url in failed) for i, ref in enumerate(shards)]
    store.begin_decisions()
    chunk = cluster.per_task(client, len(records))
    cluster.map_tasks(client, functools.partial(_finish, root), records, "decisions", lambda r: r[0].url, quiet, per_task=chunk)
    store.write_decisions_index([ref.url for ref in shards], [ref.identity for ref in shards])
    remove_order_files(store, config, layout, todo)
    work.timed("decisions", started)
    return written


def _finish(root: str, record: tuple[ShardRef, int, list[tuple[str, int, int]] | None, bool]) -> None:
    ref, index, outputs, failed = record
    if outputs is None:
        outputs = [] if failed else shard_outputs(root, ref)
    finish(RunStore(root), ref, index, outputs, failed)
