"""Re-shard the kept samples: assign them to output shards, then copy their members byte-for-byte."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

from .inputs import ShardRef
from .plan import AnnotatePlan, read_annotations
from .recipe import OutputConfig
from .store import RunStore
from .tarread import iter_samples
from .tarwrite import join_tar_pieces, member_bytes, write_tar_piece

__all__ = ["OutputShard", "WriteTask", "assemble", "assign_shards", "index_json", "write_piece", "write_tasks"]

ANNOTATIONS_EXT = "mmcurate.json"


@dataclass(frozen=True)
class OutputShard:
    """One output tar: its name and, per input shard, the kept keys it takes (in input order)."""

    name: str
    segments: tuple[tuple[ShardRef, tuple[str, ...]], ...]

    @property
    def nsamples(self) -> int:
        return sum(len(keys) for _, keys in self.segments)


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


def assign_shards(kept: list[tuple[ShardRef, str, int]], config: OutputConfig) -> list[OutputShard]:
    """Pack ``(input shard, key, tar bytes)`` in order into shards of at most
    ``samples_per_shard`` samples and ``max_shard_bytes`` bytes (a lone larger sample gets its own)."""
    shards: list[OutputShard] = []
    segments: list[tuple[ShardRef, list[str]]] = []
    count = size = 0

    def close() -> None:
        nonlocal segments, count, size
        if segments:
            name = f"{config.prefix}-{len(shards):06d}.tar"
            shards.append(OutputShard(name, tuple((ref, tuple(keys)) for ref, keys in segments)))
        segments, count, size = [], 0, 0

    for ref, key, nbytes in kept:
        if count and (count >= config.samples_per_shard or size + nbytes > config.max_shard_bytes):
            close()
        if not segments or segments[-1][0] != ref:
            segments.append((ref, []))
        segments[-1][1].append(key)
        count += 1
        size += nbytes
    close()
    return shards


def sample_tar_bytes(sizes: tuple[int, ...]) -> int:
    return sum(member_bytes(s) for s in sizes)


def write_tasks(layout: list[OutputShard], root: str, plans: tuple[AnnotatePlan, ...], annotations_member: bool) -> list[WriteTask]:
    return [WriteTask(s, i, root, plans, annotations_member) for s in layout for i in range(len(s.segments))]


def _members(task: WriteTask) -> Iterator[tuple[str, bytes]]:
    store = RunStore(task.root)
    ref, keys = task.shard.segments[task.segment]
    wanted = set(keys)
    notes = read_annotations(store, task.plans, ref) if task.annotations_member else {}
    done: set[str] = set()
    for sample in iter_samples(ref.url):  # kept keys are in tar order: stream, never buffer
        key = sample.key
        if key not in wanted or sample.error is not None or key in done:
            continue
        done.add(key)
        for m in sample.members:
            if not (task.annotations_member and m.ext == ANNOTATIONS_EXT):  # replaced by ours
                yield m.name, m.data
        if task.annotations_member:
            note = {"source": {"shard": ref.url, "key": key}, "annotations": notes[key]}
            yield f"{key}.{ANNOTATIONS_EXT}", json.dumps(note, sort_keys=True).encode()
        if len(done) == len(wanted):
            break
    if len(done) != len(wanted):
        missing = sorted(wanted - done)[:5]
        raise RuntimeError(f"{ref.url}: kept samples no longer in the shard (changed during the run?): {missing}")


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
