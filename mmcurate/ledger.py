"""Where every input sample stands: alive, or dropped by a step with a reason."""

from __future__ import annotations

from typing import Mapping

import pyarrow as pa

from .inputs import ShardRef
from .plan import READ_STEP
from .shard_task import Entry

__all__ = ["DECISIONS_SCHEMA", "Ledger"]

DECISIONS_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("key", pa.string()),
        ("kept", pa.bool_()),
        ("step", pa.string()),
        ("reason", pa.string()),
        ("output_shard", pa.string()),
    ]
)


class Ledger:
    """Input samples per shard in input order, each alive or ``(step, reason)``."""

    def __init__(self, shards: list[ShardRef]):
        self.shards = shards
        self.entries: dict[str, list[Entry]] = {}
        self.fate: dict[str, list[tuple[str, str] | None]] = {}
        self.position: dict[str, dict[str, int]] = {}

    def record_read(self, url: str, entries: list[Entry]) -> None:
        """Take a shard's manifest; samples that could not be read are dropped by ``read``."""
        self.entries[url] = entries
        self.fate[url] = [(READ_STEP, e.error) if e.error else None for e in entries]
        self.position[url] = {e.key: i for i, e in enumerate(entries) if not e.error}

    def drop(self, url: str, drops: Mapping[str, tuple[str, str]]) -> None:
        fate, position = self.fate[url], self.position[url]
        for key, verdict in drops.items():
            fate[position[key]] = verdict

    def alive(self, url: str) -> list[Entry]:
        return [e for e, f in zip(self.entries[url], self.fate[url]) if f is None]

    def table(self, output_of: Mapping[tuple[str, str], str]) -> pa.Table:
        """One row per input sample, in input order (``decisions.parquet``)."""
        cols: dict[str, list] = {name: [] for name in DECISIONS_SCHEMA.names}
        for ref in self.shards:
            for entry, fate in zip(self.entries[ref.url], self.fate[ref.url]):
                cols["shard"].append(ref.url)
                cols["key"].append(entry.key)
                cols["kept"].append(fate is None)
                cols["step"].append(fate[0] if fate else None)
                cols["reason"].append(fate[1] if fate else None)
                cols["output_shard"].append(output_of.get((ref.url, entry.key)) if fate is None else None)
        return pa.table(cols, schema=DECISIONS_SCHEMA)
