"""Looking at a run: sample galleries read straight from its input shards, and what-if thresholds.

Used by ``report.html`` and the docs notebooks::

    run = mmcurate.open_run("runs/demo")
    gallery = Gallery(run)
    HTML(gallery.grid(run.dropped_by("image_size").to_pylist()[:8], columns=["width", "height"]))
    looser = run.recipe.replace_step("image_size", {"filter": "width >= 32"})
    preview(run, looser)          # per-sample decisions under the edited recipe, from stored annotations
"""

from __future__ import annotations

import itertools
from html import escape
from typing import Any, Iterable, Mapping

import pyarrow as pa

from ..engine.ledger import Ledger
from ..engine.plan import build_plan, read_annotations
from ..recipe import Recipe
from ..store.runview import Run
from ..engine.shard_task import AnnotatePlan, decide_steps, read_manifest
from ..io.tarread import Sample
from .thumbs import placeholder, sample_html

__all__ = ["NOT_ANNOTATED", "STYLE", "Gallery", "labelled_row", "preview", "with_style"]

STYLE = """
.mmc-row { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 6px; margin: 4px 0; }
.mmc-row .label { width: 80px; flex: none; font-size: 12px; font-weight: 600; padding-top: 4px; }
.mmc-row .items { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 6px; flex: 1; }
figure.thumb { margin: 0; width: min-content; min-width: 150px; font-size: 11px; overflow-wrap: anywhere; font-family: system-ui, sans-serif; }
figure.thumb img { display: block; border: 1px solid #ccc; }
figure.thumb .strip { display: flex; gap: 1px; }
.ph { display: flex; align-items: center; justify-content: center; text-align: center; background: #f1f1f1;
      border: 1px dashed #bbb; color: #777; font-size: 11px; padding: 4px; box-sizing: border-box; min-height: 60px; overflow: hidden; }
.why { color: #c8553d; }
"""

NOT_ANNOTATED = "not_annotated: the run never computed this annotation for the sample (re-run to decide it)"


def with_style(html: str) -> str:
    """``html`` (gallery rows) with the stylesheet they need, for ``IPython.display.HTML``."""
    return f"<style>{STYLE}</style>{html}"


def labelled_row(figures: Iterable[str], label: str = "", label_class: str = "") -> str:
    """Figures side by side (wrapping), with an optional label on the left."""
    head = f'<div class="label {label_class}">{escape(label)}</div>' if label else ""
    return f'<div class="mmc-row">{head}<div class="items">{"".join(figures)}</div></div>'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 18 else text[:16] + "…"


class Gallery:
    """Samples of ``run`` as HTML figures (media, key, caption, drop reason, chosen annotation values).

    Samples are read from the run's input shards on demand (at the offsets the run recorded);
    stored annotations are read once per shard.
    """

    def __init__(self, run: Run, size: int = 128):
        self.run = run
        self.size = size
        self.plans = run.plan.annotate_plans()
        self.samples: dict[tuple[str, int], Sample | None] = {}
        self.withheld: set[tuple[str, int]] = set()
        """Samples a blocklist holds back (see :meth:`Run.withheld`): shown as a grey box."""
        self.annotations: dict[tuple[str, int], dict[str, Any]] = {}
        self.problems: dict[tuple[str, int], str] = {}
        """Why a sample could not be shown (its shard changed since the run, or cannot be read)."""

    def load(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Read the samples ``(shard, pos)`` not read yet, in one pass per shard, and their stored annotations."""
        missing = sorted({p for p in pairs if p not in self.samples})
        self.withheld |= self.run.withheld(missing)
        found = self.run.read_samples(missing, self.problems)
        self.samples.update({p: found.get(p) for p in missing})
        for shard, group in itertools.groupby(missing, key=lambda p: p[0]):
            positions = [pos for _, pos in group]
            rows = read_annotations(self.run.store, self.plans, self.run.shard_ref(shard), positions)
            self.annotations.update(((shard, pos), rows.get(pos, {})) for pos in positions)

    def values(self, shard: str, pos: int) -> dict[str, Any]:
        """Every stored annotation column of one sample."""
        self.load([(shard, pos)])
        return self.annotations[(shard, pos)]

    def figure(self, row: Mapping[str, Any], columns: Iterable[str] = (), extra: str = "") -> str:
        """One sample: ``row`` has ``shard``, ``key``, ``pos`` and optionally ``reason`` (shown in red);
        ``columns`` are annotation values printed under it; ``extra`` is HTML put first."""
        pair = (row["shard"], row["pos"])
        self.load([pair])
        notes = [extra] if extra else []
        if pair in self.withheld:
            caption = "<br>".join([f"<b>{escape(row['key'])}</b>", *notes, escape(row.get("reason") or "")])
            return f'<figure class="thumb">{placeholder("withheld: blocklist", self.size)}<figcaption>{caption}</figcaption></figure>'
        if row.get("reason"):
            notes.append(f'<span class="why">{escape(row["reason"])}</span>')
        stored = self.values(*pair)
        shown = [f"{escape(c)} {escape(_fmt(stored[c]))}" for c in columns if stored.get(c) is not None]
        if shown:
            notes.append(", ".join(shown))
        sample = self.samples[pair]
        if sample is None:
            problem = self.problems.get(pair)
            caption = "<br>".join([f"<b>{escape(row['key'])}</b>", *notes, *([escape(problem)] if problem else [])])
            return f'<figure class="thumb">{placeholder("not readable", self.size)}<figcaption>{caption}</figcaption></figure>'
        return sample_html(self.run.view(sample), self.size, "<br>".join(notes))

    def row(self, rows: Iterable[Mapping[str, Any]], columns: Iterable[str] = (), label: str = "", label_class: str = "") -> str:
        """A wrapping row of figures, with an optional label on the left."""
        rows, columns = list(rows), list(columns)
        self.load((r["shard"], r["pos"]) for r in rows)
        return labelled_row([self.figure(r, columns) for r in rows], label, label_class)

    def grid(self, rows: Iterable[Mapping[str, Any]], columns: Iterable[str] = (), label: str = "") -> str:
        """:meth:`row` with its stylesheet: a standalone HTML fragment (``IPython.display.HTML``)."""
        return with_style(self.row(rows, columns, label))


def preview(run: Run, recipe: Recipe | Iterable[str]) -> pa.Table:
    """Per-sample decisions of ``recipe`` (or of ``run.recipe`` with ``--set``-style overrides) from
    the run's stored annotations: no sample bytes read, no annotator run.

    Same columns as ``run.decisions`` (``output_shard`` empty). Global steps (dedup) are not
    re-run: ``kept`` means "passes every per-sample step". A sample lacking a stored row the
    edited recipe needs (an earlier filter had dropped it, or an annotator's config changed) is
    dropped with reason :data:`NOT_ANNOTATED`; ``curate(..., overwrite=True)`` decides it for real.
    """
    recipe = recipe if isinstance(recipe, Recipe) else run.recipe.with_overrides(recipe)
    steps = build_plan(recipe, run.info.get("resolved")).per_sample_steps()
    ledger = Ledger([run.shard_ref(url) for url in run.info["inputs"]])
    for ref in ledger.shards:
        entries = read_manifest(run.store, ref) or []
        ledger.record_read(ref.url, entries)
        stored = {s.id: run.store.read_rows(run.store.part_path(s.id, s.part_name(ref))) for s in steps if isinstance(s, AnnotatePlan)}

        def rows_of(plan: AnnotatePlan, alive: list[int]) -> dict[int, dict[str, Any]]:
            rows = stored[plan.id]
            return {p: rows.get(p) or {"error": NOT_ANNOTATED} for p in alive}

        drops, _ = decide_steps(steps, ledger.alive(ref.url), rows_of)
        ledger.drop(ref.url, drops)
    return ledger.table({})
