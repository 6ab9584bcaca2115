"""A group decided from stored rows alone, column-wise in Arrow: the path of a threshold change.

When every sample a group decides already has a row in each of its annotate steps' parts (a
rerun, a new threshold, a second ``--out`` sharing a cache), the group's decisions need no
sample bytes and no Python object per sample: the parts are aligned on the alive positions
and each filter is evaluated over whole columns. It decides exactly what
:func:`~mmcurate.engine.shard_task.decide_steps` decides over the same rows; a group it cannot
decide so (a row missing, a blocklist step) is left to that path.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.tarwrite import member_bytes
from ..recipe import FilterStep
from .plan import AnnotatePlan, GroupStep

__all__ = ["decide_stored", "sample_nbytes"]


def sample_nbytes(sizes: pa.ListArray | pa.ChunkedArray) -> np.ndarray:
    """Bytes each sample (a list of its members' sizes) takes in a tar, as
    :func:`~mmcurate.io.tarwrite.sample_bytes` counts them, for a whole manifest at once."""
    sizes = sizes.combine_chunks() if isinstance(sizes, pa.ChunkedArray) else sizes
    flat = sizes.values.to_numpy(zero_copy_only=False).astype(np.int64)
    padded = np.concatenate([[0], np.cumsum(member_bytes(flat))])  # type: ignore[arg-type]
    offsets = sizes.offsets.to_numpy()
    return padded[offsets[1:]] - padded[offsets[:-1]]


def decide_stored(
    steps: Sequence[GroupStep], parts: Mapping[str, pa.Table | None], alive: np.ndarray
) -> tuple[dict[int, tuple[str, str]], dict[str, int]] | None:
    """``(drops, reused)`` of ``steps`` over the samples at ``alive`` (positions, ascending) from
    the annotate steps' stored ``parts`` (step id -> table with ``pos``): drops as pos -> (step,
    reason), reused as step id -> rows taken. None when a part lacks a row some sample needs, or
    a step is neither an annotate step nor a filter."""
    alive = np.asarray(alive, dtype=np.int64)
    columns: dict[str, pa.Array] = {}
    drops: dict[int, tuple[str, str]] = {}
    reused: dict[str, int] = {}
    for step in steps:
        rows = None
        if isinstance(step, AnnotatePlan):
            rows = _aligned(parts.get(step.id), alive)
            if rows is None:
                return None
            reused[step.id] = len(alive)
            reasons = rows["error"]
            failed = pc.fill_null(pc.not_equal(reasons, ""), False)
        elif isinstance(step, FilterStep):
            values = {c: columns[c] if c in columns else pa.nulls(len(alive)) for c in step.expr.columns}
            reasons = pa.array(step.verdicts(pa.table({"pos": pa.array(alive, pa.int64()), **values})), pa.string())
            failed = pc.is_valid(reasons)
        else:
            return None
        keep = pc.invert(failed)
        _drop(drops, alive, failed, step.id, reasons)
        alive = alive[keep.to_numpy(zero_copy_only=False)]
        columns = {name: array.filter(keep) for name, array in columns.items()}
        if rows is not None:  # the annotate step's own columns join the survivors'
            columns.update((name, rows[name].filter(keep)) for name in rows.column_names if name != "pos")
    return drops, reused


def _aligned(part: pa.Table | None, positions: np.ndarray) -> pa.Table | None:
    """The rows of ``part`` at ``positions``, in that order; None when one is missing."""
    if part is None:
        return None if len(positions) else pa.table({"pos": pa.array([], pa.int64()), "error": pa.array([], pa.string())})
    pos = part["pos"].to_numpy()
    if not len(positions):
        return part.slice(0, 0)
    if not len(pos):
        return None
    order = np.argsort(pos, kind="stable")
    at = order[np.minimum(np.searchsorted(pos, positions, sorter=order), len(pos) - 1)]
    if not np.array_equal(pos[at], positions):
        return None
    return part.take(pa.array(at, pa.int64()))


def _drop(drops: dict[int, tuple[str, str]], alive: np.ndarray, failed: pa.Array, step: str, reasons: pa.Array) -> None:
    mask = failed.to_numpy(zero_copy_only=False)
    if mask.any():
        drops.update((int(p), (step, r)) for p, r in zip(alive[mask], reasons.filter(failed).to_pylist()))
