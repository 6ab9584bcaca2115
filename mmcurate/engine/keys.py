"""Unique output keys on the cluster: a kept sample whose output key an earlier input shard
already gave is dropped by the pseudo-step ``output``.

Each shard's summary carries the lowest and highest key it keeps; a key two shards give lies in
both their ranges, so only the shards whose ranges meet another's (a sweep over the sorted
ranges) are looked at: with sequential keys, none. Their kept output keys are hash-partitioned
across the workers with a Dask bag shuffle; each partition finds the keys that more than one shard gives, and the later copies are
recorded in their shards' state by one task per shard. The driver sees only the summaries of
the shards that lost a sample.
"""

from __future__ import annotations

import zlib
from typing import Iterable, Iterator, Mapping, Sequence

import dask
import dask.bag as db
from dask.distributed import Client

from ..io.inputs import ShardRef
from ..io.output import OUTPUT_STEP, output_key
from ..store.runstore import RunStore
from .state import ShardSummary, kept_rows, record_drops

__all__ = ["drop_repeated_keys"]

SHARDS_PER_PARTITION = 16
"""Input shards whose keys one partition of the shuffle reads (and holds) at once."""

Named = tuple[str, int, int]
"""(output key, input shard number, pos)."""


def _named(root: str, keys: str, shards: Sequence[tuple[int, ShardRef]]) -> Iterator[Named]:
    for index, ref in shards:
        table = kept_rows(RunStore(root), ref)
        for key, pos in zip(table["key"].to_pylist(), table["pos"].to_pylist()):
            yield output_key(ref, key, keys), index, pos


def _later_copies(groups: Iterable[tuple[int, list[Named]]]) -> Iterator[Named]:
    """Within a hash partition: every (key, shard, pos) whose key an earlier shard gave, as
    (key, its shard, pos) with the key replaced by the number of the shard that gave it first."""
    for _, named in groups:
        first: dict[str, int] = {}
        for name, index, _ in named:
            first[name] = min(first.get(name, index), index)
        for name, index, pos in named:
            if first[name] != index:
                yield first[name], index, pos  # type: ignore[misc]


def _record(group: tuple[int, list[tuple[int, int, int]]], root: str, shards: Sequence[ShardRef]) -> tuple[int, ShardSummary]:
    index, copies = group
    copies = sorted(copies, key=lambda c: c[2])
    reasons = [f"duplicate_key_across_shards:{shards[first].url}" for first, _, _ in copies]
    return index, record_drops(RunStore(root), shards[index], [pos for *_, pos in copies], OUTPUT_STEP, reasons)


def _overlapping(ranges: Iterable[tuple[str, str, int]]) -> list[int]:
    """The numbers of the ranges ``(lowest, highest, number)`` that meet another: the chains of
    meeting ranges longer than one, by a sweep in order of their lowest key."""
    found: list[int] = []
    chain: list[int] = []
    reach = ""
    for low, high, index in sorted(ranges):
        if chain and low > reach:
            found += chain if len(chain) > 1 else []
            chain = []
        reach = max(reach, high) if chain else high
        chain.append(index)
    found += chain if len(chain) > 1 else []
    return sorted(found)


def drop_repeated_keys(
    client: Client, root: str, shards: Sequence[ShardRef], summaries: Mapping[str, ShardSummary], keys: str
) -> dict[str, ShardSummary]:
    """Drop kept samples whose output key (under ``output.keys``) an earlier shard gave; return
    the new summaries of the shards that lost samples (by URL). Only the shards whose range of
    kept keys (in ``summaries``) meets another's are read."""
    ranges = []
    for index, ref in enumerate(shards):
        if bounds := summaries[ref.url].keys:  # output keys keep the order of a shard's keys
            ranges.append((output_key(ref, bounds[0], keys), output_key(ref, bounds[1], keys), index))
    chosen = [(index, shards[index]) for index in _overlapping(ranges)]
    if not chosen:
        return {}
    parts = -(-len(chosen) // SHARDS_PER_PARTITION)
    bag = db.from_sequence(chosen, npartitions=parts).map_partitions(lambda items: list(_named(root, keys, items)))
    copies = bag.groupby(lambda n: zlib.crc32(n[0].encode()) % parts, shuffle="tasks").map_partitions(lambda g: list(_later_copies(g)))
    every = dask.delayed(list(shards), traverse=False)  # one graph key, not a copy per task
    recorded = copies.groupby(lambda c: c[1], shuffle="tasks").map(_record, root, every)
    return {shards[index].url: summary for index, summary in client.compute(recorded).result()}
