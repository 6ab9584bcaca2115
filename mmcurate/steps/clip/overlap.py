"""Prepare the next chunk while the model works on this one."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Callable, Iterator, Sequence, TypeVar

__all__ = ["prepared_chunks"]

T = TypeVar("T")
P = TypeVar("P")


def prepared_chunks(items: Sequence[T], size: int, prepare: Callable[[Sequence[T]], P], pool: Executor) -> Iterator[tuple[int, P]]:
    """Yield ``(start, prepare(items[start:start + size]))`` in order; ``pool`` (one background
    thread, kept across calls so its video decode child is too) prepares the following chunk
    while the caller uses the current one. Decoding (Pillow, nvJPEG) and tokenising release
    the GIL, so this overlaps them with model inference."""
    starts = list(range(0, len(items), size))
    if not starts:
        return
    pending = pool.submit(prepare, items[starts[0] : starts[0] + size])
    for k, start in enumerate(starts):
        ready = pending.result()
        if k + 1 < len(starts):
            nxt = starts[k + 1]
            pending = pool.submit(prepare, items[nxt : nxt + size])
        yield start, ready
