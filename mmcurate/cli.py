"""The ``mmcurate`` command line: ``filter`` runs a recipe, ``inspect`` reads a run back."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Sequence

from . import __version__
from .steps import annotators
from .curate import curate
from .steps.annotators import AnnotatorUnavailable
from .engine.cluster import ClusterError, TaskFailed
from .views.funnel import format_dedup, format_failed, format_funnel, format_global
from .io.inputs import InputError
from .steps.keep_top import format_keep_top
from .store.lock import RunLocked
from .recipe import STEP_KINDS, RecipeError, recipe_dirs
from .views.report import ReportOptions, write_report
from .store.runview import Run, open_run
from .store.runstore import RunConflict
from .store.cache import CACHE_ENV, CachedPart, NotACache, PartCache

EXAMPLES = """\
examples:
  mmcurate filter 'shards/demo-{000000..000003}.tar' --recipe default --out runs/demo
  mmcurate filter 'data/*.tar' --recipe datacomp-basic --out curated/ --workers 8
  mmcurate filter s3://bucket/laion/{000000..009999}.tar --recipe filters/laion.yaml \\
      --out curated/ --scheduler tcp://10.0.0.5:8786
  mmcurate filter data/*.tar --recipe default --out runs/demo --set image_size.expr='width >= 256' --overwrite
  mmcurate filter new/*.tar --recipe near-dup --out runs/new --against runs/demo
  mmcurate filter data/*.tar --recipe laion2b --out runs/laion --set clip_score.batch_size=512
  mmcurate filter data/*.tar --recipe laion2b --out runs/laion \\
      --set clip_score.checkpoint=/models/ViT-B-32-openai.pt
  mmcurate inspect runs/demo
  mmcurate inspect runs/demo --sample 000000017        # every annotation and the decision
  mmcurate inspect runs/demo --dropped-by image_size   # keys and reasons
  mmcurate report runs/demo                            # rewrite runs/demo/report.html
  mmcurate filter data/*.tar --recipe default --out runs/try2 --cache ~/.cache/mmcurate \
      --set image_size.expr='width >= 256' --dry-run     # decide only, annotations from the cache
  mmcurate cache du ~/.cache/mmcurate
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmcurate",
        description="Curate multimodal WebDataset shards: annotate, filter, dedup, re-shard.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mmcurate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    f = sub.add_parser(
        "filter",
        help="run a recipe over tar shards and write the curated set",
        description=(
            "Run RECIPE over the input shards and write OUT/: curated shards (OUT/shards, with a wids "
            "index.json), decisions.parquet (every input sample, kept or why dropped), and the "
            "annotation store. Re-running resumes; stored annotations are reused, so a new "
            "threshold (--set ... --overwrite) re-decides without recomputing them."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("inputs", nargs="+", metavar="INPUT", help="shard paths, globs, brace ranges {000..099}, or fsspec URLs (file://, s3://, gs://, https://)")
    f.add_argument("--recipe", required=True, help="a built-in recipe name (see 'mmcurate recipes') or a YAML file")
    f.add_argument("--out", required=True, help="run directory to write (created if missing), or an fsspec URL such as s3://bucket/run")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.PARAM=VALUE", help="override a recipe value, e.g. image_size.expr='width >= 256' or output.samples_per_shard=5000 (repeatable)")
    f.add_argument("--scheduler", metavar="ADDRESS", help="join this Dask scheduler (e.g. tcp://host:8786) instead of starting a local cluster")
    f.add_argument("--workers", type=int, metavar="N", help="local cluster worker processes (default: one per CPU core)")
    f.add_argument("--threads-per-worker", type=int, default=1, metavar="N", help="threads per local worker (default: 1)")
    f.add_argument("--gpus", type=int, metavar="N", help="local GPU workers for GPU steps such as clip_score, one per device (default: every CUDA device when the recipe has a GPU step; 0: none)")
    f.add_argument("--against", action="append", default=[], metavar="REFERENCE", help="decontaminate: drop samples that match (per dedup step) the kept samples of an earlier run directory (its stored hashes are reused) or the samples of reference shards (paths, globs, URLs; annotated once into OUT/reference/), as matches_reference:KEY; repeatable")
    f.add_argument("--overwrite", action="store_true", help="replace a different run already in --out: only the files it wrote are removed, its stored annotations are reused where they match")
    f.add_argument("--quiet", action="store_true", help="no progress bars, funnel or library warnings; failed and wholly unreadable inputs are still reported on stderr")
    f.add_argument("--cache", metavar="DIR", help=f"a folder of annotations shared by runs: stored annotations found there are reused whatever --out is, new ones are added (default: ${CACHE_ENV} if set, else none)")
    f.add_argument("--dry-run", action="store_true", help="decide and write decisions, funnel and report, but no output shards; the same command without it then writes them without recomputing anything")

    i = sub.add_parser(
        "inspect",
        help="show a run's funnel, counts and top drop reasons",
        description="Read a run back: its funnel, counts and top drop reasons; or everything about one "
        "sample (--sample KEY); or the samples one step dropped, with why (--dropped-by STEP).",
        epilog="examples:\n  mmcurate inspect runs/demo\n  mmcurate inspect runs/demo --sample 000000017\n"
        "  mmcurate inspect runs/demo --dropped-by caption | cut -f2 | sort | uniq -c",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("out", metavar="DIR", help="a run directory written by 'mmcurate filter'")
    i.add_argument("--top", type=int, default=10, metavar="N", help="how many drop reasons to list (default: 10)")
    which = i.add_mutually_exclusive_group()
    which.add_argument("--sample", metavar="KEY", help="show one sample instead: its decision and every stored annotation")
    which.add_argument("--dropped-by", metavar="STEP", help="list the samples STEP dropped: key, reason, shard (tab-separated)")

    r = sub.add_parser(
        "report",
        help="(re)write a run's report.html",
        description="Write the self-contained HTML report of a run (funnel, histograms with thresholds, "
        "examples per step, duplicate clusters, errors). Every run writes DIR/report.html; this rewrites it.",
    )
    r.add_argument("out", metavar="DIR", help="a run directory written by 'mmcurate filter'")
    r.add_argument("--to", metavar="FILE", help="write here instead of DIR/report.html")
    r.add_argument("--thumbs", type=int, default=ReportOptions.thumbs_per_step, metavar="N", help="kept and dropped examples per step (default: %(default)s)")

    c = sub.add_parser(
        "cache",
        help="show or clean a shared annotation cache (--cache DIR)",
        description="ls: every part (kind/name, bytes, last used, run directories holding it); du: bytes per kind; "
        "prune: delete parts last used more than --older-than DAYS ago and/or parts no run directory holds "
        "(--unreferenced). Runs keep their own copy of every part they use, so pruning never breaks a run.",
    )
    c.add_argument("action", choices=["ls", "du", "prune"])
    c.add_argument("dir", metavar="DIR", help="the cache folder")
    c.add_argument("--older-than", type=float, metavar="DAYS", help="prune: parts no run took or gave for DAYS days")
    c.add_argument("--unreferenced", action="store_true", help="prune: parts no run directory holds (a hard link count of 1)")

    sub.add_parser("recipes", help="list the built-in recipes")
    sub.add_parser("annotators", help="list the annotators a recipe can name: built-in and from installed packages (entry point group 'mmcurate.annotators')")
    return parser


def _filter(args: argparse.Namespace) -> int:
    if args.quiet:
        warnings.simplefilter("ignore")  # library warnings on the driver; the workers' are silenced by connect()
    result = curate(
        args.inputs,
        args.recipe,
        args.out,
        overrides=args.overrides,
        scheduler=args.scheduler,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        overwrite=args.overwrite,
        quiet=args.quiet,
        against=args.against,
        gpus=args.gpus,
        cache=args.cache,
        write=not args.dry_run,
    )
    if not args.quiet:
        print(result.summary())
    elif result.failed:
        print(format_failed(result.failed, result.shards_in), file=sys.stderr)
    unreadable = open_run(result.out).unreadable_inputs() if result.decisions_path.exists() else {}
    for url, why in unreadable.items():  # said even with --quiet
        print(f"mmcurate: warning: no sample of {url} could be read: {why}", file=sys.stderr)
    return 0 if result.complete else 1


def _inspect(args: argparse.Namespace) -> int:
    run = open_run(args.out)
    if args.sample is not None:
        return _inspect_sample(run, args.sample)
    if args.dropped_by is not None:
        for row in run.dropped_by(args.dropped_by).to_pylist():
            print(f"{row['key']}\t{row['reason']}\t{row['shard']}")
        return 0
    samples, kept = run.counts()
    print(f"run {run.root}: {run.info['describe']}, status {run.info.get('status')}")
    print(f"{samples} samples in, {kept} kept, {samples - kept} dropped")
    if run.info.get("failed"):
        print(format_failed(run.info["failed"], len(run.info["inputs"])))
    print(format_funnel(run.funnel()))
    for report in run.info.get("dedup", []):
        print("\n" + format_dedup(report))
    for report in run.info.get("keep_top", []):
        print("\n" + format_keep_top(report))
    for report in run.info.get("global_steps", []):
        print("\n" + format_global(report))
    reasons = run.top_reasons(args.top)
    if reasons:
        print("\ntop drop reasons:")
        for reason, n in reasons:
            print(f"  {n:>8}  {reason}")
    report = run.root / "report.html"
    if report.exists():
        print(f"\nreport: {report}")
    return 0


def _inspect_sample(run: Run, key: str) -> int:
    for record in run.sample(key):
        decision = f"kept in {record['output_shard']}" if record["kept"] else f"dropped by {record['step']}: {record['reason']}"
        print(f"sample {key} from {record['shard']}\n  decision: {decision}")
        print("  members: " + ", ".join(f"{name} ({size} bytes)" for name, size in record["members"].items()))
        for step, columns in record["annotations"].items():
            print(f"  {step}:")
            for name, value in columns.items():
                print(f"    {name}: {_short(value)}")
    return 0


def _short(value: object, shown: int = 4) -> str:
    """A value for one line: a long list (an embedding) as its first items and its length."""
    if isinstance(value, (list, tuple)) and len(value) > 2 * shown:
        items = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:shown])
        return f"[{items}, ... ({len(value)} values)]"
    return str(value)


def _report(args: argparse.Namespace) -> int:
    print(write_report(args.out, args.to, ReportOptions(thumbs_per_step=args.thumbs)))
    return 0


def _annotators(_: argparse.Namespace) -> int:
    for name in annotators.names():
        cls = annotators.get(name)
        try:
            columns = ", ".join(cls.columns_for(cls.Config()))
        except (TypeError, ValueError):  # a plugin whose config has required fields
            columns = "(depend on the step's settings)"
        print(f"{name:<20} {annotators.origin(name)}\n{'':<20} columns: {columns}")
    print(f"\nstep kinds: {', '.join(STEP_KINDS)} (annotate runs the annotators above; see the README)")
    return 0


def _cache(args: argparse.Namespace) -> int:
    cache = PartCache(args.dir)
    if args.action == "prune":
        if args.older_than is None and not args.unreferenced:
            print("mmcurate: error: cache prune needs --older-than DAYS or --unreferenced", file=sys.stderr)
            return 2
        deleted = cache.prune(args.older_than, args.unreferenced)
        print(f"deleted {len(deleted)} part(s), {_size(sum(p.size for p in deleted))}")
        return 0
    parts = list(cache.parts())
    if args.action == "ls":
        now = time.time()
        for p in parts:
            print(f"{p.kind}/{p.name}\t{p.size}\t{(now - p.mtime) / 86400:.1f} days ago\t{p.runs} run(s)")
        return 0
    kinds: dict[str, list[CachedPart]] = {}
    for p in parts:
        kinds.setdefault(p.kind, []).append(p)
    for kind, group in kinds.items():
        print(f"{_size(sum(p.size for p in group)):>10}  {len(group):>6} part(s)  {kind}")
    print(f"{_size(sum(p.size for p in parts)):>10}  {len(parts):>6} part(s)  total ({sum(p.runs == 0 for p in parts)} held by no run)")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _recipes(_: argparse.Namespace) -> int:
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.yaml")):
            print(f"{path.stem:<20} {path}")
    return 0


def _os_error(exc: OSError) -> str:
    if exc.filename is None or not exc.strerror:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"filter": _filter, "inspect": _inspect, "report": _report, "cache": _cache, "recipes": _recipes, "annotators": _annotators}
    try:
        return handlers[args.command](args)
    except (InputError, RecipeError, RunConflict, RunLocked, TaskFailed, ClusterError, AnnotatorUnavailable, NotACache) as exc:
        print(f"mmcurate: error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # an unknown sample key or step name; the message says which
        print(f"mmcurate: error: {exc.args[0]}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co: stop quietly
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:  # a missing file, a read-only or full --out: the path and the cause
        print(f"mmcurate: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmcurate: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
