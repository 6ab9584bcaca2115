"""Re-shard the kept samples: name them uniquely, assign them to output shards, then copy their
members byte-for-byte (renamed only under ``output.keys: prefix_shard``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .inputs import ShardRef
from ..engine.plan import AnnotatePlan, read_annotations
from ..engine.state import kept_rows
from ..recipe import OutputConfig
from ..store.runstore import RunStore
from .tarread import iter_samples
from .tarwrite import join_tar_pieces, write_tar_piece

__all__ = [
    "OUTPUT_STEP",
    "OutputShard",
    "Segment",
    "WriteTask",
    "assemble",
    "index_json",
    "output_key",
    "plan_layout",
    "shard_capacity",
    "write_piece",
    "write_tasks",
]

ANNOTATIONS_EXT = "mmcurate.json"
OUTPUT_STEP = "output"
"""The pseudo-step that drops a kept sample whose output key an earlier input shard already gave."""


@dataclass(frozen=True)
class Segment:
    """The kept samples one output shard takes from one input shard: those numbered
    ``start``..``stop - 1`` among its kept samples, in input order."""

    ref: ShardRef
    start: int
    stop: int


@dataclass(frozen=True)
class OutputShard:
    """One output tar: its name and its segments, one per input shard it takes samples from."""

    name: str
    segments: tuple[Segment, ...]

    @property
    def nsamples(self) -> int:
        return sum(s.stop - s.start for s in self.segments)


@dataclass(frozen=True)
class WriteTask:
    """One piece of an output shard: the kept samples it takes from one input shard.

    Pieces are written in parallel and joined in order (tar members concatenate), so even a
    single large output shard uses every worker.
    """

    shard: OutputShard
    segment: int
    root: str
    plans: tuple[AnnotatePlan, ...]
    annotations_member: bool
    keys: str
    """``output.keys``: how output keys derive from input keys (checked against each sample read)."""


def output_key(ref: ShardRef, key: str, keys: str) -> str:
    """The output key of input sample ``key`` of ``ref`` under ``output.keys``."""
    return f"{ref.name}/{key}" if keys == "prefix_shard" else key


def shard_capacity(total_kept: int, config: OutputConfig) -> int:
    """Samples per output shard: ``ceil(total_kept / shards)`` when ``output.shards`` is set,
    else ``samples_per_shard``."""
    if config.shards is None:
        return config.samples_per_shard
    return max(1, -(-total_kept // config.shards))


def plan_layout(root: str, shards: Sequence[ShardRef], config: OutputConfig, total_kept: int) -> list[OutputShard]:
    """Pack the ``total_kept`` kept samples in input order into shards of at most :func:`shard_capacity` samples
    and ``max_shard_bytes`` bytes (a lone larger sample gets its own).

    Runs on a worker: a scan over the input shards that holds one shard's kept sizes at a time
    (read from its state) and cuts them with a prefix sum."""
    store = RunStore(root)
    limit, cap = shard_capacity(total_kept, config), config.max_shard_bytes
    layout: list[OutputShard] = []
    segments: list[Segment] = []
    count = size = 0

    def close() -> None:
        nonlocal segments, count, size
        if segments:
            layout.append(OutputShard(f"{config.prefix}-{len(layout):06d}.tar", tuple(segments)))
        segments, count, size = [], 0, 0

    for ref in shards:
        sizes = kept_rows(store, ref)["nbytes"].to_numpy()
        i = 0
        while i < len(sizes):
            total = np.cumsum(sizes[i : i + max(limit - count, 1)])  # what the open shard could still take
            take = min(max(limit - count, 0), int(np.searchsorted(total, cap - size, side="right")))
            if take == 0 and count == 0:
                take = 1  # a lone sample larger than the cap
            if take:
                segments.append(Segment(ref, i, i + take))
                count, size, i = count + take, size + int(total[take - 1]), i + take
            if i < len(sizes):  # the next sample does not fit
                close()
    close()
    return layout


def write_tasks(layout: list[OutputShard], root: str, plans: tuple[AnnotatePlan, ...], config: OutputConfig) -> list[WriteTask]:
    return [WriteTask(s, i, root, plans, config.annotations_member, config.keys) for s in layout for i in range(len(s.segments))]


def _members(task: WriteTask) -> Iterator[tuple[str, bytes]]:
    store = RunStore(task.root)
    segment = task.shard.segments[task.segment]
    ref = segment.ref
    kept = kept_rows(store, ref).slice(segment.start, segment.stop - segment.start)
    wanted = {pos: output_key(ref, key, task.keys) for pos, key in zip(kept["pos"].to_pylist(), kept["key"].to_pylist())}
    notes = read_annotations(store, task.plans, ref) if task.annotations_member else {}
    done = 0
    for pos, sample in enumerate(iter_samples(ref.url)):  # kept samples are in tar order: stream, never buffer
        name = wanted.get(pos)
        if name is None:
            continue
        if sample.error is not None or output_key(ref, sample.key, task.keys) != name:
            break
        done += 1
        for m in sample.members:
            if not (task.annotations_member and m.ext == ANNOTATIONS_EXT):  # replaced by ours
                yield name + m.name[len(sample.key) :], m.data
        if task.annotations_member:
            note = {"source": {"shard": ref.url, "key": sample.key}, "annotations": notes[pos]}
            yield f"{name}.{ANNOTATIONS_EXT}", json.dumps(note, sort_keys=True).encode()
        if done == len(wanted):
            return
    missing = [f"{pos}:{name}" for pos, name in wanted.items()][done : done + 5]
    raise RuntimeError(f"{ref.url}: kept samples (pos:key) no longer in the shard (changed during the run?): {missing}")


def write_piece(task: WriteTask) -> str:
    """Write one piece (tar members without the end-of-archive marker); return its path."""
    path = RunStore(task.root).piece_path(task.shard.name, task.segment)
    write_tar_piece(path, _members(task))
    return str(path)


def assemble(root: str, shard: OutputShard) -> dict[str, Any]:
    """Join a shard's pieces into ``shards/NAME``; return its ``wids`` shard-list entry."""
    store = RunStore(root)
    pieces = [store.piece_path(shard.name, i) for i in range(len(shard.segments))]
    size = join_tar_pieces(store.shards_dir / shard.name, pieces)
    for piece in pieces:
        piece.unlink()
    return {"url": shard.name, "nsamples": shard.nsamples, "filesize": size}


def index_json(name: str, entries: list[dict[str, Any]]) -> bytes:
    """A ``wids-shard-index-v1`` document listing the output shards (URLs relative to it)."""
    doc = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name, "shardlist": entries}
    return (json.dumps(doc, indent=2) + "\n").encode()
