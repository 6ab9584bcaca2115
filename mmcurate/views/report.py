"""``report.html``: one self-contained page about a run, readable offline.

Sections: the funnel (per step: in, kept, dropped by reason), a histogram of every numeric
annotation column with the recipe's filter thresholds drawn on it, thumbnails of samples
each step kept and dropped, duplicate clusters side by side, the samples that matched a
reference set (``--against``), and the errors table. Charts
are inline SVG, thumbnails inline base64 (through :mod:`mmcurate.views.thumbs`, so every modality
with a thumbnailer shows); there is no script and no external file.

Its cost is bounded whatever the run's size: histograms read only annotation columns, one
input shard at a time (their axes from a bounded sample, see :data:`SAMPLE_VALUES`); a
fixed number of thumbnails is drawn from at most ``max_thumb_shards`` input shards, and only
those shards (plus the few holding the largest duplicate clusters) are read, each streamed
only up to the last sample wanted from it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .browse import STYLE, Gallery, labelled_row
from .charts import DROPPED_COLOR, KEPT_COLOR, Histogram, Threshold, ValueSample, funnel_svg, histogram_chart, value_axis
from .funnel import format_global
from ..engine.state import drop_groups
from ..engine.plan import READ_STEP, AnnotatePlan, funnel_steps
from ..recipe import AnnotateStep, DedupStep, FilterStep
from ..steps.dedup.results import REFERENCE_REASON
from ..store.runview import Run, open_run
from ..store.runstore import atomic_write_bytes
from ..io.location import Location, location, read_table

__all__ = ["ReportOptions", "build_report", "write_report"]

REPORT_NAME = "report.html"


@dataclass(frozen=True)
class ReportOptions:
    thumbs_per_step: int = 6
    """Kept and dropped examples shown per step (each)."""
    thumb_size: int = 112
    max_thumb_shards: int = 8
    """Step examples are drawn from at most this many input shards (evenly spread)."""
    clusters: int = 8
    """Largest duplicate clusters shown per dedup step."""
    cluster_members: int = 6
    max_errors: int = 200
    max_reference_matches: int = 50
    """Samples listed in the reference matches section (the rest are counted)."""
    seed: int = 0


def write_report(run: str | os.PathLike[str] | Run, path: str | os.PathLike[str] | None = None, options: ReportOptions = ReportOptions()) -> Location:
    """Write the report of ``run`` (a run directory or :class:`Run`) to ``path`` (default ``RUN/report.html``)."""
    run = run if isinstance(run, Run) else open_run(run)
    target = location(path) if path is not None else run.root / REPORT_NAME
    atomic_write_bytes(target, build_report(run, options).encode("utf-8"))
    return target


def build_report(run: Run, options: ReportOptions = ReportOptions()) -> str:
    """The report of a finished run as one HTML string."""
    examples = _pick_examples(run, options)  # decisions are read per shard or filtered, never whole
    clusters = _pick_clusters(run, options)
    wanted = {pair for picks in examples.values() for rows in picks for pair in ((r["shard"], r["pos"]) for r in rows)}
    wanted |= {(m["shard"], m["pos"]) for groups in clusters.values() for group in groups for m in group}
    gallery = Gallery(run, options.thumb_size)
    gallery.load(wanted)
    samples, kept = run.counts()
    info = run.info
    body = [
        f"<h1>mmcurate run: {escape(str(info.get('describe', run.root)))}</h1>",
        f'<p class="sum">{samples} samples in, <b style="color:{KEPT_COLOR}">{kept} kept</b>, '
        f'<b style="color:{DROPPED_COLOR}">{samples - kept} dropped</b>; status {escape(str(info.get("status")))}; '
        f"recipe <code>{escape(run.recipe.name)}</code> ({escape(str(info.get('recipe_source', '')))}); "
        f"{len(info.get('inputs', []))} input shard(s); "
        + (f"output in <code>{escape(str(run.root / 'shards'))}</code></p>" if info.get("status") != "dry-run" else "dry run: no output shards written</p>"),
        _nav(),
        _funnel_section(run),
        _global_steps_section(run),
        _histogram_section(run),
        _examples_section(run, examples, gallery, options),
        _clusters_section(run, clusters, gallery),
        _references_section(run, options),
        _errors_section(run, options),
    ]
    return _PAGE.format(title=escape(f"mmcurate report: {run.recipe.name}"), body="\n".join(body))


def _nav() -> str:
    links = [("funnel", "Funnel"), ("annotations", "Annotations"), ("examples", "Examples per step"), ("clusters", "Duplicate clusters"), ("references", "Reference matches"), ("errors", "Errors")]
    return '<nav>' + " · ".join(f'<a href="#{a}">{t}</a>' for a, t in links) + "</nav>"


def _global_steps_section(run: Run, clusters_shown: int = 50) -> str:
    """What the balance, prune and target steps did; prune's most thinned clusters, before and after."""
    reports = run.info.get("global_steps", [])
    if not reports:
        return ""
    parts = []
    for report in reports:
        parts.append(f"<pre>{escape(format_global(report))}</pre>")
        if report["kind"] == "prune" and report["sizes_before"]:
            before, after = report["sizes_before"], report["sizes_after"]
            order = sorted(range(len(before)), key=lambda j: (after[j] - before[j], j))[:clusters_shown]
            rows = "".join(f"<tr><td>{j}</td><td>{before[j]}</td><td>{after[j]}</td><td>{report['d_intra'][j]:.4f}</td></tr>" for j in order)
            parts.append(f"<table><tr><th>cluster</th><th>before</th><th>after</th><th>d_intra</th></tr>{rows}</table>")
    return "".join(parts)


def _funnel_section(run: Run) -> str:
    counts = run.funnel()
    rows = "".join(
        f"<tr><td>{escape(c.step)}</td><td>{c.n_in}</td><td>{c.kept}</td><td>{c.dropped}</td>"
        f"<td>{escape(', '.join(f'{r} {n}' for r, n in c.reasons.items()))}</td></tr>"
        for c in counts
    )
    return (
        '<section id="funnel"><h2>Funnel</h2>'
        + funnel_svg(counts)
        + f"<table><tr><th>step</th><th>in</th><th>kept</th><th>dropped</th><th>reasons</th></tr>{rows}</table></section>"
    )


def _thresholds(run: Run) -> dict[str, list[Threshold]]:
    found: dict[str, list[Threshold]] = {}
    for step in run.recipe.steps:
        if isinstance(step, FilterStep):
            for comparison in step.expr.comparisons():
                found.setdefault(comparison.column, []).append(Threshold(step.id, comparison))
    return found


def _numeric_columns(run: Run, plan: AnnotatePlan) -> list[tuple[str, pa.DataType]]:
    """Columns worth a histogram: ints and floats, not 64-bit hash patterns nor dedup-compared values."""
    compared = {c for s in run.recipe.steps if isinstance(s, DedupStep) for c in (s.config.column, f"{s.config.column}_mirror")}
    return [
        (name, dtype)
        for name, dtype in plan.columns.items()
        if (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)) and not pa.types.is_uint64(dtype) and name not in compared
    ]


SAMPLE_VALUES = 100_000
"""At most about this many values of a column choose its histogram's axis and median; the bins
count every value, one input shard at a time."""


def _column_parts(run: Run, plans: dict[str, AnnotatePlan], columns: Mapping[str, list[str]]) -> Iterator[tuple[str, pa.Table, np.ndarray]]:
    """Per input shard, per plan (by id) in ``columns``: those columns of every row it stored
    without an error, and each row's final ``kept`` flag (the shard's decisions read once)."""
    for url in run.info["inputs"]:
        kept = None
        for plan_id, names in columns.items():
            path = run.store.part_path(plan_id, plans[plan_id].part_name(run.shard_ref(url)))
            if path.exists():
                table = read_table(path, columns=["pos", *names, "error"]).filter(pc.field("error").is_null())
                if kept is None:  # decisions row i is pos i
                    kept = run.shard_decisions(url, ["kept"])["kept"].to_numpy(zero_copy_only=False).astype(bool)
                yield plan_id, table, kept[table["pos"].to_numpy()]


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy().astype(np.float64)  # a null is NaN


def _histogram_cards(run: Run, thresholds: dict[str, list[Threshold]]) -> list[str]:
    """A histogram per numeric annotation column. The shards are read once for a bounded sample
    of each column (with its exact count and range) that chooses its axis, and again to count
    every value only where the sample could not hold them all: memory holds one shard and the
    samples whatever the run's size."""
    plans = {plan.id: plan for plan in run.plan.annotate_plans()}
    types = {(p, c): dtype for p, plan in plans.items() for c, dtype in _numeric_columns(run, plan)}
    samples = {column: ValueSample(SAMPLE_VALUES) for column in types}
    wanted, stored = _by_plan(types), set()
    for plan_id, table, kept in _column_parts(run, plans, wanted):
        stored.add(plan_id)
        for c in wanted[plan_id]:
            samples[plan_id, c].add(_floats(table[c]), kept)
    histograms = {}
    for (plan_id, c), sample in samples.items():
        if sample.finite:
            axis = value_axis(sample.values, [t.comparison.value for t in thresholds.get(c, ())], sample.extent)
            histograms[plan_id, c] = Histogram.over(axis, pa.types.is_integer(types[plan_id, c]))
            if sample.exact:
                histograms[plan_id, c].add(sample.values, sample.kept)
    again = _by_plan([column for column in histograms if not samples[column].exact])
    for plan_id, table, kept in _column_parts(run, plans, again):
        for c in again[plan_id]:
            histograms[plan_id, c].add(_floats(table[c]), kept)
    cards = []
    for (plan_id, c), sample in samples.items():
        if plan_id not in stored:
            continue
        stats = f"{sample.count} values"
        if sample.extent is not None:
            median = f"median {np.median(sample.values):g}" if sample.exact else f"median ≈ {np.median(sample.values):g} (of a sample of {sample.values.size})"
            stats += f"; min {sample.extent[0]:g}, {median}, max {sample.extent[1]:g}"
        svg = histogram_chart(f"{c} ({plan_id})", histograms.get((plan_id, c)), thresholds.get(c, ()), integer=pa.types.is_integer(types[plan_id, c]))
        cards.append(f'<div class="card">{svg}<div class="small">{stats}</div></div>')
    return cards


def _by_plan(columns: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(plan id, column) pairs as plan id -> its columns, in order."""
    found: dict[str, list[str]] = {}
    for plan_id, c in columns:
        found.setdefault(plan_id, []).append(c)
    return found


def _histogram_section(run: Run) -> str:
    thresholds = _thresholds(run)
    cards = _histogram_cards(run, thresholds)
    legend = (
        f'<p class="small">Bars: <span style="color:{KEPT_COLOR}">■ finally kept</span> '
        f'<span style="color:{DROPPED_COLOR}">■ dropped (by any step)</span>; dashed lines: filter thresholds.</p>'
    )
    return '<section id="annotations"><h2>Annotations</h2>' + legend + "".join(cards) + "</section>"


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else [items[0]]


def _pick_examples(run: Run, options: ReportOptions) -> dict[str, tuple[list[dict], list[dict]]]:
    """step -> (samples that passed it, samples it dropped), drawn from a few input shards."""
    table = pa.concat_tables([run.shard_decisions(url) for url in _spread(run.info["inputs"], options.max_thumb_shards)])
    steps = funnel_steps(run.recipe)
    # the funnel position of the step that dropped each sample (past the last: kept)
    dropped_at = pc.fill_null(pc.index_in(table["step"], value_set=pa.array(steps, pa.string())), len(steps)).to_numpy()
    rng = random.Random(options.seed)

    def draw(pool: np.ndarray) -> list[dict[str, Any]]:
        return table.take(sorted(rng.sample(pool.tolist(), min(options.thumbs_per_step, len(pool))))).to_pylist()

    picks = {}
    for i, step in enumerate(steps):
        dropped = np.flatnonzero(dropped_at == i)
        if dropped.size:
            picks[step] = (draw(np.flatnonzero(dropped_at > i)), draw(dropped))
    return picks


def _step_columns(run: Run, step_id: str) -> list[str]:
    """The columns worth printing under a step's examples: what its filter reads, or its own."""
    plans = {p.id: p for p in run.plan.annotate_plans()}
    for step in run.recipe.steps:
        if step.id == step_id and isinstance(step, FilterStep):
            return sorted(step.expr.columns)
    return list(plans[step_id].columns)[:4] if step_id in plans else []


def _examples_section(run: Run, examples: dict[str, tuple[list[dict], list[dict]]], gallery: Gallery, options: ReportOptions) -> str:
    parts = ['<section id="examples"><h2>Examples per step</h2>'
             f'<p class="small">Up to {options.thumbs_per_step} samples each step let through and dropped, drawn from '
             f"at most {options.max_thumb_shards} input shards. Steps that dropped nothing are left out.</p>"]
    for step, (passed, dropped) in examples.items():
        columns = _step_columns(run, step)
        parts.append(f"<h3>{escape(step)}</h3>")
        parts.append(gallery.row([{**r, "reason": None} for r in passed], columns, "passed", "kept"))
        parts.append(gallery.row(dropped, columns, "dropped", "dropped"))
    return "".join(parts) + "</section>"


def _pick_clusters(run: Run, options: ReportOptions) -> dict[str, list[list[dict[str, Any]]]]:
    """dedup step -> its largest clusters, each a list of members, the one the step kept first."""
    picked = {}
    for step, multi in run.clusters(pc.field("dup_cluster_size") > 1).items():
        largest = multi.group_by("dup_cluster").aggregate([("dup_cluster_size", "max")])
        largest = largest.sort_by([("dup_cluster_size_max", "descending"), ("dup_cluster", "ascending")]).slice(0, options.clusters)
        ids = largest.column("dup_cluster").to_pylist()
        members = multi.filter(pc.is_in(multi["dup_cluster"], value_set=pa.array(ids, pa.int64()))).to_pylist()
        keys = pa.array(sorted({m["key"] for m in members}), pa.string())
        fate = {(d["shard"], d["pos"]): d for d in run.decisions_where(pc.field("key").isin(keys)).to_pylist()}
        groups = []
        for cluster in ids:
            group = [dict(m, **fate[(m["shard"], m["pos"])]) for m in members if m["dup_cluster"] == cluster]
            group.sort(key=lambda m: m["step"] == step)  # the survivor of this step first
            groups.append(group[: options.cluster_members])
        picked[step] = groups
    return picked


def _bits(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def distance(kept: Any, other: Any) -> tuple[float, str] | None:
    """How far a duplicate's stored hash or embedding is from the kept sample's, as (a number,
    smaller is closer; its text): pHash bits (64-bit hashes), cosine (embeddings), identical;
    None when the values are not comparable."""
    if kept is None or other is None:
        return None
    if isinstance(kept, int) and isinstance(other, int):
        bits = _bits(kept, other)
        return bits, f"{bits} bits"
    if isinstance(kept, (list, tuple)) and isinstance(other, (list, tuple)) and len(kept) == len(other) and kept:
        if all(isinstance(v, float) for v in (*kept, *other)):
            a, b = np.asarray(kept, np.float64), np.asarray(other, np.float64)
            cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
            return -cosine, f"cosine {cosine:.3f}"
        if all(isinstance(v, int) for v in (*kept, *other)):
            mean = sum(_bits(x, y) for x, y in zip(kept, other)) / len(kept)
            return mean, f"{mean:.1f} bits per hash"
    return (0.0, "identical") if kept == other else None


def _distance_note(gallery: Gallery, column: str, kept: dict[str, Any], member: dict[str, Any]) -> str:
    """`` · 3 bits from the kept`` (the closer of the member's hash and its mirror's), or ""."""
    mine, theirs = gallery.values(member["shard"], member["pos"]), gallery.values(kept["shard"], kept["pos"])
    found = [(d, c) for c in (column, f"{column}_mirror") if (d := distance(theirs.get(column), mine.get(c))) is not None]
    if not found:
        return ""
    (_, text), col = min(found)
    return f" · {escape(text)}{' (mirrored)' if col != column else ''} from the kept"


def _clusters_section(run: Run, clusters: dict[str, list[list[dict[str, Any]]]], gallery: Gallery) -> str:
    parts = ['<section id="clusters"><h2>Duplicate clusters</h2>']
    if not clusters:
        parts.append("<p>No dedup step in this recipe.</p>")
    columns = {s.id: s.config.column for s in run.recipe.steps if isinstance(s, DedupStep)}
    for step, groups in clusters.items():
        parts.append(f"<h3>{escape(step)}: the {len(groups)} largest cluster(s)</h3>")
        if not groups:
            parts.append("<p>No duplicates found.</p>")
        for group in groups:
            figures = []
            for m in group:
                if m["step"] != step:
                    label = '<span class="kept">kept by this step</span>'
                else:
                    label = '<span class="dropped">duplicate</span>' + _distance_note(gallery, columns[step], group[0], m)
                figures.append(gallery.figure({**m, "reason": None}, extra=label))
            parts.append(labelled_row(figures, f'{group[0]["dup_cluster_size"]} samples'))
    return "".join(parts) + "</section>"


def _references_section(run: Run, options: ReportOptions) -> str:
    """Samples dropped for matching a reference item (``--against``, ``against:``): which
    sample matched which reference key; the first ``max_reference_matches`` listed, all counted."""
    sources = {None: list(run.info.get("against") or [])}
    sources.update((s.id, list(s.against)) for s in run.recipe.steps if isinstance(s, DedupStep) and s.against)
    parts = ['<section id="references"><h2>Reference matches</h2>']
    if not any(sources.values()):
        return "".join(parts) + "<p>No reference set (--against) in this run.</p></section>"
    parts.append("<p>Reference sets: " + "; ".join(
        f"{'every dedup step' if step is None else escape(step)}: " + ", ".join(f"<code>{escape(s)}</code>" for s in refs)
        for step, refs in sources.items() if refs
    ) + "</p>")
    matched = pc.starts_with(pc.field("reason"), f"{REFERENCE_REASON}:")
    total = run.decisions_dataset().count_rows(filter=matched)
    parts.append(f"<p>{total} sample(s) matched a reference item.</p>")
    if total:
        shown = run.decisions_dataset().head(options.max_reference_matches, columns=["shard", "key", "step", "reason"], filter=matched)
        parts.append("<table><tr><th>sample</th><th>shard</th><th>step</th><th>reference key</th></tr>")
        for d in shown.to_pylist():
            parts.append(
                f"<tr><td>{escape(d['key'])}</td><td>{escape(Path(d['shard']).name)}</td><td>{escape(d['step'])}</td>"
                f"<td>{escape(d['reason'].split(':', 1)[1])}</td></tr>"
            )
        parts.append("</table>")
        if total > shown.num_rows:
            parts.append(f"<p>… and {total - shown.num_rows} more (all in decisions.parquet).</p>")
    return "".join(parts) + "</section>"


def _errors_section(run: Run, options: ReportOptions) -> str:
    """Samples dropped because they could not be read or annotated (annotators never decide)."""
    error_steps = pa.array([READ_STEP] + [s.id for s in run.recipe.steps if isinstance(s, AnnotateStep)], pa.string())
    errors = run.decisions_where(pc.field("step").isin(error_steps), ["shard", "key", "step", "reason"])
    parts = [f'<section id="errors"><h2>Errors ({errors.num_rows})</h2>']
    if not errors.num_rows:
        parts.append("<p>No sample failed to read or decode.</p>")
    else:
        summary = drop_groups(errors).sort_by([("count", "descending"), ("first", "ascending")])
        parts.append("<table><tr><th>step</th><th>error</th><th>samples</th></tr>")
        parts += [f"<tr><td>{escape(s)}</td><td>{escape(r)}</td><td>{n}</td></tr>" for s, r, n in zip(*(summary[c].to_pylist() for c in ("step", "reason", "count")))]
        parts.append("</table><table><tr><th>shard</th><th>key</th><th>step</th><th>reason</th></tr>")
        for d in errors.slice(0, options.max_errors).to_pylist():
            parts.append(f"<tr><td>{escape(Path(d['shard']).name)}</td><td>{escape(d['key'])}</td><td>{escape(d['step'])}</td><td>{escape(d['reason'] or '')}</td></tr>")
        parts.append("</table>")
        if errors.num_rows > options.max_errors:
            parts.append(f"<p>… and {errors.num_rows - options.max_errors} more (all in decisions.parquet).</p>")
    return "".join(parts) + "</section>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }}
h1 {{ font-size: 1.4em; }} h2 {{ border-bottom: 1px solid #ddd; margin-top: 1.6em; }} h3 {{ font-size: 1em; margin: 1em 0 .3em; }}
table {{ border-collapse: collapse; margin: .6em 0; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
.card {{ display: inline-block; vertical-align: top; margin: 4px; padding: 4px; border: 1px solid #eee; }}
.small {{ font-size: 12px; color: #555; }}
.kept {{ color: {kept}; }} .dropped {{ color: {dropped}; }}
nav {{ font-size: 13px; }}
{gallery_style}
</style></head>
<body>
{body}
</body></html>
""".replace("{kept}", KEPT_COLOR).replace("{dropped}", DROPPED_COLOR).replace("{gallery_style}", STYLE.replace("{", "{{").replace("}", "}}"))
