"""Where every input sample stands, held in memory: the what-if decisions of ``browse.preview``
(a run keeps its decisions per shard on the workers instead, see :mod:`.state`)."""

from __future__ import annotations

from typing import Mapping

import pyarrow as pa

from ..io.inputs import ShardRef
from .plan import READ_STEP
from .shard_task import Entry
from .state import DECISIONS_SCHEMA

__all__ = ["DECISIONS_SCHEMA", "Ledger"]

class Ledger:
    """Input samples per shard in input order, each alive or ``(step, reason)``; a sample is
    named by its position in its shard's manifest."""

    def __init__(self, shards: list[ShardRef]):
        self.shards = shards
        self.entries: dict[str, list[Entry]] = {}
        self.fate: dict[str, list[tuple[str, str] | None]] = {}

    def record_read(self, url: str, entries: list[Entry]) -> None:
        """Take a shard's manifest; samples that could not be read are dropped by ``read``."""
        self.entries[url] = entries
        self.fate[url] = [(READ_STEP, e.error) if e.error else None for e in entries]

    def drop(self, url: str, drops: Mapping[int, tuple[str, str]]) -> None:
        """Record ``pos -> (step, reason)`` for samples of shard ``url``."""
        fate = self.fate[url]
        for pos, verdict in drops.items():
            fate[pos] = verdict

    def alive(self, url: str) -> list[int]:
        """Positions of the samples of ``url`` no step has dropped, in order."""
        return [pos for pos, f in enumerate(self.fate[url]) if f is None]

    def table(self, output_of: Mapping[tuple[str, int], str]) -> pa.Table:
        """One row per input sample, in input order (``decisions.parquet``); ``output_of`` maps
        ``(shard URL, pos)`` of a kept sample to its output shard."""
        cols: dict[str, list] = {name: [] for name in DECISIONS_SCHEMA.names}
        for ref in self.shards:
            for pos, (entry, fate) in enumerate(zip(self.entries[ref.url], self.fate[ref.url])):
                cols["shard"].append(ref.url)
                cols["key"].append(entry.key)
                cols["pos"].append(pos)
                cols["kept"].append(fate is None)
                cols["step"].append(fate[0] if fate else None)
                cols["reason"].append(fate[1] if fate else None)
                cols["output_shard"].append(output_of.get((ref.url, pos)) if fate is None else None)
        return pa.table(cols, schema=DECISIONS_SCHEMA)
