"""Dask engine: start a LocalCluster or join a scheduler, and map tasks with a progress bar."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Callable, Iterator, Sequence

from dask.distributed import Client, LocalCluster, as_completed
from tqdm import tqdm

__all__ = ["TaskFailed", "connect", "map_tasks"]


class TaskFailed(RuntimeError):
    """A task failed for a reason other than bad sample data (which is recorded, not raised)."""


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    client: Client | None = None,
    quiet: bool = False,
) -> Iterator[Client]:
    """Yield a client: the one given, one joined to ``scheduler``, or a new LocalCluster's."""
    if client is not None:
        yield client
        return
    if scheduler:
        with Client(scheduler) as joined:
            _say(f"joined Dask scheduler {scheduler} ({len(joined.scheduler_info()['workers'])} workers)", quiet)
            yield joined
        return
    logging.getLogger("distributed").setLevel(logging.ERROR)
    n = workers or default_workers()
    with LocalCluster(
        n_workers=n,
        threads_per_worker=threads_per_worker,
        processes=True,
        dashboard_address=":8787",
        silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as local:
        _say(f"local Dask cluster: {n} workers x {threads_per_worker} threads; dashboard {local.dashboard_link}", quiet)
        yield local


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def map_tasks(
    client: Client,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    label: str,
    describe: Callable[[Any], str],
    quiet: bool = False,
) -> list[Any]:
    """Run ``fn`` on every item (retried if a worker dies), in order, showing progress."""
    futures = client.map(fn, items, pure=False, retries=2)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    with tqdm(total=len(items), desc=label, unit="shard", disable=quiet, file=sys.stderr, leave=True) as bar:
        for future in as_completed(futures):
            i = index[future.key]
            try:
                results[i] = future.result()
            except Exception as exc:
                for other in futures:
                    other.cancel()
                raise TaskFailed(f"{label} failed on {describe(items[i])}: {type(exc).__name__}: {exc}") from exc
            bar.update(1)
    return results
