"""The funnel: per step, how many samples came in, stayed, and left for which reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa

from ..steps.balance import format_balance
from ..steps.prune import format_prune
from ..steps.target import format_target

__all__ = ["StepCount", "format_dedup", "format_failed", "format_funnel", "format_global", "funnel_from_groups", "reason_category"]


@dataclass
class StepCount:
    step: str
    n_in: int
    kept: int
    dropped: int
    reasons: dict[str, int] = field(default_factory=dict)


def reason_category(reason: str) -> str:
    """``"decode_error: broken data"`` -> ``"decode_error"``; reasons without a colon stay whole."""
    return reason.split(":", 1)[0] if ":" in reason else reason


def funnel_from_groups(groups: pa.Table, n: int, step_ids: list[str]) -> list[StepCount]:
    """Counts per step, in recipe order, of ``n`` samples from their drops per (step, reason
    category) (:func:`mmcurate.engine.state.drop_groups` of parts of the decisions, ``first``
    counted in the whole run; groups repeated across parts add up). Within a step, reasons go by
    count, ties by first appearance."""
    merged = (
        groups.group_by(["step", "reason"])
        .aggregate([("count", "sum"), ("first", "min")])
        .sort_by([("count_sum", "descending"), ("first_min", "ascending")])
    )
    by_step: dict[str, dict[str, int]] = {s: {} for s in step_ids}
    for step, reason, count in zip(*(merged.column(c).to_pylist() for c in ("step", "reason", "count_sum"))):
        by_step.setdefault(step, {})[reason] = count
    counts = []
    for step in step_ids + [s for s in by_step if s not in step_ids]:
        gone = sum(by_step[step].values())
        counts.append(StepCount(step, n, n - gone, gone, by_step[step]))
        n -= gone
    return counts


def format_funnel(counts: list[StepCount]) -> str:
    """A plain-text table of the funnel."""
    width = max([len(c.step) for c in counts] + [4])
    lines = [f"{'step':<{width}}  {'in':>8}  {'kept':>8}  {'dropped':>8}  reasons"]
    for c in counts:
        reasons = ", ".join(f"{r} {n}" for r, n in c.reasons.items())
        lines.append(f"{c.step:<{width}}  {c.n_in:>8}  {c.kept:>8}  {c.dropped:>8}  {reasons}")
    return "\n".join(lines)


def format_dedup(report: Mapping[str, Any]) -> str:
    """A few lines on one dedup step: removed, clusters, the largest ones with example keys."""
    lines = [f"{report['step']} ({report['method']}): {report['removed']} removed in {report['clusters']} duplicate cluster(s)"]
    for key, value in report.get("stats", {}).items():
        lines.append(f"  {key}: {value}")
    for size, kept, dropped in report.get("largest", []):
        lines.append(f"  cluster of {size}: kept {kept}; dropped {', '.join(dropped)}{' ...' if size - 1 > len(dropped) else ''}")
    return "\n".join(lines)


def format_global(report: Mapping[str, Any]) -> str:
    """The lines on one balance, prune or target step (its report as a dict, by ``kind``)."""
    return {"balance": format_balance, "prune": format_prune, "target": format_target}[report["kind"]](report)


def format_failed(failed: Mapping[str, str], shards: int) -> str:
    """The loud lines on shards that could not be processed: which, why, and what to do."""
    lines = [f"INCOMPLETE: {len(failed)} of {shards} input shard(s) FAILED after retries; their samples are in no count above:"]
    lines += [f"  {url}: {error}" for url, error in failed.items()]
    lines.append("re-run the same command to retry only the failed shard(s); stored work is reused")
    return "\n".join(lines)
