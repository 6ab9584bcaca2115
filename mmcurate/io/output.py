"""Re-shard the kept samples: name them uniquely, assign them to output shards, then copy their
members byte-for-byte (renamed only under ``output.keys: prefix_shard``).

In input order (``output.order: input``) an output shard is a run of *segments*, contiguous
kept samples of one input shard each, written as pieces in parallel and joined.

Any other order (``shuffle``, ``COLUMN asc|desc``) is computed by one worker task over every
kept sample's (input shard, pos, size, sort value), about 50 bytes each plus the key, with
Arrow; it writes ``OUT/order/NAME.parquet`` per output shard (its samples in order) and
``OUT/order/input-ID.parquet`` per input shard (each kept sample's output shard, for the
decisions). One task per output shard then streams each input shard it takes from once,
appending the samples it wants to a scratch piece, and copies them out in order: memory stays
bounded by one output shard's sample count, but a shuffle reads each input shard once per
output shard that takes from it (up to every one: inputs x outputs reads). For a huge set,
shuffle within windows of input shards (several runs) or read inputs from fast storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .atomic import atomic_file
from .location import Location, ObjectPath, read_table
from .inputs import ShardRef
from ..engine.gather import read_columns
from ..engine.plan import AnnotatePlan, digest, read_annotations
from ..engine.shard_task import read_manifest_at
from ..engine.state import kept_rows
from ..recipe import OutputConfig
from ..store.runstore import RunStore, atomic_write_table
from .tarread import Sample, iter_samples, samples_at
from .tarwrite import join_tar_pieces, write_tar_piece, write_tar_samples

__all__ = [
    "OUTPUT_STEP",
    "OrderedShard",
    "OutputShard",
    "Segment",
    "WriteTask",
    "assemble",
    "content_fingerprint",
    "index_json",
    "output_key",
    "plan_layout",
    "remove_order_files",
    "shard_capacity",
    "shard_outputs",
    "unchanged",
    "write_piece",
    "write_tasks",
    "written_record",
]

ANNOTATIONS_EXT = "mmcurate.json"
ORDER_DIR = "order"
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
    content: str = ""
    """A fingerprint of the tar's bytes (:func:`content_fingerprint`): equal only when it would be
    written byte for byte as before, so a rerun keeps a shard it already wrote (:func:`unchanged`)."""

    @property
    def nsamples(self) -> int:
        return sum(s.stop - s.start for s in self.segments)

    @property
    def pieces(self) -> int:
        """Pieces joined into the shard: one per segment."""
        return len(self.segments)


@dataclass(frozen=True)
class OrderedShard:
    """One output tar under an ``output.order`` other than ``input``: its samples, in order, are
    listed in its order file (:func:`order_path`); one task writes its single piece."""

    name: str
    nsamples: int
    segments: tuple[Segment, ...] = ()
    pieces: int = 1
    content: str = ""
    """As :attr:`OutputShard.content`."""


Layout = list[Union[OutputShard, OrderedShard]]


@dataclass(frozen=True)
class WriteTask:
    """One piece of an output shard: the kept samples it takes from one input shard.

    Pieces are written in parallel and joined in order (tar members concatenate), so even a
    single large output shard uses every worker.
    """

    shard: OutputShard | OrderedShard
    segment: int
    root: str
    plans: tuple[AnnotatePlan, ...]
    annotations_member: bool
    keys: str
    """``output.keys``: how output keys derive from input keys (checked against each sample read)."""

    @property
    def label(self) -> str:
        if isinstance(self.shard, OrderedShard):
            return self.shard.name
        return f"{self.shard.name} from {self.shard.segments[self.segment].ref.url}"


def output_key(ref: ShardRef, key: str, keys: str) -> str:
    """The output key of input sample ``key`` of ``ref`` under ``output.keys``."""
    return f"{ref.name}/{key}" if keys == "prefix_shard" else key


def shard_capacity(total_kept: int, config: OutputConfig) -> int:
    """Samples per output shard: ``ceil(total_kept / shards)`` when ``output.shards`` is set,
    else ``samples_per_shard``."""
    if config.shards is None:
        return config.samples_per_shard
    return max(1, -(-total_kept // config.shards))


class _Packer:
    """Cuts a stream of sample sizes into output shards of at most ``limit`` samples and ``cap``
    bytes (a lone larger sample gets its own), numbered from 0."""

    def __init__(self, limit: int, cap: int):
        self.limit, self.cap = limit, cap
        self.shard = self.count = self.size = 0

    def runs(self, sizes: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """``(output shard, start, stop)``: the run of ``sizes`` (the stream's next samples) each shard takes."""
        i = 0
        while i < len(sizes):
            total = np.cumsum(sizes[i : i + max(self.limit - self.count, 1)])  # what the open shard could still take
            take = min(max(self.limit - self.count, 0), int(np.searchsorted(total, self.cap - self.size, side="right")))
            if take == 0 and self.count == 0:
                take = 1  # a lone sample larger than the cap
            if take:
                yield self.shard, i, i + take
                self.count, self.size, i = self.count + take, self.size + int(total[take - 1]), i + take
            if i < len(sizes):  # the next sample does not fit
                self.shard, self.count, self.size = self.shard + 1, 0, 0


def _shard_name(config: OutputConfig, number: int) -> str:
    return f"{config.prefix}-{number:06d}.tar"


def plan_layout(root: str, shards: Sequence[ShardRef], config: OutputConfig, total_kept: int, plans: Sequence[AnnotatePlan] = ()) -> Layout:
    """Pack the ``total_kept`` kept samples in ``output.order`` into shards of at most
    :func:`shard_capacity` samples and ``max_shard_bytes`` bytes (a lone larger sample gets its own).

    Runs on a worker. In input order: a scan over the input shards that holds one shard's kept
    sizes at a time (read from its state) and cuts them with a prefix sum. In another order:
    see :func:`_ordered_layout` (``plans``: the annotate steps, for ``COLUMN asc|desc``)."""
    store = RunStore(root)
    packer = _Packer(shard_capacity(total_kept, config), config.max_shard_bytes)
    if config.order != "input":
        return _ordered_layout(store, shards, config, packer, plans)
    segments: dict[int, list[Segment]] = {}
    taken: dict[int, list[tuple[str, str, str]]] = {}
    for ref in shards:
        kept = kept_rows(store, ref)
        pos = kept["pos"].to_numpy()
        for number, start, stop in packer.runs(kept["nbytes"].to_numpy()):
            segments.setdefault(number, []).append(Segment(ref, start, stop))
            taken.setdefault(number, []).append((ref.url, ref.identity, _hashed(pos[start:stop])))
    return [OutputShard(_shard_name(config, n), tuple(segs), content_fingerprint(config, plans, taken[n])) for n, segs in sorted(segments.items())]


WRITER_VERSION = "1"
"""Version of how output tars are written (member headers, annotations member): part of
:func:`content_fingerprint`, so a change to it rewrites every output shard."""


def _hashed(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


def content_fingerprint(config: OutputConfig, plans: Sequence[AnnotatePlan], taken: Sequence[tuple[str, str, str]]) -> str:
    """What an output tar's bytes follow from: the samples it takes, as (input URL, input identity,
    hash of their positions and order) per input run, how their keys are renamed, and (with
    ``annotations_member``) the annotate steps whose rows each sample's note holds."""
    notes = [p.fingerprint for p in plans] if config.annotations_member else None
    return digest({"writer": WRITER_VERSION, "keys": config.keys, "notes": notes, "taken": [list(t) for t in taken]}, 32)


def order_path(store: RunStore, name: str) -> Location:
    """``OUT/order/NAME.parquet``: an ordered output shard's samples (url, identity, pos, key), in order."""
    return store.root / ORDER_DIR / f"{name}.parquet"


def _assignment_path(store: RunStore, ref: ShardRef) -> Location:
    """``OUT/order/input-ID.parquet``: the output shard of each kept sample of ``ref``, in input order."""
    return store.root / ORDER_DIR / f"input-{digest([ref.url, ref.identity])}.parquet"


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of each uint64 (a bijection that scatters neighbouring values)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _sort_values(store: RunStore, ref: ShardRef, pos: np.ndarray, config: OutputConfig, plans: Sequence[AnnotatePlan]) -> pa.Array:
    """Each kept sample's sort value: a hash of (seed, shard URL, pos) for a shuffle, else its stored column."""
    if config.sort is None:
        base = int.from_bytes(hashlib.sha256(f"{config.seed}\0{ref.url}".encode()).digest()[:8], "little")
        return pa.array(_mix(np.uint64(base) ^ pos.astype(np.uint64)), pa.uint64())
    column = config.sort[0]
    source = next(p for p in reversed(plans) if column in p.columns)
    _, columns = read_columns([(str(store.part_path(source.id, source.part_name(ref))), [column])], pos, ref.url)
    return columns[column].cast(source.columns[column])


def _ordered_layout(store: RunStore, shards: Sequence[ShardRef], config: OutputConfig, packer: _Packer,
                    plans: Sequence[AnnotatePlan]) -> Layout:
    """Every kept sample sorted by ``output.order`` (ties in input order), cut into shards; the
    order files written (:func:`order_path`, :func:`_assignment_path`)."""
    tables = []
    for index, ref in enumerate(shards):
        kept = kept_rows(store, ref)
        pos = kept["pos"].to_numpy()
        tables.append(pa.table({
            "input": pa.array(np.full(len(pos), index, np.int32)),
            "pos": kept["pos"], "key": kept["key"], "nbytes": kept["nbytes"],
            "value": _sort_values(store, ref, pos, config, plans),
        }))
    if not tables:
        return []
    table = pa.concat_tables(tables)
    direction = "descending" if config.sort and config.sort[1] else "ascending"
    order = pc.sort_indices(table, [("value", direction), ("input", "ascending"), ("pos", "ascending")], null_placement="at_end")
    ordered = table.take(order)
    number = np.empty(ordered.num_rows, np.int32)
    runs = list(packer.runs(ordered["nbytes"].to_numpy()))
    for n, start, stop in runs:
        number[start:stop] = n
    urls = pa.array([ref.url for ref in shards], pa.string())
    identities = pa.array([ref.identity for ref in shards], pa.string())
    layout: Layout = []
    for n, start, stop in runs:
        rows = ordered.slice(start, stop - start)
        inputs = rows["input"].combine_chunks()
        atomic_write_table(order_path(store, _shard_name(config, n)), pa.table({
            "url": urls.take(inputs), "identity": identities.take(inputs), "pos": rows["pos"], "key": rows["key"],
        }))
        used = np.unique(inputs.to_numpy()).tolist()
        taken = [(shards[i].url, shards[i].identity, "") for i in used] + [("", "", _hashed(inputs.to_numpy(), rows["pos"].to_numpy()))]
        layout.append(OrderedShard(_shard_name(config, n), stop - start, content=content_fingerprint(config, plans, taken)))
    assigned = np.empty(ordered.num_rows, np.int32)
    assigned[order.to_numpy()] = number  # back in input order
    start = 0
    for ref, part in zip(shards, tables):
        names = [layout[i].name for i in assigned[start : start + part.num_rows].tolist()]
        atomic_write_table(_assignment_path(store, ref), pa.table({"output": pa.array(names, pa.string())}))
        start += part.num_rows
    return layout


def shard_outputs(root: str, ref: ShardRef) -> list[tuple[str, int, int]]:
    """Under an ``output.order`` other than ``input``: ``(output shard, start, stop)`` ranges of
    ``ref``'s kept samples (numbered in input order), as :func:`mmcurate.engine.state.finish` takes them."""
    names = read_table(_assignment_path(RunStore(root), ref))["output"].to_numpy(zero_copy_only=False)
    cuts = [0, *(np.flatnonzero(names[1:] != names[:-1]) + 1).tolist(), len(names)]
    return [(names[a], a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def remove_order_files(store: RunStore, config: OutputConfig, layout: Layout, shards: Iterable[ShardRef]) -> None:
    """Delete the order files :func:`plan_layout` wrote for ``layout`` and ``shards``, then their folder if empty."""
    if config.order == "input":
        return
    for path in [order_path(store, s.name) for s in layout] + [_assignment_path(store, ref) for ref in shards]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (store.root / ORDER_DIR).rmdir()


def write_tasks(layout: Layout, root: str, plans: tuple[AnnotatePlan, ...], config: OutputConfig) -> list[WriteTask]:
    return [WriteTask(s, i, root, plans, config.annotations_member, config.keys) for s in layout for i in range(s.pieces)]


def _samples(ref: ShardRef, wanted: dict[int, str], task: WriteTask, notes: dict[int, dict[str, Any]]) -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """``(pos, members renamed)`` of the samples of ``ref`` at the positions of ``wanted``
    (pos -> output key), streamed in tar order, each with its annotations member if asked."""
    done = 0
    for pos, sample in _wanted_samples(RunStore(task.root), ref, sorted(wanted)):
        name = wanted.get(pos)
        if name is None:
            continue
        if sample.error is not None or output_key(ref, sample.key, task.keys) != name:
            break
        done += 1
        members = [(name + m.name[len(sample.key) :], m.data) for m in sample.members if not (task.annotations_member and m.ext == ANNOTATIONS_EXT)]
        if task.annotations_member:  # replaces theirs
            note = {"source": {"shard": ref.url, "key": sample.key}, "annotations": notes[pos]}
            members.append((f"{name}.{ANNOTATIONS_EXT}", json.dumps(note, sort_keys=True).encode()))
        yield pos, members
        if done == len(wanted):
            return
    missing = [f"{pos}:{name}" for pos, name in wanted.items()][done : done + 5]
    raise RuntimeError(f"{ref.url}: kept samples (pos:key) no longer in the shard (changed during the run?): {missing}")


def _wanted_samples(store: RunStore, ref: ShardRef, positions: list[int]) -> Iterator[tuple[int, Sample]]:
    """``(pos, sample)`` in tar order, among them the samples at ``positions``: on local disk each
    read alone at the byte range its manifest entry records, else (or without offsets) every
    sample of the streamed shard (met in tar order: stream, never buffer)."""
    # each wanted sample's entry, and the next one's (where the sample ends), made for those only
    entries = read_manifest_at(store, ref, [q for p in positions for q in (p, p + 1)]) if "://" not in ref.url else {}
    if not positions or any(p not in entries or entries[p].offset is None for p in positions):
        yield from enumerate(iter_samples(ref.url))
        return
    spans = [(entries[p].offset, entries[p + 1].offset if p + 1 in entries else None) for p in positions]
    expected = [(entries[p].key, entries[p].members, entries[p].sizes) for p in positions]
    yield from zip(positions, samples_at(ref.url, spans, expected=expected))  # type: ignore[arg-type]


def _members(task: WriteTask) -> Iterator[tuple[str, bytes]]:
    store = RunStore(task.root)
    segment = task.shard.segments[task.segment]
    ref = segment.ref
    kept = kept_rows(store, ref).slice(segment.start, segment.stop - segment.start)
    wanted = {pos: output_key(ref, key, task.keys) for pos, key in zip(kept["pos"].to_pylist(), kept["key"].to_pylist())}
    notes = read_annotations(store, task.plans, ref) if task.annotations_member else {}
    for _, members in _samples(ref, wanted, task, notes):
        yield from members


def _write_ordered(task: WriteTask, path: Location) -> None:
    """Write an ordered shard's piece: each input shard it takes from is streamed once, its
    samples appended to a scratch piece, then copied out in the shard's order."""
    store = RunStore(task.root)
    order = read_table(order_path(store, task.shard.name))
    url, identity, pos, key = (order[c].to_pylist() for c in ("url", "identity", "pos", "key"))
    slots: dict[tuple[str, str], dict[int, int]] = {}
    for slot, (u, i, p) in enumerate(zip(url, identity, pos)):
        slots.setdefault((u, i), {})[p] = slot
    placed: list[int] = []

    def samples() -> Iterator[list[tuple[str, bytes]]]:
        for (u, i), at in slots.items():
            ref = ShardRef(u, i)
            notes = read_annotations(store, task.plans, ref) if task.annotations_member else {}
            for p, members in _samples(ref, {p: output_key(ref, key[s], task.keys) for p, s in sorted(at.items())}, task, notes):
                placed.append(at[p])
                yield members

    scratch = store.piece_path(task.shard.name, 1)
    sizes = write_tar_samples(scratch, samples())
    start = np.zeros(len(order), np.int64)
    length = np.zeros(len(order), np.int64)
    start[placed] = np.cumsum([0, *sizes[:-1]])
    length[placed] = sizes
    with scratch.open("rb") as src, atomic_file(path, durable=False) as out:
        for a, n in zip(start.tolist(), length.tolist()):
            src.seek(a)
            out.write(src.read(n))
    scratch.unlink()


def write_piece(task: WriteTask) -> str:
    """Write one piece (tar members without the end-of-archive marker); return its path."""
    path = RunStore(task.root).piece_path(task.shard.name, task.segment)
    if isinstance(task.shard, OrderedShard):
        _write_ordered(task, path)
    else:
        write_tar_piece(path, _members(task))
    return str(path)


def assemble(root: str, shard: OutputShard | OrderedShard) -> dict[str, Any]:
    """Join a shard's pieces into ``shards/NAME`` (deleting them); return its ``wids`` shard-list entry."""
    store = RunStore(root)
    size = join_tar_pieces(store.shards_dir / shard.name, [store.piece_path(shard.name, i) for i in range(shard.pieces)])
    return {"url": shard.name, "nsamples": shard.nsamples, "filesize": size}


def unchanged(store: RunStore, layout: Layout, written: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The output shards of ``layout`` that are already in place, byte for byte: the run's record
    (``written``, run.json) says mmcurate wrote the file with the same :attr:`~OutputShard.content`,
    and the file is that one still (same size, modification time and inode). Name -> its index
    entry. Only on local disk."""
    if isinstance(store.root, ObjectPath):
        return {}
    found = {}
    for shard in layout:
        record = written.get(shard.name)
        if record and shard.content and record.get("content") == shard.content and record.get("file") == _file_stamp(store.shards_dir / shard.name):
            found[shard.name] = {"url": shard.name, "nsamples": shard.nsamples, "filesize": record["file"][0]}
    return found


def written_record(store: RunStore, layout: Layout) -> dict[str, dict[str, Any]]:
    """What run.json keeps about each output shard of ``layout`` just written (or kept), for
    :func:`unchanged`: its content fingerprint and its file's size, modification time and inode."""
    if isinstance(store.root, ObjectPath):
        return {}
    return {s.name: {"content": s.content, "file": _file_stamp(store.shards_dir / s.name)} for s in layout}


def _file_stamp(path: Location) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def index_json(name: str, entries: list[dict[str, Any]]) -> bytes:
    """A ``wids-shard-index-v1`` document listing the output shards (URLs relative to it)."""
    doc = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name, "shardlist": entries}
    return (json.dumps(doc, indent=2) + "\n").encode()
