"""Re-shard the kept samples: name them uniquely, assign them to output shards, then copy their
members byte-for-byte (renamed only under ``output.keys: prefix_shard``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .inputs import ShardRef
from ..engine.ledger import Ledger
from ..engine.plan import AnnotatePlan, read_annotations
from ..recipe import OutputConfig
from ..store.runstore import RunStore
from .tarread import iter_samples
from .tarwrite import join_tar_pieces, member_bytes, write_tar_piece

__all__ = [
    "OUTPUT_STEP",
    "Kept",
    "OutputShard",
    "Segment",
    "WriteTask",
    "assemble",
    "assign_shards",
    "index_json",
    "kept_samples",
    "output_key",
    "shard_capacity",
    "unique_keys",
    "write_piece",
    "write_tasks",
]

ANNOTATIONS_EXT = "mmcurate.json"
OUTPUT_STEP = "output"
"""The pseudo-step that drops a kept sample whose output key an earlier input shard already gave."""


@dataclass(frozen=True, slots=True)
class Kept:
    """A kept sample on its way out: its input shard, position there, output key and tar bytes."""

    ref: ShardRef
    pos: int
    name: str
    nbytes: int


@dataclass(frozen=True)
class Segment:
    """The kept samples one output shard takes from one input shard: positions there (in input
    order) and their output keys."""

    ref: ShardRef
    positions: tuple[int, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class OutputShard:
    """One output tar: its name and its segments, one per input shard it takes samples from."""

    name: str
    segments: tuple[Segment, ...]

    @property
    def nsamples(self) -> int:
        return sum(len(s.positions) for s in self.segments)


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


def kept_samples(ledger: Ledger, shards: Iterable[ShardRef], keys: str) -> Iterator[Kept]:
    """The samples ``ledger`` keeps, in input order, with their output keys under ``output.keys``."""
    for ref in shards:
        entries = ledger.entries[ref.url]
        for pos in ledger.alive(ref.url):
            entry = entries[pos]
            yield Kept(ref, pos, output_key(ref, entry.key, keys), sample_tar_bytes(entry.sizes))


def unique_keys(kept: Iterable[Kept]) -> tuple[list[Kept], dict[str, dict[int, tuple[str, str]]]]:
    """The samples to write, and the drops (per shard URL, pos -> (step, reason)) of those whose
    output key an earlier shard's sample already took: output keys are unique."""
    owner: dict[str, str] = {}  # output key -> URL of the input shard that gave it first
    written: list[Kept] = []
    drops: dict[str, dict[int, tuple[str, str]]] = {}
    for sample in kept:
        first = owner.setdefault(sample.name, sample.ref.url)
        if first == sample.ref.url:
            written.append(sample)
        else:
            drops.setdefault(sample.ref.url, {})[sample.pos] = (OUTPUT_STEP, f"duplicate_key_across_shards:{first}")
    return written, drops


def shard_capacity(total_kept: int, config: OutputConfig) -> int:
    """Samples per output shard: ``ceil(total_kept / shards)`` when ``output.shards`` is set,
    else ``samples_per_shard``."""
    if config.shards is None:
        return config.samples_per_shard
    return max(1, -(-total_kept // config.shards))


def assign_shards(kept: list[Kept], config: OutputConfig) -> list[OutputShard]:
    """Pack the kept samples in order into shards of at most :func:`shard_capacity` samples and
    ``max_shard_bytes`` bytes (a lone larger sample gets its own)."""
    capacity = shard_capacity(len(kept), config)
    shards: list[OutputShard] = []
    segments: list[tuple[ShardRef, list[int], list[str]]] = []
    count = size = 0

    def close() -> None:
        nonlocal segments, count, size
        if segments:
            name = f"{config.prefix}-{len(shards):06d}.tar"
            shards.append(OutputShard(name, tuple(Segment(ref, tuple(pos), tuple(names)) for ref, pos, names in segments)))
        segments, count, size = [], 0, 0

    for sample in kept:
        if count and (count >= capacity or size + sample.nbytes > config.max_shard_bytes):
            close()
        if not segments or segments[-1][0] != sample.ref:
            segments.append((sample.ref, [], []))
        segments[-1][1].append(sample.pos)
        segments[-1][2].append(sample.name)
        count += 1
        size += sample.nbytes
    close()
    return shards


def sample_tar_bytes(sizes: tuple[int, ...]) -> int:
    return sum(member_bytes(s) for s in sizes)


def write_tasks(layout: list[OutputShard], root: str, plans: tuple[AnnotatePlan, ...], config: OutputConfig) -> list[WriteTask]:
    return [WriteTask(s, i, root, plans, config.annotations_member, config.keys) for s in layout for i in range(len(s.segments))]


def _members(task: WriteTask) -> Iterator[tuple[str, bytes]]:
    store = RunStore(task.root)
    segment = task.shard.segments[task.segment]
    ref = segment.ref
    wanted = dict(zip(segment.positions, segment.names))
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


def assemble(store: RunStore, shard: OutputShard) -> dict[str, Any]:
    """Join a shard's pieces into ``shards/NAME``; return its ``wids`` shard-list entry."""
    pieces = [store.piece_path(shard.name, i) for i in range(len(shard.segments))]
    size = join_tar_pieces(store.shards_dir / shard.name, pieces)
    for piece in pieces:
        piece.unlink()
    return {"url": shard.name, "nsamples": shard.nsamples, "filesize": size}


def index_json(name: str, entries: list[dict[str, Any]]) -> bytes:
    """A ``wids-shard-index-v1`` document listing the output shards (URLs relative to it)."""
    doc = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name, "shardlist": entries}
    return (json.dumps(doc, indent=2) + "\n").encode()
