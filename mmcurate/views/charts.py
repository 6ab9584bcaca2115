"""Small inline SVG charts (no JavaScript, no external files): the funnel and annotation histograms.

Used by ``report.html`` and the notebooks (``IPython.display.SVG(funnel_svg(run.funnel()))``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from html import escape
from typing import Sequence

import numpy as np

from ..steps.expr import Comparison
from .funnel import StepCount

__all__ = ["KEPT_COLOR", "DROPPED_COLOR", "Axis", "Histogram", "Threshold", "ValueSample", "funnel_svg", "histogram_chart", "histogram_svg", "value_axis"]

KEPT_COLOR = "#3a7d44"
DROPPED_COLOR = "#c8553d"
_EDGE_SHIFT = {">=": -0.5, "<": -0.5, ">": 0.5, "<=": 0.5}
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Threshold:
    """A filter's ``column OP number`` drawn on a histogram, labelled with the step that holds it."""

    step: str
    comparison: Comparison

    @property
    def label(self) -> str:
        value = self.comparison.value
        return f"{self.comparison.op} {value:g} ({self.step})"


def _svg(width: int, height: int, parts: Sequence[str]) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" {_FONT}>' + "".join(parts) + "</svg>"


def funnel_svg(counts: Sequence[StepCount], width: int = 720) -> str:
    """One bar per step: samples kept (green) and dropped (red) of those that came in."""
    label_w, row_h = 130, 22
    total = max((c.n_in for c in counts), default=0) or 1
    bar_w = width - label_w - 170
    rows = []
    for i, c in enumerate(counts):
        y = i * row_h + 4
        kept_w = bar_w * c.kept / total
        drop_w = bar_w * c.dropped / total
        rows.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(c.step)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{kept_w:.1f}" height="{row_h - 6}" fill="{KEPT_COLOR}"><title>{c.kept} kept</title></rect>'
            f'<rect x="{label_w + kept_w:.1f}" y="{y}" width="{drop_w:.1f}" height="{row_h - 6}" fill="{DROPPED_COLOR}">'
            f"<title>{c.dropped} dropped</title></rect>"
            f'<text x="{label_w + kept_w + drop_w + 6:.1f}" y="{y + 14}">{c.kept} kept, {c.dropped} dropped</text>'
        )
    height = len(counts) * row_h + 8
    return _svg(width, height, rows)


OUTLIER_TAIL = 1.0
"""Values further beyond the 1st or 99th percentile than this many times the span between them
are outliers: the axis ends before them (one 12000 px image among 500 px ones)."""
LOG_RATIO = 20.0
"""Positive values whose 99th percentile is this many times their 1st, and which a linear axis would
squeeze (most in its lowest twentieth), get a log axis (file sizes)."""


@dataclass(frozen=True)
class Axis:
    """The range a column's histogram shows, and a threshold slider over it: the values' own
    range, a log axis, or one that ends before outliers (counted in the end bars)."""

    low: float
    high: float
    log: bool = False
    clipped: tuple[int, int] = (0, 0)
    """Values below ``low`` and above ``high`` (counted in the first and last bar)."""

    @property
    def note(self) -> str:
        """How the axis was chosen, for the chart ("" for the plain range)."""
        if self.log:
            return "log axis"
        below, above = self.clipped
        if below or above:
            beyond = " and ".join(f"{n} {side}" for n, side in ((below, "below"), (above, "above")) if n)
            return f"axis clipped past outliers (far beyond the 1st/99th percentile): {beyond}, in the end bars"
        return ""


def value_axis(values: np.ndarray, marks: Sequence[float] = (), extent: tuple[float, float] | None = None) -> Axis:
    """The axis for ``values`` (finite ones) that keeps ``marks`` (thresholds) in view: their full
    range, a log axis for skewed values spanning orders of magnitude, or one that ends before
    outliers far beyond the 1st or 99th percentile (see :data:`OUTLIER_TAIL`, :data:`LOG_RATIO`).

    ``values`` may be a sample (:class:`ValueSample`) of values whose exact finite range is
    ``extent``: the axis then spans that range wherever it clips nothing."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    marks = [float(m) for m in marks]
    if values.size == 0:
        points = marks or [0.0]
        return Axis(min(points), max(points))
    low, high = extent if extent is not None else (float(values.min()), float(values.max()))
    p1 = float(np.percentile(values, 1, method="higher"))
    p99 = float(np.percentile(values, 99, method="lower"))
    squeezed = np.mean(values < low + (high - low) / 20) > 0.5
    if low > 0 and all(m > 0 for m in marks) and p99 >= LOG_RATIO * p1 and squeezed:
        return Axis(min([low, *marks]), max([high, *marks]), log=True)
    core = p99 - p1
    floor, ceiling = p1 - OUTLIER_TAIL * core, p99 + OUTLIER_TAIL * core
    usual = values[(values >= floor) & (values <= ceiling)]
    if usual.size == 0:  # so few values that the percentiles cross (p1 > p99): no outliers to clip
        floor, ceiling, usual = low, high, values
    lo = min([low if low >= floor else float(usual.min()), *marks])
    hi = max([high if high <= ceiling else float(usual.max()), *marks])
    return Axis(lo, hi, clipped=(int((values < lo).sum()), int((values > hi).sum())))


class ValueSample:
    """A bounded, deterministic sample of a column's values (each with its kept flag) and their
    exact count, min and max, added chunk by chunk (a run's shards one at a time): every
    ``stride``-th finite value in order, the stride doubling whenever more than ``limit`` are
    held (all values while they fit, so a small run's histogram is counted from the sample)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.stride = 1
        self.count = 0
        """Values added, missing ones (NaN) included."""
        self.finite = 0
        self.extent: tuple[float, float] | None = None
        """The exact (min, max) of the finite values; None before the first."""
        self._values: list[np.ndarray] = []
        self._kept: list[np.ndarray] = []
        self._held = 0

    def add(self, values: np.ndarray, kept: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        self.count += values.size
        finite = np.isfinite(values)
        values, kept = values[finite], np.asarray(kept, dtype=bool)[finite]
        if not values.size:
            return
        low, high = float(values.min()), float(values.max())
        self.extent = (low, high) if self.extent is None else (min(self.extent[0], low), max(self.extent[1], high))
        taken = slice((-self.finite) % self.stride, None, self.stride)  # the stride runs on across chunks
        self.finite += values.size
        self._values.append(values[taken])
        self._kept.append(kept[taken])
        self._held += self._values[-1].size
        while self._held > self.limit:
            self.stride *= 2
            self._values, self._kept = [self.values[::2]], [self.kept[::2]]
            self._held = self._values[0].size

    @property
    def values(self) -> np.ndarray:
        return np.concatenate(self._values) if self._values else np.empty(0)

    @property
    def kept(self) -> np.ndarray:
        return np.concatenate(self._kept) if self._kept else np.empty(0, dtype=bool)

    @property
    def exact(self) -> bool:
        """Whether the sample holds every finite value."""
        return self.stride == 1


@dataclass
class Histogram:
    """Counts of kept and dropped values per bin over an axis, added chunk by chunk; a value
    beyond the axis counts in its end bar (and in ``below``/``above``)."""

    axis: Axis
    edges: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray
    below: int = 0
    above: int = 0

    @classmethod
    def over(cls, axis: Axis, integer: bool = False, max_bins: int = 40) -> "Histogram":
        """Empty bins over ``axis``: one per integer for a narrow integer column, else ``max_bins``."""
        edges = _bins(axis, integer, max_bins)
        return cls(axis, edges, np.zeros(len(edges) - 1, np.int64), np.zeros(len(edges) - 1, np.int64))

    def add(self, values: np.ndarray, kept: np.ndarray) -> None:
        """Count ``values`` (non-finite ones are skipped), each kept or dropped by ``kept``."""
        values = np.asarray(values, dtype=np.float64)
        kept = np.asarray(kept, dtype=bool)
        finite = np.isfinite(values)
        values, kept = values[finite], kept[finite]
        self.below += int((values < self.axis.low).sum())
        self.above += int((values > self.axis.high).sum())
        inside = np.clip(values, self.edges[0], self.edges[-1])
        self.kept += np.histogram(inside[kept], self.edges)[0]
        self.dropped += np.histogram(inside[~kept], self.edges)[0]

    @property
    def note(self) -> str:
        """The axis's note, with the values it left out counted exactly."""
        return (self.axis if self.axis.log else replace(self.axis, clipped=(self.below, self.above))).note


def _bins(axis: Axis, integer: bool, max_bins: int) -> np.ndarray:
    low, high = axis.low, axis.high
    if integer and not axis.log and high - low < max_bins:
        return np.arange(np.floor(low), np.floor(high) + 2) - 0.5
    if high == low:
        return np.array([low - 0.5, high + 0.5])
    return np.geomspace(low, high, max_bins + 1) if axis.log else np.linspace(low, high, max_bins + 1)


def histogram_svg(
    title: str,
    values: np.ndarray,
    kept: np.ndarray,
    thresholds: Sequence[Threshold] = (),
    integer: bool = False,
    width: int = 340,
    height: int = 170,
    max_bins: int = 40,
) -> str:
    """Histogram of ``values`` stacked by ``kept`` (bool per value), with ``thresholds`` as dashed
    lines, over :func:`value_axis` (a log or clipped axis is said under the chart)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    histogram = None
    if finite.size:
        histogram = Histogram.over(value_axis(finite, [t.comparison.value for t in thresholds]), integer, max_bins)
        histogram.add(values, kept)
    return histogram_chart(title, histogram, thresholds, integer, width, height)


def histogram_chart(
    title: str, histogram: Histogram | None, thresholds: Sequence[Threshold] = (), integer: bool = False, width: int = 340, height: int = 170
) -> str:
    """The SVG of ``histogram`` (None: no values), with ``thresholds`` as dashed lines."""
    left, top, bottom = 34, 18, 28
    plot_w, plot_h = width - left - 8, height - top - bottom
    parts = [f'<text x="{left}" y="12" font-weight="600">{escape(title)}</text>']
    if histogram is None:
        parts.append(f'<text x="{left}" y="{top + 20}">no values</text>')
    else:
        axis, edges, n_kept, n_drop = histogram.axis, histogram.edges, histogram.kept, histogram.dropped
        unit_bins = integer and not axis.log and np.allclose(np.diff(edges), 1)
        # on one-bin-per-integer charts a threshold sits on the bin edge it cuts at (>= 1: left of bar 1)
        peak = max(int((n_kept + n_drop).max()), 1)
        scale = np.log10 if axis.log else (lambda v: v)

        def x_of(v: float) -> float:
            return left + plot_w * float(scale(v) - scale(edges[0])) / float(scale(edges[-1]) - scale(edges[0]))

        for lo, hi, k, d in zip(edges, edges[1:], n_kept, n_drop):
            x = x_of(lo)
            w = max(x_of(hi) - x - 1, 1)
            hk, hd = plot_h * k / peak, plot_h * d / peak
            base = top + plot_h
            tip = f"{lo:g} to {hi:g}: {k} kept, {d} dropped"
            parts.append(f'<rect x="{x:.1f}" y="{base - hk:.1f}" width="{w:.1f}" height="{hk:.1f}" fill="{KEPT_COLOR}"><title>{tip}</title></rect>')
            parts.append(
                f'<rect x="{x:.1f}" y="{base - hk - hd:.1f}" width="{w:.1f}" height="{hd:.1f}" fill="{DROPPED_COLOR}"><title>{tip}</title></rect>'
            )
        for i, t in enumerate(thresholds):
            x = x_of(t.comparison.value + (_EDGE_SHIFT.get(t.comparison.op, 0.0) if unit_bins else 0.0))
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + plot_h}" stroke="#111" stroke-dasharray="4 3" stroke-width="1.5"/>')
            anchor = "end" if x > left + plot_w / 2 else "start"
            dx = -3 if anchor == "end" else 3
            parts.append(f'<text x="{x + dx:.1f}" y="{top + 10 + 12 * i}" text-anchor="{anchor}">{escape(t.label)}</text>')
        parts.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>')
        parts.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>')
        parts.append(f'<text x="{left}" y="{height - 8}">{edges[0]:g}</text>')
        parts.append(f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end">{edges[-1]:g}</text>')
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>')
        if histogram.note:
            parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height + 6}" text-anchor="middle" fill="#555" font-size="10">{escape(histogram.note)}</text>')
            height += 12
    return _svg(width, height, parts)
